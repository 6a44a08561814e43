"""The decoded-clip cache.

The cache keeps every frame of a video once, in the decoder's own pixel format where that is
limited-range 4:2:0 (the usual case: planar I420, 1.5 bytes per pixel, no colour conversion
when the cache is filled), else as RGB. Frames are stored at the source size, or shrunk (area
filter) so that the shorter side is the short side the clips need (rounded up to even for
I420); a source smaller than that is never upscaled (the pipeline resizes its crops). Next to the frames, a
small JSON sidecar holds the source's signature (resolved path, size, mtime) and the layout.

Reads take only the sampled frames (:meth:`CachedVideo.read`, one ``pread`` per frame) and
convert them to RGB. An entry whose source changed is a miss and is overwritten; writes are
atomic (``runfiles.atomic_path``); a damaged entry is set aside (``*.corrupt``), named, and decoded again.

Why I420: on a 2-core CPU the first (cache-filling) pass over the demo spent more time
converting, resizing and writing RGB than decoding; stored as I420 that pass went from 1.2x to
2.4x the notebook-style reference (README, "Measured").
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from core.runfiles import atomic_path, atomic_write_json, file_signature, set_aside
from pipelines.video.decode import (
    DecodeError,
    frame_to_i420,
    frame_to_rgb,
    is_i420,
    open_video_stream,
    scaled_size,
)

CACHE_FORMAT = 2  # bump when what is stored changes; old entries are then simply not found
PIXEL_FORMATS = ("i420", "rgb24")


@dataclass(frozen=True)
class FrameLayout:
    """How a video's frames are stored: ``pixel_format`` "i420" ((3H/2, W) per frame) or
    "rgb24" ((H, W, 3) per frame), ``frames`` of ``height`` x ``width`` pixels."""

    pixel_format: str
    frames: int
    height: int
    width: int

    @property
    def frame_shape(self) -> tuple[int, ...]:
        if self.pixel_format == "i420":
            return (self.height * 3 // 2, self.width)
        return (self.height, self.width, 3)

    @property
    def frame_bytes(self) -> int:
        return int(np.prod(self.frame_shape))

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """The shape of all frames as RGB: (T, H, W, 3)."""
        return (self.frames, self.height, self.width, 3)


def stored_to_rgb(stored: np.ndarray, layout: FrameLayout) -> np.ndarray:
    """Stored frames (n, *layout.frame_shape) as a new C-contiguous (n, H, W, 3) RGB array."""
    if layout.pixel_format == "rgb24":
        return np.ascontiguousarray(stored)
    out = np.empty((len(stored), layout.height, layout.width, 3), np.uint8)
    for row, planes in enumerate(stored):
        cv2.cvtColor(planes, cv2.COLOR_YUV2RGB_I420, dst=out[row])
    return out


def _check_indices(indices: Sequence[int], frames: int) -> np.ndarray:
    picked = np.asarray(indices, dtype=np.int64)
    bad = picked[(picked < 0) | (picked >= frames)]
    if bad.size:
        raise IndexError(f"frame {int(bad[0])} out of range for {frames} cached frames")
    return picked


@dataclass(frozen=True)
class DecodedVideo:
    """All frames of a video in memory, as stored in the cache."""

    layout: FrameLayout
    stored: np.ndarray  # (T, *layout.frame_shape) uint8

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return self.layout.shape

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """The frames at ``indices`` (in that order) as a new (n, H, W, 3) RGB array."""
        return stored_to_rgb(self.stored[_check_indices(indices, self.layout.frames)], self.layout)


@dataclass(frozen=True)
class CachedVideo:
    """A valid cache entry: frames laid out as ``layout``, stored from byte ``offset`` of ``path``."""

    path: Path
    layout: FrameLayout
    offset: int

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return self.layout.shape

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """The frames at ``indices`` (in that order) as a new (n, H, W, 3) RGB array."""
        picked = _check_indices(indices, self.layout.frames)
        frame_bytes = self.layout.frame_bytes
        stored = np.empty((len(picked), *self.layout.frame_shape), np.uint8)
        with open(self.path, "rb", buffering=0) as handle:
            descriptor = handle.fileno()
            for row, index in enumerate(picked.tolist()):
                if os.preadv(descriptor, [stored[row]], self.offset + index * frame_bytes) != frame_bytes:
                    raise OSError(f"{self.path}: truncated cache entry")
        return stored_to_rgb(stored, self.layout)


def decode_video(path: str | os.PathLike[str], short_side: int, *, codec_threads: int = 0) -> DecodedVideo:
    """Every frame of ``path`` in cache form: I420 when the decoder gives limited-range 4:2:0
    with even sides, else RGB; downscaled (never upscaled) towards ``short_side``, which I420
    rounds up to even sides. Errors as :func:`decode_frames`."""
    stored: list[np.ndarray] = []
    layout: FrameLayout | None = None
    # swscale's area filter with one cached context per video: ~2.7x faster than OpenCV's
    # INTER_AREA at non-integer ratios (240p -> 128p), which cost more than decoding MPEG-4.
    shrink = VideoReformatter()
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            stream = open_video_stream(container, path, codec_threads)
            for frame in container.decode(stream):
                if layout is None:
                    height, width = scaled_size(frame.height, frame.width, short_side)
                    if is_i420(frame):
                        height, width = min(height + height % 2, frame.height), min(width + width % 2, frame.width)
                        layout = FrameLayout("i420", 0, height, width)
                    else:
                        layout = FrameLayout("rgb24", 0, height, width)
                size = (layout.height, layout.width)
                if layout.pixel_format == "rgb24":
                    stored.append(frame_to_rgb(frame, size))
                elif is_i420(frame) and (frame.height, frame.width) == size:
                    stored.append(frame_to_i420(frame))
                else:  # shrink (or, if the stream changed format or size mid-way, bring it back)
                    stored.append(
                        frame_to_i420(shrink.reformat(frame, width=size[1], height=size[0], format="yuv420p",
                                                      interpolation="AREA"))
                    )  # fmt: skip
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise DecodeError(f"{path}: {type(exc).__name__}: {exc}") from exc
    if layout is None:
        raise DecodeError(f"{path}: no decodable frame")
    frames = np.stack(stored)
    return DecodedVideo(FrameLayout(layout.pixel_format, len(frames), layout.height, layout.width), frames)


class ClipCache:
    """Decoded frames of whole videos, one entry per (source, short side).

    The first store of an instance deletes entries of other :data:`CACHE_FORMAT` versions,
    which would never be read again.
    """

    def __init__(self, cache_dir: str | os.PathLike[str]) -> None:
        self.cache_dir = Path(cache_dir)
        self._entries: dict[tuple[str, int], tuple[Path, Path]] = {}
        self._checked_formats = False

    def remove_other_formats(self) -> None:
        """Delete the folders of other cache formats (``v<N>-s<short side>``, N != CACHE_FORMAT)."""
        import shutil

        for folder in self.cache_dir.glob("v*-s*"):
            version = folder.name[1:].partition("-")[0]
            if folder.is_dir() and version.isdigit() and int(version) != CACHE_FORMAT:
                shutil.rmtree(folder, ignore_errors=True)

    def _paths(self, source: str | os.PathLike[str], short_side: int) -> tuple[Path, Path]:
        known = self._entries.get((str(source), short_side))
        if known is not None:
            return known
        name = Path(source).stem
        key = hashlib.sha256(os.path.realpath(source).encode("utf-8")).hexdigest()[:12]
        base = self.cache_dir / f"v{CACHE_FORMAT}-s{short_side}" / f"{name}-{key}"
        paths = base.with_suffix(".npy"), base.with_suffix(".json")
        self._entries[(str(source), short_side)] = paths
        return paths

    def entry(self, source: str | os.PathLike[str], short_side: int) -> CachedVideo | None:
        """The valid entry of ``source`` (nothing read but its sidecar), or None when missing or
        stale. The frames are the last bytes of the ``.npy`` (uint8, C order, layout from the
        sidecar), so their offset follows from the file size without parsing the header; the
        sidecar records that size, so a file cut short or grown behind the cache's back is never
        read at a shifted offset. A damaged entry (unreadable sidecar, frames of the wrong size) is
        set aside and named; either way the caller decodes the video again."""
        frames_path, meta_path = self._paths(source, short_side)
        try:
            text = meta_path.read_text(encoding="utf-8")
        except OSError:
            return None
        try:
            meta = json.loads(text)
            if meta.get("source") != file_signature(source) or meta.get("pixel_format") not in PIXEL_FORMATS:
                return None  # the source changed since: stale, overwritten by the next store
            layout = FrameLayout(meta["pixel_format"], int(meta["frames"]), int(meta["height"]), int(meta["width"]))
            stored_bytes = meta.get("bytes")  # absent in entries of older versions: decoded again
            size = frames_path.stat().st_size
        except OSError:
            return None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            set_aside(meta_path, f"{type(exc).__name__}: {exc}", redo="decoding the video again")
            return None
        if stored_bytes is None:
            return None
        offset = size - layout.frames * layout.frame_bytes
        if size != stored_bytes or offset < 10 or layout.frames < 1:
            set_aside(frames_path, f"{size} bytes, {stored_bytes} written", redo="decoding the video again")
            return None
        return CachedVideo(frames_path, layout, offset)

    def store(self, source: str | os.PathLike[str], short_side: int, video: DecodedVideo) -> None:
        if not self._checked_formats:
            self.remove_other_formats()
            self._checked_formats = True
        frames_path, meta_path = self._paths(source, short_side)
        with atomic_path(frames_path) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, np.ascontiguousarray(video.stored, dtype=np.uint8))
        # The sidecar is written last: an entry without a matching sidecar is a miss.
        layout = video.layout
        atomic_write_json(
            meta_path,
            {
                "bytes": frames_path.stat().st_size,
                "source": file_signature(source),
                "short_side": short_side,
                "pixel_format": layout.pixel_format,
                "frames": layout.frames,
                "height": layout.height,
                "width": layout.width,
            },
        )

    def decode_and_store(
        self, source: str | os.PathLike[str], short_side: int, *, codec_threads: int = 0
    ) -> DecodedVideo:
        """Decode the whole video for ``short_side`` (see :func:`decode_video`), store it, return it."""
        video = decode_video(source, short_side, codec_threads=codec_threads)
        self.store(source, short_side, video)
        return video

    def cache_size_bytes(self) -> int:
        if not self.cache_dir.exists():
            return 0
        return sum(path.stat().st_size for path in self.cache_dir.rglob("*") if path.is_file())
