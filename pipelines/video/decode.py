"""PyAV decoding of a video's frames to RGB (:func:`decode_frames`) and the per-frame conversions.

Every reader opens files the same way (``metadata_errors="ignore"``: real UCF101 files carry broken
metadata); errors become :class:`DecodeError` naming the file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import av
import cv2
import numpy as np


class DecodeError(RuntimeError):
    """A video that cannot be decoded (corrupt, truncated, unsupported)."""


def scaled_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """(height, width) shrunk so that the shorter side is ``short_side``; a source whose shorter
    side is not longer than that keeps its size."""
    if short_side is None or min(height, width) <= short_side:
        return height, width
    scale = short_side / min(height, width)
    if height <= width:
        return short_side, max(1, int(round(width * scale)))
    return max(1, int(round(height * scale))), short_side


def is_i420(frame: av.VideoFrame) -> bool:
    """Limited-range planar 4:2:0 with even sides: what OpenCV's I420 conversion expects."""
    return frame.format.name == "yuv420p" and frame.color_range != 2 and frame.width % 2 == 0 and frame.height % 2 == 0


def frame_to_rgb(frame: av.VideoFrame, size: tuple[int, int] | None = None) -> np.ndarray:
    """One decoded frame as (H, W, 3) uint8 RGB, optionally resized to ``size`` (height, width).

    Limited-range 4:2:0 (the usual case) is converted by OpenCV, about twice as fast as
    swscale's RGB path and within 3 grey levels of it; other formats go through swscale.
    """
    if is_i420(frame):
        rgb = cv2.cvtColor(frame_to_i420(frame), cv2.COLOR_YUV2RGB_I420)
    else:
        rgb = frame.to_ndarray(format="rgb24")
    return resize(rgb, size)


def frame_to_i420(frame: av.VideoFrame) -> np.ndarray:
    """A yuv420p frame as one (3H/2, W) uint8 I420 array (Y rows, then U, then V), copied
    straight from the decoder's planes (cheaper than ``to_ndarray``)."""
    height, width = frame.height, frame.width
    out = np.empty((height * 3 // 2, width), np.uint8)
    chroma = out[height:].reshape(2, height // 2, width // 2)
    for plane, target in zip(frame.planes, (out[:height], chroma[0], chroma[1]), strict=True):
        rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
        target[...] = rows[:, : plane.width]
    return out


def resize(image: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """``image`` resized to ``size`` (height, width): area averaging to shrink, bilinear to enlarge."""
    if size is None or size == image.shape[:2]:
        return image
    shrink = size[0] < image.shape[0]
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def open_video_stream(container: av.container.InputContainer, path: str | os.PathLike[str], codec_threads: int):  # type: ignore[no-untyped-def]
    if not container.streams.video:
        raise DecodeError(f"{path}: no video stream")
    stream = container.streams.video[0]
    if codec_threads == 1:
        # Inside a pool that already keeps every core busy, frame threads only add overhead
        # (measured: 9.2 vs 12.4 ms CPU per 160x120 VP9 demo video).
        stream.codec_context.thread_count = 1
    else:
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = codec_threads
    return stream


def decode_frames(
    path: str | os.PathLike[str],
    indices: Sequence[int] | None = None,
    short_side: int | None = None,
    *,
    codec_threads: int = 0,
) -> np.ndarray:
    """Decode (T, H, W, 3) uint8 RGB frames of ``path`` with PyAV.

    ``indices``: only those frames, in that order (decoding stops after the largest); only
    the wanted frames are converted to RGB. ``short_side``: shrink so the shorter side is
    ``short_side`` (never enlarged).
    ``codec_threads``: decoder threads (0: as many as FFmpeg likes; 1 inside a worker pool).
    Frames past the end of a video shorter than expected are taken as the last decoded frame
    only when at most 10% of the video is missing; otherwise, or on any decoder error,
    :class:`DecodeError`.
    """
    wanted = None if indices is None else np.asarray(indices, dtype=np.int64)
    needed = None if wanted is None else set(wanted.tolist())
    last = None if wanted is None else int(wanted.max())
    decoded: dict[int, np.ndarray] = {}
    frames: list[np.ndarray] = []
    count = 0
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            stream = open_video_stream(container, path, codec_threads)
            size: tuple[int, int] | None = None
            for frame in container.decode(stream):
                if size is None:
                    size = scaled_size(frame.height, frame.width, short_side)
                if needed is None:
                    frames.append(frame_to_rgb(frame, size))
                elif count in needed:
                    decoded[count] = frame_to_rgb(frame, size)
                count += 1
                if last is not None and count > last:
                    break
    except DecodeError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise DecodeError(f"{path}: {type(exc).__name__}: {exc}") from exc
    if count == 0:
        raise DecodeError(f"{path}: no decodable frame")
    if wanted is None:
        return np.stack(frames)
    if last is not None and last >= count:
        if count < 0.9 * (last + 1) or not decoded:
            raise DecodeError(f"{path}: only {count} frames decodable, frame {last} requested")
        final = decoded[max(decoded)]
        return np.stack([decoded.get(int(i), final) for i in wanted])
    return np.stack([decoded[int(i)] for i in wanted])
