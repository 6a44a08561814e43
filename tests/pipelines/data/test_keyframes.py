"""The keyframe index: frame numbers from timestamps, keyframes in presentation order, refusal of
unusable timestamps, storage with the run and re-indexing of changed videos."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np

from pipelines.data.keyframes import (
    KeyframeIndexes,
    index_from_packets,
    load_keyframe_indexes,
    save_keyframe_indexes,
    scan_keyframe_index,
)
from pipelines.data.preflight import probe_video
from pipelines.video.codecs import write_video
from pipelines.video.decode import decode_at, decode_frames
from tests.edited_videos import stream_copied_cut
from tests.pipelines.video.test_decode import moving_frames


def test_frame_numbers_follow_presentation_order() -> None:
    """B-frames: packets in decode order (I P B B P B B) with their pts; frame i is the i-th pts."""
    pts = [0, 3, 1, 2, 6, 4, 5]
    dts = [-1, 0, 1, 2, 3, 4, 5]
    sizes = [900, 300, 40, 50, 800, 60, 70]
    index = index_from_packets(pts, dts, [True, False, False, False, True, False, False], sizes)
    assert index is not None and index.frames == 7
    np.testing.assert_array_equal(index.keyframes, [0, 6])
    np.testing.assert_array_equal(index.seek_targets, [[0, -1], [6, 3]])  # pts, then dts
    np.testing.assert_array_equal(index.key_sizes, [900, 800])
    assert [index.frame_number(p) for p in (0, 3, 5, 6, 7, None)] == [0, 3, 5, 6, None, None]
    assert [index.keyframe_before(frame) for frame in (0, 5, 6, 40)] == [0, 0, 1, 1]


def test_unusable_timestamps_give_no_index() -> None:
    sizes = [10, 10, 10]
    assert index_from_packets([0, None, 2], [0, 1, 2], [True, False, False], sizes) is None
    assert index_from_packets([0, 1, 1], [0, 1, 2], [True, False, False], sizes) is None
    assert index_from_packets([], [], [], []) is None
    late = index_from_packets([5, 3, 4], [2, 3, 4], [False, False, True], sizes)  # the keyframe is frame 1
    assert late is not None and late.keyframe_before(0) is None and late.keyframe_before(2) == 0


def test_the_probe_indexes_the_video_and_the_index_survives_storage(tmp_path: Path) -> None:
    video = tmp_path / "v.mp4"
    frames = np.random.default_rng(0).integers(0, 255, (30, 32, 48, 3), dtype=np.uint8)
    write_video(video, frames, 25, "h264", options={"g": "10"})
    probe = probe_video(video)
    scanned = scan_keyframe_index(video)
    assert probe.ok and probe.keyframes is not None and scanned is not None
    assert probe.keyframes.frames == probe.frames == 30
    np.testing.assert_array_equal(probe.keyframes.pts, scanned.pts)
    np.testing.assert_array_equal(probe.keyframes.keyframes, scanned.keyframes)

    stored = tmp_path / "keyframes.npz"
    save_keyframe_indexes(stored, {str(video): probe.keyframes})
    ((signature, loaded),) = load_keyframe_indexes(stored).values()
    assert signature == (video.stat().st_size, video.stat().st_mtime_ns)
    for name in ("pts", "keyframes", "seek_targets", "key_sizes"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(probe.keyframes, name))

    indexes = KeyframeIndexes(stored)
    assert indexes.get(str(video)) is not None and indexes.scanned == 0  # from the run's file
    os.utime(video, ns=(video.stat().st_atime_ns, video.stat().st_mtime_ns + 10**9))
    fresh = KeyframeIndexes(stored)
    assert fresh.get(str(video)) is not None and fresh.scanned == 1  # the video changed: indexed again


def test_a_missing_or_foreign_index_file_is_ignored(tmp_path: Path) -> None:
    assert load_keyframe_indexes(tmp_path / "missing.npz") == {}
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    assert load_keyframe_indexes(tmp_path / "bad.npz") == {}
    assert KeyframeIndexes(tmp_path / "bad.npz").get(str(tmp_path / "nothing.mp4")) is None


def test_frames_an_edit_list_discards_are_not_indexed(tmp_path: Path) -> None:
    """A stream-copied cut keeps the frames before the cut point, marked discarded: the decoder uses
    them as references and never shows them, so the probe and the index leave them out."""
    source, cut = tmp_path / "source.mp4", tmp_path / "cut.mp4"
    frames = np.random.default_rng(0).integers(0, 255, (40, 32, 48, 3), dtype=np.uint8)
    write_video(source, frames, 25, "h264", options={"g": "10"})
    source_index = scan_keyframe_index(source)
    assert source_index is not None
    key = int(source_index.keyframes[source_index.keyframe_before(15)])
    assert stream_copied_cut(source, cut, 15) == 15 - key > 0  # from the keyframe before the cut point
    probe, scanned = probe_video(cut), scan_keyframe_index(cut)
    assert probe.ok and probe.keyframes is not None and scanned is not None
    assert probe.frames == scanned.frames == len(decode_frames(cut)) == 25
    np.testing.assert_array_equal(probe.keyframes.pts, scanned.pts)
    later = source_index.keyframes[source_index.keyframes > 15]
    np.testing.assert_array_equal(scanned.keyframes, later - 15)  # the discarded keyframe is no start


def write_h264_avi(path: Path, frames: np.ndarray) -> Path:
    """H.264 with B-frames in AVI (as ``ffmpeg -c:v libx264 out.avi`` writes it): AVI keeps no pts."""
    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream("libx264", rate=25, options={"g": "12", "bf": "3"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_an_avi_whose_timestamps_do_not_follow_display_order_gets_no_index(tmp_path: Path) -> None:
    """AVI with B-frames: the demuxer guesses pts in decode order, and the decoder shows frames with
    pts 1, 4, 3, 5, 2, ...; an index of them would pick the wrong frames after a seek. The probe and
    the scan give no index, and clips decode from the start, frame-exact. FFmpeg's own MPEG-4 with
    B-frames in AVI shows its frames in pts order and keeps its index."""
    frames = moving_frames(48)  # smooth motion: x264 uses B-frames (on noise it would not)
    path = write_h264_avi(tmp_path / "h264.avi", frames)
    with av.open(str(path)) as container:
        shown = [frame.pts for frame in container.decode(video=0)]
    assert shown != sorted(shown)
    probe = probe_video(path)
    assert probe.ok and probe.keyframes is None and scan_keyframe_index(path) is None
    full = decode_frames(path)
    decoded = decode_at(path, [37, 41, 30], index=probe.keyframes)
    assert decoded.route == "sequential"
    np.testing.assert_array_equal(decoded.read([37, 41, 30]), full[[37, 41, 30]])
    mpeg4 = tmp_path / "mpeg4.avi"
    write_video(mpeg4, frames, 25, "mpeg4", options={"g": "12", "bf": "2"})
    assert probe_video(mpeg4).keyframes is not None and scan_keyframe_index(mpeg4) is not None
