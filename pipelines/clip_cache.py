"""PyAV frame decoding and the decoded-clip cache.

The cache keeps every frame of a video once, as a packed uint8 ``.npy`` of shape (T, H, W, 3)
resized so that the shorter side is the short side the clips need (then evaluation only
centre-crops cached frames), except that a source is upscaled by at most
:data:`MAX_CACHE_UPSCALE` (a 120p demo video is not stored at 256p for 224 crops: the pipeline
resizes those crops itself). Next to it, a small JSON sidecar holds the source's signature
(resolved path, size, mtime). Later epochs and
stages read only the sampled frames out of the ``.npy`` (:meth:`ClipCache.entry`, one ``pread``
per frame: no memory map to set up and fault in, no header to parse) or memory-map it
(:meth:`ClipCache.load`). An entry whose source changed is a miss and is overwritten; writes
are atomic (``runfiles.atomic_path``).
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

from pipelines.runfiles import atomic_path, atomic_write_json, file_signature

CACHE_FORMAT = 1  # bump when what is stored changes; old entries are then simply not found
MAX_CACHE_UPSCALE = 1.25


class DecodeError(RuntimeError):
    """A video that cannot be decoded (corrupt, truncated, unsupported)."""


def scaled_size(height: int, width: int, short_side: int | None, *, max_upscale: float = 1.0) -> tuple[int, int]:
    """(height, width) with the shorter side ``short_side``, upscaling by at most ``max_upscale``
    (a source too small for that keeps its size)."""
    if short_side is None or min(height, width) == short_side:
        return height, width
    if short_side > min(height, width) * max_upscale:
        return height, width
    scale = short_side / min(height, width)
    if height <= width:
        return short_side, max(1, int(round(width * scale)))
    return max(1, int(round(height * scale))), short_side


def frame_to_rgb(frame: av.VideoFrame, size: tuple[int, int] | None = None) -> np.ndarray:
    """One decoded frame as (H, W, 3) uint8 RGB, optionally resized to ``size`` (height, width).

    Limited-range 4:2:0 (the usual case) is converted by OpenCV, about twice as fast as
    swscale's RGB path and within 3 grey levels of it; other formats go through swscale.
    """
    if frame.format.name == "yuv420p" and frame.color_range != 2 and frame.width % 2 == 0 and frame.height % 2 == 0:
        rgb = cv2.cvtColor(frame.to_ndarray(format="yuv420p"), cv2.COLOR_YUV2RGB_I420)
    else:
        rgb = frame.to_ndarray(format="rgb24")
    if size is not None and size != rgb.shape[:2]:
        shrink = size[0] < rgb.shape[0]
        rgb = cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return rgb


def decode_frames(
    path: str | os.PathLike[str],
    indices: Sequence[int] | None = None,
    short_side: int | None = None,
    *,
    max_upscale: float = 1.0,
) -> np.ndarray:
    """Decode (T, H, W, 3) uint8 RGB frames of ``path`` with PyAV (threaded codec).

    ``indices``: only those frames, in that order (decoding stops after the largest); only
    the wanted frames are converted to RGB. ``short_side``: resize so the shorter side is
    ``short_side`` (downscale only, unless ``max_upscale`` > 1 allows upscaling that much).
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
            if not container.streams.video:
                raise DecodeError(f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            size: tuple[int, int] | None = None
            for frame in container.decode(stream):
                if size is None:
                    size = scaled_size(frame.height, frame.width, short_side, max_upscale=max_upscale)
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


@dataclass(frozen=True)
class CachedVideo:
    """A valid cache entry: (T, H, W, 3) uint8 frames stored from byte ``offset`` of ``path``."""

    path: Path
    shape: tuple[int, int, int, int]
    offset: int

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """The frames at ``indices`` (in that order) as a new C-contiguous array."""
        frame_bytes = self.shape[1] * self.shape[2] * self.shape[3]
        out = np.empty((len(indices), *self.shape[1:]), np.uint8)
        with open(self.path, "rb", buffering=0) as handle:
            descriptor = handle.fileno()
            for row, index in enumerate(indices):
                if not 0 <= index < self.shape[0]:
                    raise IndexError(f"frame {index} out of range for {self.shape[0]} cached frames")
                if os.preadv(descriptor, [out[row]], self.offset + int(index) * frame_bytes) != frame_bytes:
                    raise OSError(f"{self.path}: truncated cache entry")
        return out


class ClipCache:
    """Decoded frames of whole videos at one short side, read frame by frame or memory-mapped."""

    def __init__(self, cache_dir: str | os.PathLike[str]) -> None:
        self.cache_dir = Path(cache_dir)
        self._entries: dict[tuple[str, int], tuple[Path, Path]] = {}

    def _entry(self, source: str | os.PathLike[str], short_side: int) -> tuple[Path, Path]:
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
        stale. The frames are the last bytes of the ``.npy`` (uint8, C order, shape from the
        sidecar), so their offset follows from the file size without parsing the header."""
        frames_path, meta_path = self._entry(source, short_side)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("source") != file_signature(source):
                return None
            shape = tuple(int(v) for v in meta["shape"])
            offset = frames_path.stat().st_size - int(np.prod(shape))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if len(shape) != 4 or offset < 10:
            return None
        return CachedVideo(frames_path, shape, offset)  # type: ignore[arg-type]

    def load(self, source: str | os.PathLike[str], short_side: int) -> np.ndarray | None:
        """The cached frames (read-only memory map), or None when missing or stale."""
        frames_path, meta_path = self._entry(source, short_side)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("source") != file_signature(source):
                return None
            return np.load(frames_path, mmap_mode="r")
        except (OSError, ValueError):
            return None

    def store(self, source: str | os.PathLike[str], short_side: int, frames: np.ndarray) -> None:
        frames_path, meta_path = self._entry(source, short_side)
        with atomic_path(frames_path) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, np.ascontiguousarray(frames, dtype=np.uint8))
        # The sidecar is written last: an entry without a matching sidecar is a miss.
        atomic_write_json(
            meta_path, {"source": file_signature(source), "short_side": short_side, "shape": list(frames.shape)}
        )

    def load_or_decode(self, source: str | os.PathLike[str], short_side: int) -> tuple[np.ndarray, bool]:
        """(frames, hit): the cached frames, or decode the whole video, store it, return it."""
        frames = self.load(source, short_side)
        if frames is not None:
            return frames, True
        return self.decode_and_store(source, short_side), False

    def decode_and_store(self, source: str | os.PathLike[str], short_side: int) -> np.ndarray:
        """Decode the whole video at ``short_side`` (upscaling at most MAX_CACHE_UPSCALE), store it."""
        frames = decode_frames(source, short_side=short_side, max_upscale=MAX_CACHE_UPSCALE)
        self.store(source, short_side, frames)
        return frames

    def cache_size_bytes(self) -> int:
        if not self.cache_dir.exists():
            return 0
        return sum(path.stat().st_size for path in self.cache_dir.rglob("*") if path.is_file())
