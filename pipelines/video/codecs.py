"""Write and read small RGB videos with PyAV.

``write_video`` encodes a (T, H, W, 3) uint8 RGB array with one of the codecs in :data:`CODECS`,
atomically (a rerun never finds a half-written video). ``read_frames`` decodes a file back to
RGB frames, sequentially, the way every reader in the project opens files
(``metadata_errors="ignore"``: real UCF101 files carry broken metadata).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np

from core.runfiles import atomic_path
from pipelines.video.decode import SWSCALE_THREADS


@dataclass(frozen=True)
class CodecSpec:
    """How one codec is written: file extension, muxer, encoder, pixel format, encoder options."""

    extension: str
    container_format: str
    encoder: str
    pix_fmt: str
    options: dict[str, str] = field(default_factory=dict)


CODECS: dict[str, CodecSpec] = {
    # VP9 in WebM: what DALI decodes on the CPU. Realtime, single-threaded settings keep demo
    # generation fast (one encoder per worker process) and the output deterministic.
    "vp9": CodecSpec(
        ".webm",
        "webm",
        "libvpx-vp9",
        "yuv420p",
        {"deadline": "realtime", "cpu-used": "8", "crf": "36", "b": "0", "threads": "1"},
    ),
    # Motion JPEG in AVI: intra-only, full-range, near-lossless.
    "mjpeg": CodecSpec(".avi", "avi", "mjpeg", "yuvj420p", {"qmin": "1", "qmax": "3"}),
    # MPEG-4 Part 2 in AVI, like the UCF101 originals (xvid).
    "mpeg4": CodecSpec(".avi", "avi", "mpeg4", "yuv420p", {"qmin": "2", "qmax": "5", "g": "12"}),
    "h264": CodecSpec(".mp4", "mp4", "libx264", "yuv420p", {"preset": "veryfast", "crf": "20"}),
}


def codec_extension(codec: str) -> str:
    """File extension (with dot) that ``write_video`` uses for ``codec``."""
    return _codec_spec(codec).extension


def _codec_spec(codec: str) -> CodecSpec:
    try:
        return CODECS[codec]
    except KeyError:
        raise ValueError(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}") from None


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (T, H, W, 3), got {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 RGB, got {frames.dtype}")
    if frames.shape[0] == 0:
        raise ValueError("cannot write a video with no frames")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        # 4:2:0 chroma subsampling needs even dimensions.
        raise ValueError(f"frame size must be even, got {width}x{height}")
    return np.ascontiguousarray(frames)


def write_video(
    path: str | os.PathLike[str],
    frames: np.ndarray,
    fps: float,
    codec: str = "vp9",
    options: Mapping[str, str] | None = None,
) -> None:
    """Encode ``frames`` (T, H, W, 3) uint8 RGB to ``path`` at ``fps`` with ``codec``, atomically.

    The container is chosen from the codec (see :data:`CODECS`), not from the temporary file name.
    ``options``: encoder options added to (or replacing) the codec's own, e.g. ``{"g": "12"}``.
    """
    spec = _codec_spec(codec)
    frames = _check_frames(frames)
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    rate = Fraction(fps).limit_denominator(1001)
    height, width = frames.shape[1:3]
    with atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format=spec.container_format) as container:
            stream = container.add_stream(spec.encoder, rate=rate, options={**spec.options, **(options or {})})
            stream.width = width
            stream.height = height
            stream.pix_fmt = spec.pix_fmt
            for index, rgb in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame = frame.reformat(format=spec.pix_fmt, threads=SWSCALE_THREADS)
                frame.pts = index
                frame.time_base = 1 / rate
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))


def read_frames(path: str | os.PathLike[str], indices: Sequence[int] | None = None) -> np.ndarray:
    """Decode ``path`` to (T, H, W, 3) uint8 RGB; with ``indices``, only those frames, in that order.

    Decodes sequentially from the start (exact frame indices, no seeking) and stops after the
    last requested frame. Raises ``IndexError`` when an index is past the last decodable frame.
    """
    wanted = None if indices is None else [int(i) for i in indices]
    if wanted is not None and any(i < 0 for i in wanted):
        raise IndexError(f"negative frame index in {wanted} for {path}")
    last = None if not wanted else max(wanted)
    needed = None if wanted is None else set(wanted)
    decoded: dict[int, np.ndarray] = {}
    frames: list[np.ndarray] = []
    with av.open(str(path), metadata_errors="ignore") as container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if wanted is not None and not wanted:
            height, width = stream.codec_context.height, stream.codec_context.width
            return np.zeros((0, height, width, 3), np.uint8)
        for index, frame in enumerate(container.decode(stream)):
            if needed is None:
                frames.append(frame.to_ndarray(format="rgb24", threads=SWSCALE_THREADS))
                continue
            if index in needed:
                decoded[index] = frame.to_ndarray(format="rgb24", threads=SWSCALE_THREADS)
            if index >= last:
                break
    if wanted is None:
        if not frames:
            raise ValueError(f"{path} has no decodable frame")
        return np.stack(frames)
    missing = sorted(needed - decoded.keys())
    if missing:
        raise IndexError(f"{path}: frame(s) {missing[:5]} past the last decodable frame")
    return np.stack([decoded[i] for i in wanted])
