"""Videos as editing tools leave them: a cut made by stream copy (``ffmpeg -ss T -i in.mp4 -c copy``).

Such a cut starts at the keyframe before ``T``; the frames before ``T`` stay in the file, with
negative timestamps, and an MP4 edit list tells players (and FFmpeg's decoder) not to show them.
"""

from __future__ import annotations

from pathlib import Path

import av


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
