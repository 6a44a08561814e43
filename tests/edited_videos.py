"""Videos as editing tools and capture devices leave them: a cut made by stream copy (``ffmpeg -ss T
-i in.mp4 -c copy``), a transport stream recorded from mid-GOP, a still track ahead of the video.

A stream-copied cut starts at the keyframe before ``T``; the frames before ``T`` stay in the file, with
negative timestamps, and an MP4 edit list tells players (and FFmpeg's decoder) not to show them.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def stream_copied_cut(source: Path, target: Path, start_frame: int) -> int:
    """Remux ``source`` (one video stream) into the MP4 ``target`` from ``start_frame`` on, without
    re-encoding, as ``ffmpeg -ss`` with ``-c copy`` does; returns the packets of the discarded lead-in."""
    with av.open(str(source)) as source_file:
        stream = source_file.streams.video[0]
        cut = sorted(packet.pts for packet in source_file.demux(stream) if packet.size)[start_frame]
        source_file.seek(cut, stream=stream, backward=True)
        lead_in = 0
        with av.open(str(target), "w", format="mp4") as target_file:
            copy = target_file.add_stream_from_template(stream)
            for packet in source_file.demux(stream):
                if packet.dts is None:  # the end-of-stream marker
                    continue
                assert packet.pts is not None
                lead_in += packet.pts < cut
                packet.pts -= cut
                packet.dts -= cut
                packet.stream = copy
                target_file.mux(packet)
    return lead_in


def remux(source: Path, target: Path, container_format: str, options: dict[str, str] | None = None) -> None:
    """Copy the video stream of ``source`` into ``target`` (``container_format``, muxer ``options``)."""
    with av.open(str(source)) as source_file:
        stream = source_file.streams.video[0]
        with av.open(str(target), "w", format=container_format, options=options or {}) as target_file:
            copy = target_file.add_stream_from_template(stream)
            for packet in source_file.demux(stream):
                if packet.dts is None:  # the end-of-stream marker
                    continue
                packet.stream = copy
                target_file.mux(packet)


def transport_stream_cut(source: Path, target: Path, ts_packets: int) -> None:
    """An MPEG-TS capture that starts mid-GOP: ``source`` (MPEG-TS) without its first ``ts_packets``
    188-byte transport packets (as if recording began there)."""
    target.write_bytes(source.read_bytes()[188 * ts_packets :])


def still_track_first(video: Path, target: Path) -> None:
    """A Matroska file whose first video stream is a one-frame still image, the video (``video``'s
    stream, copied) second."""
    with av.open(str(video)) as source_file:
        stream = source_file.streams.video[0]
        with av.open(str(target), "w", format="matroska") as target_file:
            still = target_file.add_stream("mjpeg", rate=1)
            still.width, still.height, still.pix_fmt = 64, 48, "yuvj420p"
            copy = target_file.add_stream_from_template(stream)
            picture = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 200, np.uint8), format="rgb24")
            target_file.mux(still.encode(picture.reformat(format="yuvj420p")))
            target_file.mux(still.encode(None))
            for packet in source_file.demux(stream):
                if packet.dts is None:
                    continue
                packet.stream = copy
                target_file.mux(packet)
