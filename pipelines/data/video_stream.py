"""The video of a file: which stream it is, and which of its packets are frames.

The video stream is FFmpeg's best video stream (``av_find_best_stream``) that is not an attached
picture: cover art, or a still image track, may come before the video.

A decoder does not show every packet it is given. Packets an MP4/MOV edit list marks as discarded
(the lead-in of a cut made with ``ffmpeg -ss T -c copy``) are decoded as references and never
shown; packets before the first keyframe of a stream that starts mid-GOP (an MPEG-TS capture cut
anywhere) are dropped by the decoder, with the frames that refer to them. Frame ``i`` of a video is
the ``i``-th frame a sequential decode shows, so frame counts and keyframe indexes keep only the
packets that are not discarded and whose pts is at least that of the first frame the decoder shows
(:class:`ShownPackets`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import av

# Which packets are frames: 1, every demuxed packet; 2, the packets the decoder shows (above); 3, the
# same, now also what a seek returns where 2 could return other frames (an AVI with B-frames, whose
# timestamps do not identify frames; a seek to an intra-refresh recovery point). Stored features,
# decoded-clip cache entries and CNN results depend on it, so each records it.
FRAMES_DEFINITION = 3
# Packets shown from the first keyframe on that are decoded to find the first shown frame (decoders
# with frame delay, B-frames or threads, need a few), and at most this many others (before it, or
# discarded by an edit list).
FIRST_FRAME_PACKETS = 64
LEAD_IN_LIMIT = 600


def video_stream(container: av.container.InputContainer) -> av.VideoStream | None:
    """The stream a file's frames are read from; None when it has no video (but pictures)."""
    moving = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if not moving:
        return None
    best = container.streams.best("video")
    return best if best in moving else moving[0]


def video_stream_count(path: str | os.PathLike[str]) -> int:
    """How many video streams (attached pictures included) ``path`` has; 0 when it cannot be opened."""
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            return len(container.streams.video)
    except (av.FFmpegError, OSError):
        return 0


class ShownPackets:
    """Timestamps of a stream's frames, fed its packets in demux order (:meth:`add`), then told the
    first frame its decoder shows (:meth:`shown_from`, with the first frame :attr:`lead_in` decodes to)."""

    def __init__(self) -> None:
        self.pts: list[int | None] = []
        self.dts: list[int | None] = []
        self.keyframe: list[bool] = []
        self.size: list[int] = []
        self.lead_in: list[av.Packet] = []  # what a decoder needs for the first shown frame
        self._keyed = False
        self._from_keyframe = 0  # packets shown from the first keyframe on

    def add(self, packet: av.Packet) -> None:
        """One demuxed packet (not the end-of-stream marker)."""
        if self._from_keyframe < FIRST_FRAME_PACKETS and len(self.lead_in) < LEAD_IN_LIMIT + FIRST_FRAME_PACKETS:
            self.lead_in.append(packet)
        self._keyed = self._keyed or bool(packet.is_keyframe)
        if packet.is_discard:
            return
        self._from_keyframe += self._keyed
        self.pts.append(packet.pts)
        self.dts.append(packet.dts)
        self.keyframe.append(bool(packet.is_keyframe))
        self.size.append(packet.size)

    def shown_from(self, first_pts: int | None) -> None:
        """Drop the packets shown before ``first_pts``, the pts of the first frame a sequential
        decode shows (None: unknown, keep all)."""
        if first_pts is None:
            return
        keep = [n for n, pts in enumerate(self.pts) if pts is None or pts >= first_pts]
        self.pts = [self.pts[n] for n in keep]
        self.dts = [self.dts[n] for n in keep]
        self.keyframe = [self.keyframe[n] for n in keep]
        self.size = [self.size[n] for n in keep]

    @property
    def frames(self) -> int:
        return len(self.pts)

    def columns(self) -> tuple[Sequence[int | None], Sequence[int | None], Sequence[bool], Sequence[int]]:
        """Each packet's pts, dts, keyframe flag and size (bytes), in demux order."""
        return self.pts, self.dts, self.keyframe, self.size


def decode_one(
    codec_context: av.CodecContext,
    packets: Sequence[av.Packet],
    *,
    last: bool = False,
    shown_pts: list[int | None] | None = None,
) -> tuple[av.VideoFrame | None, str]:
    """Decode ``packets`` from a fresh decoder state: the first (or last) frame they give, and
    FFmpeg's message of the last decoder error ("" when none). ``shown_pts`` collects the pts of
    every frame shown, in the order shown."""
    codec_context.flush_buffers()
    found: av.VideoFrame | None = None
    error = ""
    for packet in [*packets, None]:
        try:
            frames = codec_context.decode(packet)
        except (av.FFmpegError, ValueError) as exc:
            error = getattr(exc, "strerror", None) or str(exc)  # without the file name PyAV appends
            continue
        if shown_pts is not None:
            shown_pts.extend(frame.pts for frame in frames)
        if frames:
            found = frames[-1] if last else frames[0]
            if not last:
                break
    codec_context.flush_buffers()
    return found, error
