"""Per-video keyframe index: which frame number each timestamp is, and where decoding may start.

Frame ``i`` of a video is the ``i``-th frame a full sequential decode yields, i.e. the frame with
the ``i``-th smallest presentation timestamp (pts) among the packets the decoder shows (see
:mod:`pipelines.data.video_stream`: not those an edit list discards, nor the ones before the first
shown frame of a stream cut mid-GOP; a keyframe among them is no place to start). A demux pass
gives every packet's pts and keyframe flag (only the first shown frame is decoded), so the index is
cheap to build; :mod:`pipelines.data.preflight`
builds it during its own demux pass and ``prepare`` stores it with the run
(``RUN_DIR/keyframes.npz``), so the loaders never scan a prepared video again. A video whose
packets lack a pts, or repeat one, has no usable index: it is decoded sequentially from the start.

Seeking lands on a keyframe through the demuxer's own index, which some containers keep by pts
(MP4, Matroska) and others by dts (AVI with B-frames: pts there lands one keyframe too late), so
each keyframe keeps both; the decoder tries the pts, checks where it landed and retries with the
dts (see :func:`pipelines.video.decode.decode_at`). Each keyframe also keeps its packet's size: after
a seek, a packet is taken for the keyframe only with its pts, its flag and its size, because an MPEG
program stream's parser, started mid-stream, can give a picture the pts of the next one.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from core.runfiles import atomic_path
from pipelines.data.video_stream import ShownPackets, decode_one, video_stream

INDEX_FORMAT = 4  # bump when what is stored changes; files of other formats are ignored


@dataclass(frozen=True, eq=False)
class KeyframeIndex:
    """Timestamps of every frame and the frames decoding may start at."""

    pts: np.ndarray  # (N,) int64, ascending: frame i has pts[i]
    keyframes: np.ndarray  # (K,) int64 frame numbers of the keyframes, ascending
    seek_targets: np.ndarray  # (K, 2) int64: each keyframe's pts and dts (its pts when it has none)
    key_sizes: np.ndarray  # (K,) int64: each keyframe's packet size in bytes, as a sequential demux gives it
    # pts -> frame number, built on first use: a lookup per packet and per frame while decoding
    _numbers: dict[int, int] | None = field(default=None, init=False, repr=False)

    @property
    def frames(self) -> int:
        return int(self.pts.shape[0])

    def keyframe_before(self, frame: int) -> int | None:
        """Position (in :attr:`keyframes`) of the last keyframe at or before ``frame``; None when
        ``frame`` comes before the first keyframe (decode from the start)."""
        position = int(np.searchsorted(self.keyframes, frame, side="right")) - 1
        return position if position >= 0 else None

    def frame_number(self, pts: int | None) -> int | None:
        """The frame number of a decoded frame's ``pts`` (None when no frame has it)."""
        if self._numbers is None:  # a benign race: two threads may both build the same dict
            object.__setattr__(self, "_numbers", {int(value): number for number, value in enumerate(self.pts)})
        assert self._numbers is not None
        return None if pts is None else self._numbers.get(pts)


def index_from_packets(
    pts: Sequence[int | None], dts: Sequence[int | None], keyframe: Sequence[bool], size: Sequence[int]
) -> KeyframeIndex | None:
    """The index of a stream from its packets (demux order; one frame per packet: pts, dts,
    keyframe flag, size), or None when the timestamps cannot identify frames: a packet without pts,
    or two packets with one pts."""
    if not pts or any(value is None for value in pts):
        return None
    values = np.asarray(pts, dtype=np.int64)
    order = np.sort(values)
    if np.any(order[1:] == order[:-1]):
        return None
    flags = np.asarray(keyframe, dtype=bool)
    key_pts = values[flags]
    key_sizes = np.asarray(size, dtype=np.int64)[flags]
    key_dts = np.array(
        [p if d is None else d for p, d, k in zip(pts, dts, keyframe, strict=True) if k], dtype=np.int64
    ).reshape(-1)
    ranks = np.searchsorted(order, key_pts)
    by_rank = np.argsort(ranks, kind="stable")
    return KeyframeIndex(
        pts=order,
        keyframes=ranks[by_rank].astype(np.int64),
        seek_targets=np.stack([key_pts[by_rank], key_dts[by_rank]], axis=1).reshape(-1, 2),
        key_sizes=key_sizes[by_rank],
    )


def in_display_order(shown_pts: Sequence[int | None]) -> bool:
    """Whether a decoder showed frames in increasing pts order, as the index assumes. AVI keeps no
    pts: with B-frames (H.264 in AVI, DivX packed bitstream) its demuxer guesses them in decode
    order, and the shown frames' pts then run 1, 4, 3, 5, 2, ...: they do not say which frame is
    which, so such a video gets no index and is decoded from the start, frames counted."""
    if any(pts is None for pts in shown_pts):
        return False
    values = np.asarray(shown_pts, dtype=np.int64)
    return bool(np.all(np.diff(values) > 0))


def timestamps_identify_frames(
    path: str | os.PathLike[str],
    container: av.container.InputContainer,
    stream: av.VideoStream,
    last_gop_pts: Sequence[int | None],
) -> bool:
    """Whether ``path``'s pts say which frame is which: the last group of pictures was shown in pts
    order (``last_gop_pts``, see :func:`in_display_order`) and, for an AVI with B-frames (where
    the demuxer guesses pts; a packed bitstream can look right in one group and not in another),
    so was every frame of a sequential decode. Called after the last group was decoded, which
    tells the decoder whether the stream reorders frames."""
    if not in_display_order(last_gop_pts):
        return False
    if "avi" not in container.format.name.split(",") or not stream.codec_context.has_b_frames:
        return True
    try:
        with av.open(str(path), metadata_errors="ignore") as again:
            shown = video_stream(again)
            return shown is not None and in_display_order([frame.pts for frame in again.decode(shown)])
    except (av.FFmpegError, OSError, ValueError):
        return False


def scan_keyframe_index(path: str | os.PathLike[str]) -> KeyframeIndex | None:
    """Demux ``path`` and index the frames a decoder shows (decoding up to the first shown frame, see
    :mod:`pipelines.data.video_stream`, and the last group of pictures, see
    :func:`timestamps_identify_frames`); None when it cannot be indexed (or opened)."""
    shown = ShownPackets()
    last_gop: list[av.Packet] = []
    shown_pts: list[int | None] = []
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            stream = video_stream(container)
            if stream is None:
                return None
            stream.codec_context.thread_count = 1
            for packet in container.demux(stream):
                if packet.size:  # not the demuxer's end-of-stream marker
                    shown.add(packet)
                    if packet.is_keyframe:
                        last_gop = []
                    last_gop.append(packet)
            first, _ = decode_one(stream.codec_context, shown.lead_in)
            decode_one(stream.codec_context, last_gop, last=True, shown_pts=shown_pts)
            if not timestamps_identify_frames(path, container, stream, shown_pts):
                return None
    except (av.FFmpegError, OSError, ValueError):
        return None
    shown.shown_from(None if first is None else first.pts)
    return index_from_packets(*shown.columns())


def _signature(path: str | os.PathLike[str]) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def save_keyframe_indexes(target: str | os.PathLike[str], indexes: Mapping[str, KeyframeIndex]) -> None:
    """Write ``indexes`` (by video path) to one ``.npz`` file, atomically, with each video's size
    and mtime: an index whose video changed since is not used (see :class:`KeyframeIndexes`)."""
    paths = sorted(path for path in indexes if _signature(path) is not None)
    signatures = np.array([_signature(path) for path in paths], dtype=np.int64).reshape(-1, 2)
    items = [indexes[path] for path in paths]
    arrays = {
        "format": np.array(INDEX_FORMAT),
        "paths": np.array(paths, dtype=str),
        "signatures": signatures,
        "pts_counts": np.array([item.frames for item in items], dtype=np.int64),
        "pts": np.concatenate([item.pts for item in items]) if items else np.zeros(0, np.int64),
        "key_counts": np.array([len(item.keyframes) for item in items], dtype=np.int64),
        "keyframes": np.concatenate([item.keyframes for item in items]) if items else np.zeros(0, np.int64),
        "seek_targets": (
            np.concatenate([item.seek_targets for item in items]) if items else np.zeros((0, 2), np.int64)
        ),
        "key_sizes": np.concatenate([item.key_sizes for item in items]) if items else np.zeros(0, np.int64),
    }
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as handle:  # a file object: np.savez would append ".npz" to the name
            np.savez_compressed(handle, **arrays)


def load_keyframe_indexes(source: str | os.PathLike[str]) -> dict[str, tuple[tuple[int, int], KeyframeIndex]]:
    """The indexes of a file written by :func:`save_keyframe_indexes`, by path, each with the
    video's (size, mtime_ns) when indexed; empty when the file is missing, unreadable or of
    another format (the videos are then indexed again when first decoded)."""
    try:
        with np.load(source, allow_pickle=False) as data:
            if int(data["format"]) != INDEX_FORMAT:
                return {}
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, KeyError):
        return {}
    pts_ends = np.cumsum(arrays["pts_counts"])
    key_ends = np.cumsum(arrays["key_counts"])
    loaded = {}
    for row, path in enumerate(arrays["paths"].tolist()):
        pts_slice = slice(int(pts_ends[row] - arrays["pts_counts"][row]), int(pts_ends[row]))
        key_slice = slice(int(key_ends[row] - arrays["key_counts"][row]), int(key_ends[row]))
        size, mtime = (int(v) for v in arrays["signatures"][row])
        index = KeyframeIndex(
            arrays["pts"][pts_slice],
            arrays["keyframes"][key_slice],
            arrays["seek_targets"][key_slice],
            arrays["key_sizes"][key_slice],
        )
        loaded[path] = ((size, mtime), index)
    return loaded


class KeyframeIndexes:
    """The keyframe index of each video: from the run's ``keyframes.npz`` while the video is
    unchanged, else built by one demux pass on first use and kept for the life of the object
    (thread-safe: the loader's decode threads share it)."""

    def __init__(self, stored: str | os.PathLike[str] | None = None) -> None:
        self._source = None if stored is None else Path(stored)
        self._stored: dict[str, tuple[tuple[int, int], KeyframeIndex]] | None = None  # read on first use
        self._known: dict[str, KeyframeIndex | None] = {}
        self._lock = threading.Lock()
        self.scanned = 0  # videos indexed here (not found, or stale, in the stored file)

    def __getstate__(self) -> dict[str, object]:
        """Picklable (e.g. for a benchmark's fresh interpreter): everything but the lock."""
        with self._lock:
            state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def add(self, path: str, index: KeyframeIndex | None) -> None:
        """Use ``index`` for ``path`` (e.g. from a pre-flight probe)."""
        with self._lock:
            self._known[str(path)] = index

    def get(self, path: str | os.PathLike[str]) -> KeyframeIndex | None:
        return self.lookup(path)[0]

    def lookup(self, path: str | os.PathLike[str]) -> tuple[KeyframeIndex | None, bool]:
        """The index of ``path`` (None: it has none) and whether this call built it by a demux pass
        (the loaders sharing this object each count their own scans)."""
        key = str(path)
        with self._lock:
            if key in self._known:
                return self._known[key], False
        with self._lock:
            if self._stored is None:
                exists = self._source is not None and self._source.exists()
                self._stored = load_keyframe_indexes(self._source) if exists and self._source else {}
            stored = self._stored.get(key)
        index: KeyframeIndex | None
        if stored is not None and stored[0] == _signature(key):
            index, scanned = stored[1], False
        else:
            index, scanned = scan_keyframe_index(key), True
            with self._lock:
                self.scanned += 1
        with self._lock:
            self._known[key] = index
        return index, scanned
