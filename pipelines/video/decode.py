"""PyAV decoding: only the frames a clip needs (:func:`decode_at`), whole videos sequentially
(:func:`decode_frames`), and the per-frame conversions.

:func:`decode_at` seeks to the keyframe at or before the first needed frame (from the video's
:class:`~pipelines.data.keyframes.KeyframeIndex`) and decodes up to the last one, so a clip's cost
depends on the distance to its keyframe, not on the video's length. Frames are identified by
their pts through the index, so frame ``i`` is exactly the ``i``-th frame of a sequential decode,
also with B-frames, open GOPs and the irregular timestamps of AVI files. Packets of frames that are
not needed are decoded with ``skip_frame="NONREF"``: a non-reference frame (most B-frames) that no
clip uses is not decoded at all (not in AV1, see :data:`NONREF_UNSAFE`). A seek is trusted only
when the keyframe it lands on decodes as an intra frame and the frames then come in display order:
an intra-refresh stream flags its recovery points (P-frames) as keyframes, and from them FFmpeg
holds frames back or shows wrong ones. Where the index is missing or a seek is not trusted, the
video is decoded sequentially from the start instead (``route="sequential"``).

Needed frames are converted once, straight from the decoder's planes to their stored form at the
clip's short side (:class:`FrameShrinker`: swscale's bilinear filter to I420, no full-size RGB), the form
the decoded-clip cache stores, so cached and uncached clips are the same pixels.

Every reader opens files the same way (``metadata_errors="ignore"``: real UCF101 files carry broken
metadata); errors become :class:`DecodeError` naming the file.
"""

from __future__ import annotations

import itertools
import os
import shlex
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

import av
import cv2
import numpy as np
from av.video.frame import PictureType
from av.video.reformatter import VideoReformatter

from pipelines.data.keyframes import KeyframeIndex
from pipelines.data.video_stream import video_stream

ROUTES = ("seek", "start", "sequential")  # see DecodedFrames.route
# swscale's filter for shrinking frames (see FrameShrinker). Stored features and cache entries
# depend on it: the features fingerprint includes it, and the cache format changes with it.
SHRINK_FILTER = "BILINEAR"
# swscale's threads per conversion. PyAV >= 17 defaults to one per core, started with each
# conversion context (every video, and every frame converted by ``to_ndarray``) and woken for
# every frame: on small frames the hand-offs cost more than the work (measured on 2 cores: 177
# vs 62 us CPU per 320x240 frame shrunk to 170x128), and the callers already convert several
# videos at once. The pixels are the same either way.
SWSCALE_THREADS = 1
# A video may have up to this fraction fewer frames than its index or record says: the missing
# tail is then the last frame (a truncated last GOP), beyond it the video is rejected.
MISSING_TAIL_TOLERANCE = 0.1
# Packets past the last wanted frame after which a seeking decode that still misses a frame gives up
# and decodes sequentially (a decoder holds back at most 16 frames for reordering).
REORDER_SLACK = 64
# Codecs whose decoder loses shown frames under ``skip_frame="NONREF"``: dav1d, given AV1's hidden
# frames and the packets that only show one of them, returned none of the wanted frames or the wrong
# ones (checked on SVT-AV1 in Matroska and MP4), so every AV1 clip fell back to a sequential decode.
NONREF_UNSAFE = frozenset({"av1"})


class DecodeError(RuntimeError):
    """A video that cannot be decoded (corrupt, truncated, unsupported)."""


def unreadable_source(path: str | os.PathLike[str], exc: OSError) -> DecodeError:
    """The error of a video that cannot be opened (moved, deleted or made unreadable since
    ``prepare`` indexed it): the video is rejected like an undecodable one, with the fix."""
    return DecodeError(
        f"{path}: cannot read it ({exc.strerror or exc}); if it was moved or deleted, rerun "
        "`python cli.py prepare` to index the folder again"
    )


def decode_error(path: str | os.PathLike[str], exc: Exception, frame: int | None = None) -> DecodeError:
    """The :class:`DecodeError` of ``exc``, raised while reading ``path`` (at frame ``frame``, when
    known): FFmpeg's message without its error number and function name."""
    if isinstance(exc, FileNotFoundError | PermissionError):
        return unreadable_source(path, exc)
    where = "" if frame is None else f" at frame {frame}"
    if not isinstance(exc, av.FFmpegError):
        return DecodeError(f"{path}: {type(exc).__name__}{where}: {exc}")
    return DecodeError(
        f"{path}: {type(exc).__name__}{where}: {exc.strerror or exc}; if the file is damaged, re-encode it "
        f"(`ffmpeg -i {shlex.quote(str(path))} -c:v libx264 -crf 18 fixed.mp4`) or remove it"
    )


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
        rgb = frame.to_ndarray(format="rgb24", threads=SWSCALE_THREADS)
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
    stream = video_stream(container)
    if stream is None:
        raise DecodeError(f"{path}: no video stream")
    if codec_threads == 1:
        # Inside a pool that already keeps every core busy, frame threads only add overhead
        # (measured: 9.2 vs 12.4 ms CPU per 160x120 VP9 demo video).
        stream.codec_context.thread_count = 1
    else:
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = codec_threads
    return stream


def header_size(stream: av.VideoStream) -> tuple[int, int] | None:
    """(height, width) of a stream's frames as its header gives them (None when it does not)."""
    context = stream.codec_context
    return (context.height, context.width) if context.height > 0 and context.width > 0 else None


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
        raise decode_error(path, exc) from exc
    if count == 0:
        raise DecodeError(f"{path}: no decodable frame")
    if wanted is None:
        return np.stack(frames)
    if last is not None and last >= count:
        if count < (1 - MISSING_TAIL_TOLERANCE) * (last + 1) or not decoded:
            raise DecodeError(f"{path}: only {count} frames decodable, frame {last} requested")
        final = decoded[max(decoded)]
        return np.stack([decoded.get(int(i), final) for i in wanted])
    return np.stack([decoded[int(i)] for i in wanted])


@dataclass(frozen=True)
class FrameLayout:
    """How frames are stored: ``pixel_format`` "i420" ((3H/2, W) per frame) or "rgb24" ((H, W, 3)
    per frame), ``frames`` of ``height`` x ``width`` pixels."""

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


def stored_to_rgb(stored: np.ndarray, layout: FrameLayout) -> np.ndarray:
    """Stored frames (n, *layout.frame_shape) as a new C-contiguous (n, H, W, 3) RGB array."""
    if layout.pixel_format == "rgb24":
        return np.ascontiguousarray(stored)
    out = np.empty((len(stored), layout.height, layout.width, 3), np.uint8)
    for row, planes in enumerate(stored):
        cv2.cvtColor(planes, cv2.COLOR_YUV2RGB_I420, dst=out[row])
    return out


class FrameShrinker:
    """Decoded frames in stored form, shrunk (never enlarged) so the shorter side is ``short_side``
    (None: source size): I420 when the decoder gives limited-range 4:2:0 with even sides (sides
    rounded up to even), else RGB. The layout is fixed by the first frame, at the size of
    ``source_size`` (height, width: the stream's, from its header) when given, so every clip of a
    video whose frame size changes mid-stream (joined recordings) has one size.

    One swscale call per frame (one cached context per video), no full-size RGB in between, with
    swscale's bilinear filter, which widens its triangle by the shrink ratio: the antialiased resize
    of torchvision's ``Resize(antialias=True)``, the preprocessing the pretrained weights expect
    (within one grey level on average on fine grey detail, tested; an area filter is 1.6 away).
    Measured CPU per 320x240 frame shrunk to 170x128 (one thread): bilinear 62 us, swscale's area
    filter 90 us; OpenCV's INTER_AREA takes 165 us for the luma plane alone."""

    def __init__(self, short_side: int | None, source_size: tuple[int, int] | None = None) -> None:
        self.short_side = short_side
        self.source_size = source_size
        self.layout: FrameLayout | None = None
        self._reformatter = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        if self.layout is None:
            source_height, source_width = self.source_size or (frame.height, frame.width)
            height, width = scaled_size(source_height, source_width, self.short_side)
            if is_i420(frame):
                height, width = min(height + height % 2, source_height), min(width + width % 2, source_width)
                self.layout = FrameLayout("i420", 0, height, width)
            else:
                self.layout = FrameLayout("rgb24", 0, height, width)
        size = (self.layout.height, self.layout.width)
        if self.layout.pixel_format == "rgb24":
            if (frame.height, frame.width) == size:
                return frame_to_rgb(frame)
            return self._shrink(frame, size, "rgb24").to_ndarray()
        if is_i420(frame) and (frame.height, frame.width) == size:
            return frame_to_i420(frame)
        # Shrink (or, if the stream changed format or size mid-way, bring it back).
        return frame_to_i420(self._shrink(frame, size, "yuv420p"))

    def _shrink(self, frame: av.VideoFrame, size: tuple[int, int], pixel_format: str) -> av.VideoFrame:
        return self._reformatter.reformat(
            frame,
            width=size[1],
            height=size[0],
            format=pixel_format,
            interpolation=SHRINK_FILTER,
            threads=SWSCALE_THREADS,
        )


@dataclass(frozen=True)
class DecodedFrames:
    """Some frames of a video in stored form, and how they were decoded.

    ``route``: "seek" (from a keyframe found through the index), "start" (the first needed frame
    lies before the second keyframe: decoded from the start, frames identified by the index) or
    "sequential" (no usable index, or a seek that was not trusted: decoded from the start, frames
    counted). ``frames_decoded``: frames the decoder produced (the work done, a failed seek's too).
    """

    layout: FrameLayout  # layout.frames == len(numbers)
    numbers: np.ndarray  # (n,) int64 frame numbers of the stored rows, ascending
    stored: np.ndarray  # (n, *layout.frame_shape) uint8
    route: str
    frames_decoded: int
    last_frame: int | None = None  # the video's last frame number, when known (later ones read as it)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(rows, H, W, 3) as RGB."""
        return (self.layout.frames, self.layout.height, self.layout.width, 3)

    def rows(self, indices: Sequence[int]) -> np.ndarray:
        """Row of each frame number (a frame past the video's last reads as the last)."""
        picked = np.asarray(indices, dtype=np.int64)
        if self.last_frame is not None:
            picked = np.minimum(picked, self.last_frame)
        rows = np.searchsorted(self.numbers, picked)
        found = rows < len(self.numbers)
        found[found] = self.numbers[rows[found]] == picked[found]
        if not found.all():
            raise IndexError(f"frame {int(picked[~found][0])} was not decoded")
        return rows

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Frames ``indices`` (in that order) as a new (n, H, W, 3) RGB array."""
        return stored_to_rgb(self.stored[self.rows(indices)], self.layout)


class _SeekFailed(Exception):
    """The index and the file disagree, or the seek landed where decoding cannot start: decode
    sequentially. ``decoded``: frames the failed attempt decoded."""

    def __init__(self, decoded: int = 0) -> None:
        super().__init__(decoded)
        self.decoded = decoded


def _checked_frames(path: str | os.PathLike[str], wanted: np.ndarray, available: int) -> np.ndarray:
    """``wanted`` (sorted) with frames past ``available`` replaced by the last one, or
    :class:`DecodeError` when more than the tolerated tail is missing."""
    last = int(wanted[-1])
    if last < available:
        return wanted
    if available < (1 - MISSING_TAIL_TOLERANCE) * (last + 1):
        raise DecodeError(f"{path}: only {available} frames decodable, frame {last} requested")
    return np.unique(np.minimum(wanted, available - 1))


def decode_at(
    path: str | os.PathLike[str],
    frames: Sequence[int] | np.ndarray,
    short_side: int | None = None,
    *,
    index: KeyframeIndex | None,
    codec_threads: int = 0,
) -> DecodedFrames:
    """The ``frames`` (frame numbers, any order, repeats allowed) of ``path`` in stored form at
    ``short_side`` (see :class:`FrameShrinker`), decoded from the keyframe at or before the first
    of them (see the module docstring). Frames past the end of a video that is at most
    :data:`MISSING_TAIL_TOLERANCE` shorter read as its last frame; otherwise, and on any decoder
    error, :class:`DecodeError`."""
    wanted = np.unique(np.asarray(frames, dtype=np.int64))
    if wanted.size == 0 or wanted[0] < 0:
        raise ValueError(f"{path}: frame numbers must be non-negative, got {list(frames)[:5]}")
    wasted = 0  # frames a failed seek decoded: work done all the same
    if index is not None:
        checked = _checked_frames(path, wanted, index.frames)
        try:
            return _decode_indexed(path, checked, short_side, index, codec_threads)
        except _SeekFailed as failed:
            wasted = failed.decoded
    decoded = _decode_sequential(path, wanted, short_side, codec_threads)
    return replace(decoded, frames_decoded=decoded.frames_decoded + wasted)


def _seek(
    container: av.container.InputContainer, stream: av.VideoStream, index: KeyframeIndex, key: int
) -> Iterator[av.Packet]:
    """Seek to keyframe ``key`` of ``index`` and return the packets from its packet on.

    The demuxer seeks by its own index (by pts in MP4/Matroska, by dts in AVI): try the keyframe's
    pts, then its dts, then those of the keyframe before it, and accept a landing on that keyframe
    or an earlier frame, also on the lead-in an edit list discards; the packets up to the keyframe
    are skipped undecoded. The keyframe's packet is the one with its pts, flag and size (see
    :mod:`pipelines.data.keyframes`) and not followed by another with its pts: an MPEG program
    stream's parser, started mid-stream by a seek, splits the first pictures one late (a picture
    comes with the next one's pts, which the next packet then repeats, and its own pts sits on a
    fragment), and is back in step a few packets on. :class:`_SeekFailed` when no landing leads to
    the keyframe's packet within the frames up to it and :data:`REORDER_SLACK` more (an edit list's
    discarded lead-in not counted)."""
    wanted, size = int(index.keyframes[key]), int(index.key_sizes[key])
    starts = index.seek_targets[[key, key - 1] if key > 0 else [key]]
    for target in dict.fromkeys(int(value) for value in starts.reshape(-1)):
        try:
            container.seek(target, stream=stream, backward=True)
            packets = container.demux(stream)  # its last, empty packet drains the decoder at the end
            first = next((p for p in packets if p.size), None)
        except av.FFmpegError:  # a container that cannot seek: decode it from the start
            raise _SeekFailed from None
        if first is None:
            continue
        landed = index.frame_number(first.pts)
        if landed is None and first.is_discard and first.pts is not None and first.pts < index.pts[0]:
            landed = -1  # the discarded lead-in before frame 0
        if landed is None or landed > wanted:
            continue
        budget = wanted - max(landed, 0) + REORDER_SLACK  # shown packets within which the keyframe's must come
        held: av.Packet | None = None  # the keyframe's packet, unless the next one repeats its pts
        for packet in itertools.chain([first], packets):
            if held is not None:
                if packet.pts != held.pts:
                    return itertools.chain([held, packet], packets)
                held = None  # it was a picture split off with the next one's pts: this may be the keyframe
            if packet.is_keyframe and packet.size == size and index.frame_number(packet.pts) == wanted:
                held = packet
            budget -= not packet.is_discard
            if budget <= 0 and held is None:
                break
        if held is not None:
            return iter([held])
    raise _SeekFailed


def _decode_indexed(
    path: str | os.PathLike[str], wanted: np.ndarray, short_side: int | None, index: KeyframeIndex, codec_threads: int
) -> DecodedFrames:
    """``wanted`` decoded from the keyframe at or before the first of them, frames identified by
    their pts; :class:`_SeekFailed` when the seek is not trusted or a wanted frame does not come."""
    key = index.keyframe_before(int(wanted[0]))
    in_order = wanted.tolist()
    needed = set(in_order)
    first, last = int(wanted[0]), int(wanted[-1])
    out: dict[int, np.ndarray] = {}
    decoded = waiting = 0  # in_order[waiting]: the first wanted frame not decoded yet
    shown = -1  # the last frame number decoded
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            stream = open_video_stream(container, path, codec_threads)
            context = stream.codec_context
            shrink = FrameShrinker(short_side, header_size(stream))
            packets: Iterable[av.Packet] = container.demux(stream)
            seeked = key is not None and int(index.keyframes[key]) > 0
            landing = int(index.keyframes[key]) if seeked else -1  # the keyframe the seek starts from
            if seeked:
                packets = _seek(container, stream, index, key)
            skipping, may_skip = False, context.codec.canonical_name not in NONREF_UNSAFE
            for packet in packets:
                number = index.frame_number(packet.pts)
                skip = may_skip and number is not None and number not in needed
                if skip != skipping:  # a frame no clip needs: not decoded unless others refer to it
                    context.skip_frame, skipping = ("NONREF" if skip else "DEFAULT"), skip
                try:
                    frames = packet.decode()
                except av.FFmpegError as exc:
                    if number is not None and number < first:
                        continue  # a leading frame of an open GOP whose references precede the seek
                    raise decode_error(path, exc, number) from exc
                for frame in frames:
                    decoded += 1
                    frame_number = index.frame_number(frame.pts)
                    if frame_number is None or frame_number <= shown:
                        raise _SeekFailed(decoded)  # not a frame of the index, or out of display order
                    if shown < landing <= frame_number and (
                        frame_number != landing or int(frame.pict_type) != int(PictureType.I)
                    ):
                        raise _SeekFailed(decoded)  # the landing keyframe held back, or not intra
                    shown = frame_number
                    if frame_number in needed and frame_number not in out:
                        out[frame_number] = shrink(frame)
                    while waiting < len(in_order) and in_order[waiting] in out:
                        waiting += 1
                    if waiting < len(in_order) and frame_number > in_order[waiting]:
                        raise _SeekFailed(decoded)  # frames come in presentation order: it was held back
                if len(out) == len(needed) or (number is not None and number > last + REORDER_SLACK):
                    break
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise decode_error(path, exc) from exc
    if len(out) < len(needed) or shrink.layout is None:
        raise _SeekFailed(decoded)
    return _decoded(shrink.layout, out, "seek" if seeked else "start", decoded, index.frames - 1)


def _decoded(
    layout: FrameLayout, out: dict[int, np.ndarray], route: str, decoded: int, last_frame: int | None
) -> DecodedFrames:
    numbers = np.array(sorted(out), dtype=np.int64)
    stored = np.stack([out[int(n)] for n in numbers])
    return DecodedFrames(
        FrameLayout(layout.pixel_format, len(numbers), layout.height, layout.width),
        numbers,
        stored,
        route,
        decoded,
        last_frame,
    )


def _decode_sequential(
    path: str | os.PathLike[str], wanted: np.ndarray, short_side: int | None, codec_threads: int
) -> DecodedFrames:
    """Decode from the start, counting frames, up to the last wanted one (or the end)."""
    needed = set(wanted.tolist())
    last = int(wanted[-1])
    out: dict[int, np.ndarray] = {}
    count = 0
    final: av.VideoFrame | None = None
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            stream = open_video_stream(container, path, codec_threads)
            shrink = FrameShrinker(short_side, header_size(stream))
            for final in container.decode(stream):
                if count in needed:
                    out[count] = shrink(final)
                count += 1
                if count > last:
                    break
    except DecodeError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise decode_error(path, exc) from exc
    if count == 0 or final is None:
        raise DecodeError(f"{path}: no decodable frame")
    reached_end = count <= last
    if reached_end:
        _checked_frames(path, wanted, count)  # raises when too much is missing
        if count - 1 not in out:  # the last frame stands in for the missing tail
            out[count - 1] = shrink(final)
    assert shrink.layout is not None
    return _decoded(shrink.layout, out, "sequential", count, count - 1 if reached_end else None)
