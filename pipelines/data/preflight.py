"""Pre-flight check of every video with PyAV before anything trains on it.

A file passes when it opens, has a video stream, all its packets demux, it has at least
:data:`MIN_FRAMES` frames, its first and last frames decode, and it asks for no rotation on
display. The video is the file's best video stream that is not an attached picture, and its frame
count is the number of demuxed packets the decoder shows (headers are often wrong: AVI ``avih``
counts survive truncation, WebM has none): not those an edit list discards, nor those before the
first shown frame of a stream cut mid-GOP (:mod:`pipelines.data.video_stream`). Only the first
and the last group of pictures are decoded, so a check costs a demux pass plus a few frames. The
same demux pass gives the video's keyframe index (:mod:`pipelines.data.keyframes`).

Frame rate: the header's, unless the shown frames' timestamps say otherwise by more than
:data:`RATE_TOLERANCE` (a variable-rate phone video, a header that lies): then the timestamps'
rate (:func:`timestamp_rate`). Clips step through a video by time at this rate
(:mod:`pipelines.video.clips`), so a wrong header would silently stretch or squeeze every clip.

Rotation: a phone video stores its frames sideways plus a display matrix that players apply. PyAV
and DALI's CPU decoder return the stored, unrotated frames (checked; DALI's NVDEC route was not
checked on a GPU), and a fix would have to act identically in every decode route, so such a file
is rejected with an ffmpeg command that writes an upright copy (ffmpeg applies the rotation when
it re-encodes).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from core.console import progress_bar
from pipelines.data.keyframes import KeyframeIndex, index_from_packets, timestamps_identify_frames
from pipelines.data.video_stream import ShownPackets, decode_one, video_stream

# Reject reasons: the text before the colon in ProbeResult.reason.
EMPTY_FILE = "empty file"
UNREADABLE = "unreadable file"
NOT_A_VIDEO = "not a video file"
TRUNCATED = "truncated file"
NO_VIDEO_STREAM = "no video stream"
NO_DECODABLE_FRAME = "no decodable frame"
TOO_SHORT = "too few frames"
ROTATED = "rotation metadata"
REJECT_KINDS = (
    EMPTY_FILE, UNREADABLE, NOT_A_VIDEO, TRUNCATED, NO_VIDEO_STREAM, NO_DECODABLE_FRAME, TOO_SHORT, ROTATED,
)  # fmt: skip

# The fewest frames a usable video has. Clips are sampled from consecutive frames and loop a
# shorter video (index mod n; pipelines.video.clips), so a 1-frame video gives a still clip: zero
# motion features and a CNN input without motion. At 8 frames the tiny profile's 8-frame feature
# clips and the 8 TSN segments of the cpu profile's ResNet-18 see 8 distinct frames (7 real
# steps); longer windows (32-frame features, R3D-18's frames 2 apart) loop it, as any short video.
MIN_FRAMES = 8

# Leading bytes of the containers we accept; a file that starts like one but does not open is
# damaged (usually cut short), anything else is not a video at all.
_CONTAINER_MAGIC = (
    (0, b"RIFF"),  # AVI
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska / WebM (EBML)
    (4, b"ftyp"),  # MP4 / MOV
    (4, b"moov"),
    (4, b"mdat"),
    (4, b"wide"),
    (4, b"free"),
)
# Headers are approximate: a file may miss max(1 frame, 2 %) of what its header announces
# before it counts as truncated.
_MISSING_FRAMES_TOLERANCE = 0.02
# The header's frame rate stands unless the timestamps' rate differs from it by more than this fraction.
RATE_TOLERANCE = 0.01
RATE_TRIM = 5  # percent of the gaps between frames left out at each end (see timestamp_rate)


@dataclass(frozen=True)
class ProbeResult:
    """What the check found; ``reason`` is empty for a usable file, else ``"<kind>: <detail>"``."""

    path: str
    reason: str = ""
    codec: str = ""
    frames: int = 0
    fps: float = 0.0
    width: int = 0
    height: int = 0
    # Built from the same demux pass (see pipelines.data.keyframes); None when the timestamps
    # cannot identify frames.
    keyframes: KeyframeIndex | None = field(default=None, compare=False, repr=False)
    pixel_aspect: float = 1.0  # a pixel's width over its height as players show it (see pixel_aspect)

    @property
    def ok(self) -> bool:
        return not self.reason

    @property
    def kind(self) -> str:
        return self.reason.split(":", 1)[0]


def _error_text(exc: BaseException) -> str:
    """FFmpeg's message without the file name PyAV appends (the path is in its own column)."""
    return getattr(exc, "strerror", None) or str(exc)


def _stream_kind(stream: av.stream.Stream) -> str:
    if stream.type == "video" and stream.disposition & av.stream.Disposition.attached_pic:
        return "video (an attached picture)"
    return str(stream.type)


class _Reject(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")


def _looks_like_container(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(16)
    return any(head[offset : offset + len(magic)] == magic for offset, magic in _CONTAINER_MAGIC)


def _declared_size_exceeds_file(path: Path, size: int) -> bool:
    """True when the container's own size fields promise more bytes than the file has (AVI's RIFF
    size, MP4's top-level boxes): the file was cut short."""
    with open(path, "rb") as handle:
        head = handle.read(12)
        if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
            return int.from_bytes(head[4:8], "little") + 8 > size
        if head[4:8] != b"ftyp":
            return False
        offset = 0
        while offset + 8 <= size:
            handle.seek(offset)
            box = handle.read(16)
            box_size = int.from_bytes(box[:4], "big")
            if box_size == 1 and len(box) == 16:  # 64-bit size follows the type
                box_size = int.from_bytes(box[8:16], "big")
            elif box_size == 0:  # box runs to the end of the file
                return False
            if box_size < 8:
                return False
            offset += box_size
        return offset > size


def _header_seconds(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return container.duration / av.time_base if container.duration else None


def display_rotation(first_frame: av.VideoFrame) -> int:
    """Degrees (0..359) a player rotates the frames by: the display matrix (MP4/MOV ``tkhd``, Matroska
    projection) that FFmpeg attaches to decoded frames; 0 when there is none."""
    return round(first_frame.rotation or 0) % 360


def timestamp_rate(index: KeyframeIndex | None, time_base: Fraction | None) -> float | None:
    """Frames per second from the shown frames' timestamps, or None without an index or a time base.

    The mean gap between consecutive frames, leaving out the longest and shortest 5 % of the gaps: a
    held last frame or a pause in a recording is one long gap, which must not slow the whole video
    down (a 10 s hold after 3 s at 30 fps would otherwise read as 8.9 fps)."""
    if index is None or time_base is None or index.frames < 2:
        return None
    gaps = np.sort(np.diff(index.pts))
    trim = len(gaps) * RATE_TRIM // 100
    seconds = float(gaps[trim : len(gaps) - trim].mean() * time_base)
    return 1 / seconds if seconds > 0 else None


def pixel_aspect(stream: av.VideoStream) -> float:
    """A pixel's width over its height as players show it: the container's sample aspect ratio (MP4
    ``pasp``, AVI, Matroska), else the codec's (H.264 VUI), else square. A DVD's 720x480 16:9 video
    has 32:27 pixels: its stored frames are squeezed horizontally."""
    for ratio in (stream.sample_aspect_ratio, stream.codec_context.sample_aspect_ratio):
        if ratio is not None and ratio.numerator > 0 and ratio.denominator > 0:
            return float(ratio)
    return 1.0


def _check_rotation(path: Path, first_frame: av.VideoFrame) -> None:
    degrees = display_rotation(first_frame)
    if degrees:
        upright = path.with_name(f"{path.stem}_upright.mp4")
        raise _Reject(
            ROTATED,
            f"the file asks players to rotate its frames by {degrees} degrees, which the loaders do not do (the "
            f"frames would be used sideways); write an upright copy with `ffmpeg -i {shlex.quote(str(path))} "
            f"-c:v libx264 -crf 18 {shlex.quote(str(upright))}` and replace the file with it",
        )


def _probe(path: Path) -> ProbeResult:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise _Reject(UNREADABLE, str(exc)) from None
    if size == 0:
        raise _Reject(EMPTY_FILE, "0 bytes")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except PermissionError as exc:
        raise _Reject(UNREADABLE, str(exc)) from None
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        if _looks_like_container(path):
            detail = f"the container header is there but does not open ({_error_text(exc)}); {size} bytes"
            raise _Reject(TRUNCATED, detail) from None
        raise _Reject(NOT_A_VIDEO, f"PyAV cannot open it ({_error_text(exc)})") from None
    with container:
        stream = video_stream(container)
        if stream is None:
            kinds = ", ".join(_stream_kind(stream) for stream in container.streams) or "none"
            if _declared_size_exceeds_file(path, size):
                detail = f"the container promises more than the {size} bytes present; streams found: {kinds}"
                raise _Reject(TRUNCATED, detail)
            raise _Reject(NO_VIDEO_STREAM, f"streams found: {kinds}")
        codec = stream.codec_context.codec.canonical_name  # "av1", not the decoder's name ("libdav1d")
        header_frames = int(stream.frames or 0)

        packets = 0  # demuxed
        shown = ShownPackets()
        last_gop: list[av.Packet] = []
        start_time: float | None = None
        end_time: float | None = None
        try:
            for packet in container.demux(stream):
                if packet.size == 0:  # the demuxer's end-of-stream marker
                    continue
                packets += 1
                shown.add(packet)
                if packet.is_keyframe:
                    last_gop = []
                last_gop.append(packet)
                if packet.pts is not None and packet.time_base is not None and not packet.is_discard:
                    start = float(packet.pts * packet.time_base)
                    end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                    start_time = start if start_time is None else min(start_time, start)
                    end_time = end if end_time is None else max(end_time, end)
        except (av.error.FFmpegError, OSError) as exc:
            raise _Reject(TRUNCATED, f"demuxing stopped after {packets} packets ({_error_text(exc)})") from None

        if packets == 0:
            raise _Reject(NO_DECODABLE_FRAME, f"the {codec} stream has no packets")
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        # Timestamps need not start at 0 (an MPEG-TS capture's clock, unwrapped to below 0 near its wrap).
        span = None if end_time is None or start_time is None else end_time - min(start_time, 0.0)
        if header_frames:
            if header_frames - packets > max(1.0, _MISSING_FRAMES_TOLERANCE * header_frames):
                raise _Reject(TRUNCATED, f"the header says {header_frames} frames, only {packets} are in the file")
        elif span is not None and (stream.duration or len(container.streams) == 1):
            # A container's duration is its longest stream's: compared only when it is the video's.
            duration = _header_seconds(container, stream)
            slack = max(1.5 / fps if fps > 0 else 0.0, _MISSING_FRAMES_TOLERANCE * (duration or 0.0))
            if duration and duration - span > slack:
                raise _Reject(TRUNCATED, f"the header says {duration:.2f} s, the packets end at {span:.2f} s")

        first, first_error = decode_one(stream.codec_context, shown.lead_in)
        if first is None:
            detail = f" ({first_error})" if first_error else ""
            raise _Reject(NO_DECODABLE_FRAME, f"{packets} {codec} packets, none decodes{detail}")
        shown.shown_from(first.pts)
        if shown.frames < MIN_FRAMES:
            raise _Reject(
                TOO_SHORT,
                f"{shown.frames} frame(s), at least {MIN_FRAMES} are needed (clips loop a "
                f"shorter video, so its motion features would be mostly zero); use a longer video",
            )
        shown_pts: list[int | None] = []
        last, last_error = decode_one(stream.codec_context, last_gop, last=True, shown_pts=shown_pts)
        if last is None:
            detail = f" ({last_error})" if last_error else ""
            raise _Reject(TRUNCATED, f"the first frame decodes, the last does not{detail}")

        identified = timestamps_identify_frames(path, container, stream, shown_pts)
        keyframes = index_from_packets(*shown.columns()) if identified else None
        measured = timestamp_rate(keyframes, stream.time_base)
        if measured is not None and not abs(measured - fps) <= RATE_TOLERANCE * measured:
            fps = measured
        if fps <= 0 and span:
            fps = shown.frames / span
        if fps <= 0:
            raise _Reject(NO_DECODABLE_FRAME, "no frame rate in the header and no timestamps")
        _check_rotation(path, first)
        return ProbeResult(
            path=str(path),
            codec=codec,
            frames=shown.frames,
            fps=round(fps, 6),
            width=first.width,
            height=first.height,
            keyframes=keyframes,
            pixel_aspect=round(pixel_aspect(stream), 6),
        )


def probe_video(path: str | os.PathLike[str]) -> ProbeResult:
    """Check one video; never raises for a bad file (the reason says what is wrong)."""
    try:
        return _probe(Path(path))
    except _Reject as reject:
        return ProbeResult(path=str(path), reason=str(reject))


def default_workers() -> int:
    return min(8, 2 * (os.cpu_count() or 1))


def preflight(
    paths: Sequence[str | os.PathLike[str]], *, workers: int | None = None, progress: bool = True
) -> list[ProbeResult]:
    """Check every video in a thread pool (PyAV releases the GIL); results in the order of ``paths``."""
    results: list[ProbeResult | None] = [None] * len(paths)
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        futures = {pool.submit(probe_video, path): index for index, path in enumerate(paths)}
        with progress_bar(total=len(paths), desc="pre-flight", unit="video", enabled=progress, leave=False) as bar:
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update()
    return [result for result in results if result is not None]
