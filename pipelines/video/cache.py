"""The decoded-clip cache: the frames training and evaluation use, at the clip's short side, in a
bounded amount of disk.

One entry per (source video, short side): some of the video's frames in the stored form of
:class:`pipelines.video.decode.FrameShrinker` (planar I420 at 1.5 bytes per pixel for the usual
limited-range 4:2:0, else RGB; shrunk so the shorter side is the clip's short side, never
enlarged), as the last bytes of an ``.npy`` file, with a JSON sidecar: the source's signature
(resolved path, size, mtime), the frames file's size, the layout and which frame numbers are
stored. Which frames the loader stores (:func:`frames_to_store`): what evaluation reads (its clips
are the same every epoch), and for training the whole video, or a window of
:data:`MAX_VIDEO_SECONDS` around the first clip of a longer one (later clips inside it are hits,
others are decoded from the source by seeking).

Reads take only the sampled frames (:meth:`CachedVideo.read`, one ``pread`` per frame). An entry
whose source changed is a miss and is overwritten; writes are atomic (``runfiles.atomic_path``);
a damaged entry (unreadable sidecar, frames file of another size than recorded) is set aside
(``*.corrupt``), named, and decoded again.

Size: at most ``max_bytes`` (default :func:`default_max_bytes`). A store that would take the cache
over it (or opening a cache already over it) deletes least-recently-used entries (the frames
file's mtime is set on every hit) until the cache is at :data:`EVICT_TO` of the limit, but only
entries nobody used since the cache was opened: when the entries in use fill it, a new entry is not
stored (:meth:`ClipCache._make_room`). The folder is re-read then, so the limit also holds for
several processes (DDP ranks) sharing it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.runfiles import atomic_path, atomic_write_json, file_signature, set_aside
from pipelines.video.clips import known_rate
from pipelines.video.decode import MISSING_TAIL_TOLERANCE, DecodedFrames, FrameLayout, stored_to_rgb

# Bump when what is stored changes; old entries are then simply not found. 4: frames shrunk with
# swscale's bilinear filter (decode.SHRINK_FILTER), the area filter before; 5: frames numbered as the
# decoder shows them (video_stream.FRAMES_DEFINITION 2); 6: FRAMES_DEFINITION 3.
CACHE_FORMAT = 6
PIXEL_FORMATS = ("i420", "rgb24")
MAX_VIDEO_SECONDS = 12.0  # the longest stretch of a training video stored (clips span time: clips.STRIDE_FPS)
MAX_VIDEO_FRAMES = 300  # ... in frames, for a video of unknown frame rate (12 s at 25 fps)
DEFAULT_DISK_FRACTION = 0.25  # default limit: this fraction of the disk space free for the cache
EVICT_TO = 0.9  # evictions bring the cache down to this fraction of its limit

__all__ = ["CACHE_FORMAT", "CachedVideo", "ClipCache", "FrameLayout", "default_max_bytes", "frames_to_store"]


def window_frames(fps: float) -> int:
    """Frames in :data:`MAX_VIDEO_SECONDS` of a video at ``fps`` (unknown: :data:`MAX_VIDEO_FRAMES`)."""
    return max(1, int(MAX_VIDEO_SECONDS * fps + 0.5)) if known_rate(fps) else MAX_VIDEO_FRAMES


def frames_to_store(wanted: np.ndarray, video_frames: int, mode: str, *, fps: float) -> np.ndarray:
    """The frame numbers to cache after a miss that needed ``wanted`` (sorted) of a video of
    ``video_frames`` frames at ``fps``: in "eval" mode those frames (every epoch reads the same ones);
    in "train" mode every frame, or for a longer video the :func:`window_frames` centred on the
    wanted ones (clamped to the video), which later random clips may fall into."""
    if mode == "eval":
        return wanted
    length = window_frames(fps)
    if video_frames <= length:
        return np.arange(video_frames, dtype=np.int64)
    centre = (int(wanted[0]) + int(wanted[-1])) // 2
    start = min(max(centre - length // 2, 0), video_frames - length)
    window = np.arange(start, start + length, dtype=np.int64)
    return np.union1d(window, wanted)  # a clip longer than the window is still stored whole


def default_max_bytes(cache_dir: str | os.PathLike[str]) -> int:
    """:data:`DEFAULT_DISK_FRACTION` of the space the cache could use: what is free on its disk
    plus what the cache already holds."""
    folder = Path(cache_dir).resolve()
    existing = next(parent for parent in (folder, *folder.parents) if parent.exists())
    return int(DEFAULT_DISK_FRACTION * (shutil.disk_usage(existing).free + _folder_bytes(folder)))


def _folder_bytes(folder: Path) -> int:
    if not folder.exists():
        return 0
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def _runs(numbers: np.ndarray) -> list[list[int]]:
    """Sorted frame numbers as [[start, count], ...] runs of consecutive numbers."""
    breaks = np.flatnonzero(np.diff(numbers) != 1) + 1
    return [[int(run[0]), len(run)] for run in np.split(numbers, breaks)]


def _numbers(runs: list[list[int]]) -> np.ndarray:
    return np.concatenate([np.arange(start, start + count, dtype=np.int64) for start, count in runs])


@dataclass(frozen=True)
class CachedVideo:
    """A valid cache entry: frames ``numbers`` laid out as ``layout``, stored from byte ``offset``
    of ``path``; ``last_frame``: the video's last frame (later ones read as it), when known."""

    path: Path
    layout: FrameLayout
    offset: int
    numbers: np.ndarray
    last_frame: int | None = None

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(stored frames, H, W, 3) as RGB."""
        return (self.layout.frames, self.layout.height, self.layout.width, 3)

    def _rows(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """The row of each frame and whether it is stored. A frame past the video's end reads as
        the last one within the tail :func:`~pipelines.video.decode.decode_at` tolerates."""
        picked = np.asarray(indices, dtype=np.int64)
        tolerated = np.ones(picked.shape, bool)
        if self.last_frame is not None:
            tolerated = self.last_frame + 1 >= (1 - MISSING_TAIL_TOLERANCE) * (picked + 1)
            picked = np.minimum(picked, self.last_frame)
        rows = np.minimum(np.searchsorted(self.numbers, picked), len(self.numbers) - 1)
        return rows, (self.numbers[rows] == picked) & tolerated

    def covers(self, indices: Sequence[int]) -> bool:
        """Whether every frame of ``indices`` is stored."""
        return bool(self._rows(indices)[1].all())

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """The frames at ``indices`` (in that order) as a new (n, H, W, 3) RGB array."""
        rows, found = self._rows(indices)
        if not found.all():
            raise IndexError(f"frame {int(np.asarray(indices)[~found][0])} is not in the cache entry {self.path}")
        frame_bytes = self.layout.frame_bytes
        stored = np.empty((len(rows), *self.layout.frame_shape), np.uint8)
        with open(self.path, "rb", buffering=0) as handle:
            descriptor = handle.fileno()
            for out_row, row in enumerate(rows.tolist()):
                if os.preadv(descriptor, [stored[out_row]], self.offset + row * frame_bytes) != frame_bytes:
                    raise OSError(f"{self.path}: truncated cache entry")
        return stored_to_rgb(stored, self.layout)


class ClipCache:
    """Decoded frames of videos, one entry per (source, short side), at most ``max_bytes`` on disk
    (None: no limit). Thread-safe (the loader's decode threads share one).

    The first store of an instance deletes entries of other :data:`CACHE_FORMAT` versions, which
    would never be read again.
    """

    def __init__(self, cache_dir: str | os.PathLike[str], max_bytes: int | None = None) -> None:
        self.cache_dir = Path(cache_dir)
        self.max_bytes = max_bytes
        self.evictions = 0  # entries this instance deleted to stay under max_bytes
        self.not_stored = 0  # entries not stored: larger than the limit, or the cache full of entries in use
        self._entries: dict[tuple[str, int], tuple[Path, Path]] = {}
        self._checked_formats = False
        self._used: int | None = None  # bytes in the cache, as last counted plus what this instance added
        self._writing = 0  # bytes made room for whose files are still being written (not on disk yet)
        self._lock = threading.Lock()
        self._opened = time.time()  # entries used since are in use (see _make_room)
        if max_bytes is not None and self.cache_dir.exists():
            self._make_room(0)  # a lower limit than the cache's size applies at once, not at the next store

    def remove_other_formats(self) -> None:
        """Delete the folders of other cache formats (``v<N>-s<short side>``, N != CACHE_FORMAT)."""
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
            numbers = _numbers(meta["runs"])
            layout = FrameLayout(meta["pixel_format"], len(numbers), int(meta["height"]), int(meta["width"]))
            last_frame = None if meta.get("last_frame") is None else int(meta["last_frame"])
            stored_bytes = meta.get("bytes")
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
        return CachedVideo(frames_path, layout, offset, numbers, last_frame)

    def touch(self, entry: CachedVideo) -> None:
        """Mark ``entry`` as just used (least-recently-used eviction goes by this time)."""
        try:
            os.utime(entry.path)
        except OSError:
            pass  # deleted by another process meanwhile: the next lookup is a miss

    def store(self, source: str | os.PathLike[str], short_side: int, frames: DecodedFrames) -> None:
        """Store ``frames`` as the entry of ``source`` if they fit under ``max_bytes`` (see
        :meth:`_make_room`)."""
        size = int(frames.stored.nbytes) + 4096  # + the .npy header and the sidecar
        if not self._make_room(size):
            return
        try:
            self._write(source, short_side, frames)
        finally:
            with self._lock:
                self._writing -= size if self.max_bytes is not None else 0

    def _write(self, source: str | os.PathLike[str], short_side: int, frames: DecodedFrames) -> None:
        with self._lock:
            if not self._checked_formats:
                self.remove_other_formats()
                self._checked_formats = True
        frames_path, meta_path = self._paths(source, short_side)
        with atomic_path(frames_path) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, np.ascontiguousarray(frames.stored, dtype=np.uint8))
        # The sidecar is written last: an entry without a matching sidecar is a miss.
        layout = frames.layout
        atomic_write_json(
            meta_path,
            {
                "bytes": frames_path.stat().st_size,
                "source": file_signature(source),
                "short_side": short_side,
                "pixel_format": layout.pixel_format,
                "height": layout.height,
                "width": layout.width,
                "runs": _runs(frames.numbers),
                "last_frame": frames.last_frame,
            },
        )

    def _make_room(self, size: int) -> bool:
        """Whether ``size`` more bytes fit under the limit, after deleting, least recently used
        first, entries nobody used since this cache was opened (down to :data:`EVICT_TO` of the
        limit). Entries in use (stored or read since) are kept: a cache smaller than what a run
        reads then holds a fixed share of it, instead of deleting each video shortly before the
        next epoch reads it again (what plain LRU does to a cycle larger than the cache). Room made
        for entries still being written counts as used: they are not on disk for the scan yet."""
        if self.max_bytes is None:
            return True
        with self._lock:
            if self._used is None:
                self._used = self._scan_total()
            if self._used + size <= self.max_bytes:
                self._used += size
                self._writing += size
                return True
            entries = self._scan()  # fresh: other processes may have added or deleted entries
            total = self._writing + sum(entry_bytes for _, entry_bytes, _ in entries)
            for last_use, entry_bytes, frames_path in sorted(entries):
                if total + size <= EVICT_TO * self.max_bytes or last_use >= self._opened:
                    break
                for path in (frames_path, frames_path.with_suffix(".json")):
                    path.unlink(missing_ok=True)
                total -= entry_bytes
                self.evictions += 1
            fits = total + size <= self.max_bytes
            self._used = total + size if fits else total
            self._writing += size if fits else 0
            self.not_stored += size > 0 and not fits
            return fits

    def _scan(self) -> list[tuple[float, int, Path]]:
        """(last use, bytes with its sidecar, frames path) of every entry of this format."""
        entries = []
        for folder in self.cache_dir.glob(f"v{CACHE_FORMAT}-s*"):
            with os.scandir(folder) as listing:
                for item in listing:
                    if not item.name.endswith(".npy"):
                        continue
                    try:
                        stat = item.stat()
                    except OSError:  # deleted by another process meanwhile
                        continue
                    try:
                        meta = os.stat(Path(item.path).with_suffix(".json")).st_size
                    except OSError:
                        meta = 0
                    entries.append((stat.st_mtime, stat.st_size + meta, Path(item.path)))
        return entries

    def _scan_total(self) -> int:
        return sum(size for _, size, _ in self._scan())

    def cache_size_bytes(self) -> int:
        return _folder_bytes(self.cache_dir)
