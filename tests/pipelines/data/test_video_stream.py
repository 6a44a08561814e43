"""Which stream of a file is the video, and which of its packets are frames: what a decoder shows."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from pipelines.data.preflight import probe_video
from pipelines.data.video_stream import ShownPackets, decode_one, video_stream, video_stream_count
from pipelines.video.codecs import write_video
from pipelines.video.decode import decode_frames
from tests.edited_videos import remux, still_track_first, transport_stream_cut


def moving_square(count: int) -> np.ndarray:
    frames = np.zeros((count, 48, 64, 3), np.uint8)
    for t in range(count):
        frames[t, 16:32, (2 * t) % 48 : (2 * t) % 48 + 16] = 255
    return frames


def test_the_video_is_found_behind_a_still_track(tmp_path: Path) -> None:
    source, both = tmp_path / "source.mp4", tmp_path / "still_first.mkv"
    write_video(source, moving_square(20), 25, "h264")
    still_track_first(source, both)
    with av.open(str(both)) as container:
        assert container.streams.video[0].codec_context.name == "mjpeg"
        chosen = video_stream(container)
        assert chosen is not None and chosen.codec_context.name == "h264"
    result = probe_video(both)
    assert result.ok, result.reason
    assert (result.codec, result.frames, result.width, result.height) == ("h264", 20, 64, 48)
    assert decode_frames(both).shape == (20, 48, 64, 3)
    counts = [video_stream_count(path) for path in (both, source, tmp_path / "gone.mkv")]
    assert counts == [2, 1, 0]  # the loader does not let a file with a still track break DALI's route


def test_packets_before_the_first_shown_frame_are_no_frames(tmp_path: Path) -> None:
    """A transport stream recorded from mid-GOP: the decoder drops the packets before the first
    keyframe; what is left are the frames a sequential decode shows, in order."""
    source, whole, recorded = tmp_path / "source.mp4", tmp_path / "whole.ts", tmp_path / "recorded.ts"
    write_video(source, moving_square(72), 25, "h264", options={"g": "12", "bf": "3"})
    remux(source, whole, "mpegts")
    transport_stream_cut(whole, recorded, 60)
    shown = ShownPackets()
    with av.open(str(recorded)) as container:
        stream = video_stream(container)
        assert stream is not None
        for packet in container.demux(stream):
            if packet.size:
                shown.add(packet)
        demuxed = shown.frames
        first, error = decode_one(stream.codec_context, shown.lead_in)
    assert first is not None and error == ""
    shown.shown_from(first.pts)
    with av.open(str(recorded)) as container:
        decoded_pts = [frame.pts for frame in container.decode(video=0)]
    assert demuxed > shown.frames == len(decoded_pts)
    assert sorted(pts for pts in shown.pts if pts is not None) == decoded_pts
