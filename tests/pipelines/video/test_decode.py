"""The seeking decoder gives exactly the frames of a full sequential decode, on the codecs and
container quirks that make seeking hard (B-frames, open GOPs, AVI timestamps, an MP4 edit list's
discarded lead-in, an MPEG program stream's parser out of step after a seek), with a bounded
amount of decoding per clip; without a usable index it decodes sequentially and says so."""

from __future__ import annotations

import itertools
import os
from dataclasses import replace
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from av.video.frame import PictureType
from torchvision.transforms.v2 import functional as tvf

from pipelines.data.keyframes import scan_keyframe_index
from pipelines.data.preflight import probe_video
from pipelines.video.codecs import codec_extension, write_video
from pipelines.video.decode import DecodeError, FrameShrinker, decode_at, decode_frames, frame_to_rgb
from tests.edited_videos import remux, stream_copied_cut, transport_stream_cut

FRAMES = 72
GOP = 12
# Encoder settings that make seeking matter: a keyframe every 12 frames (the demo's defaults have
# few keyframes), with B-frames where the codec has them.
ENCODINGS = {
    "h264-bframes": ("h264", {"g": str(GOP), "bf": "3"}),
    "h264-open-gop": ("h264", {"x264-params": f"keyint={GOP}:min-keyint={GOP}:open-gop=1:bframes=3:scenecut=0"}),
    "mpeg4-avi": ("mpeg4", {"g": str(GOP)}),  # UCF101-like: qmin/qmax from the codec's defaults
    "mpeg4-avi-bframes": ("mpeg4", {"g": str(GOP), "bf": "2"}),
    "vp9": ("vp9", {"g": str(GOP)}),
    "mjpeg": ("mjpeg", {}),  # every frame a keyframe
    # AV1 (SVT-AV1) in Matroska: hidden frames, and packets that only show one of them.
    "av1": ("av1", {"g": str(GOP), "preset": "12"}),
    # MPEG-2 in an MPEG program stream (a DVD's .vob, .mpg from camcorders): after a seek the parser
    # gives the first pictures the next one's pts. 320x240 textured frames: a picture spans packs.
    "mpeg2-program-stream": ("mpeg2video", {"g": str(GOP), "bf": "2"}),
    # Intra-only at a constant bit rate: every picture a keyframe of one size, so the picture split
    # off after a seek with the next one's pts also has its flag and size.
    "mpeg2-program-stream-intra": (
        "mpeg2video",
        {"g": "1", "b": "3M", "minrate": "3M", "maxrate": "3M", "bufsize": "120k"},
    ),
}
# "h264-bframes" cut by stream copy 6 frames after a keyframe (ffmpeg -ss T -c copy): the file starts
# at that keyframe, an edit list discards the 6 frames before T, and the demuxer seeks a keyframe early.
CUT = "h264-stream-copied-cut"
CUT_AT = GOP + 6
# "h264-bframes" in MPEG-TS, recorded from mid-GOP: packets before the first keyframe that the
# decoder drops (with the frames that refer to them).
MID_GOP = "h264-ts-recorded-mid-gop"
MID_GOP_TS_PACKETS = 60  # transport packets missing from the start


def frame_count(name: str, path: Path) -> int:
    """Frames of the video (what a sequential decode shows)."""
    if name == MID_GOP:
        return len(decode_frames(path))  # fewer than its packets, checked below
    return FRAMES - CUT_AT if name == CUT else FRAMES


def moving_frames(count: int, height: int = 48, width: int = 64) -> np.ndarray:
    """A square moving across a gradient that changes every frame: neighbouring frames differ."""
    yy, xx = np.mgrid[0:height, 0:width]
    frames = np.empty((count, height, width, 3), np.uint8)
    for t in range(count):
        frames[t, ..., 0] = (xx * 3 + t * 5) % 256
        frames[t, ..., 1] = (yy * 4 + t * 3) % 256
        frames[t, ..., 2] = (t * 9) % 256
        x0 = (2 * t) % (width - 10)
        frames[t, 10:22, x0 : x0 + 10] = 255
    return frames


def write_av1(path: Path, frames: np.ndarray, options: dict[str, str]) -> None:
    """``frames`` as AV1 in Matroska at 25 fps (SVT-AV1, PyAV's AV1 encoder)."""
    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream("libsvtav1", rate=25, options=options)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def write_program_stream(path: Path, frames: np.ndarray, options: dict[str, str]) -> None:
    """``frames`` as MPEG-2 in an MPEG program stream (DVD flavour) at 25 fps."""
    with av.open(str(path), "w", format="vob", options={"muxrate": "10M"}) as container:
        stream = container.add_stream("mpeg2video", rate=25, options=options)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for number, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = number
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


@pytest.fixture(scope="module", params=[*ENCODINGS, CUT, MID_GOP])
def encoded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    codec, options = ENCODINGS["h264-bframes" if request.param in (CUT, MID_GOP) else request.param]
    if codec == "av1":  # not a codec of write_video (the demo's): written here
        path = tmp_path_factory.mktemp(request.param) / "v.mkv"
        write_av1(path, moving_frames(FRAMES), options)
        return request.param, path
    if codec == "mpeg2video":
        path = tmp_path_factory.mktemp(request.param) / "v.vob"
        write_program_stream(path, textured_motion(FRAMES, 240, 320), options)
        return request.param, path
    path = tmp_path_factory.mktemp(request.param) / f"v{codec_extension(codec)}"
    write_video(path, moving_frames(FRAMES), 25, codec, options=options)
    if request.param == CUT:
        source, path = path, path.with_name("cut.mp4")
        assert stream_copied_cut(source, path, CUT_AT) == CUT_AT - GOP
    if request.param == MID_GOP:
        source, whole, path = path, path.with_name("whole.ts"), path.with_name("mid_gop.ts")
        remux(source, whole, "mpegts")
        transport_stream_cut(whole, path, MID_GOP_TS_PACKETS)
    return request.param, path


def picture_types(path: Path) -> set[PictureType]:
    with av.open(str(path)) as container:
        return {PictureType(frame.pict_type) for frame in container.decode(video=0)}


def test_the_encodings_have_what_makes_seeking_hard(encoded: tuple[str, Path]) -> None:
    name, path = encoded
    index = scan_keyframe_index(path)
    assert index is not None and index.frames == frame_count(name, path)
    assert len(index.keyframes) >= frame_count(name, path) // GOP  # seeking has somewhere to go
    if "bframes" in name or "open-gop" in name or name in (CUT, MID_GOP):
        assert PictureType.B in picture_types(path)  # frames are stored out of presentation order
    if name == CUT:
        with av.open(str(path)) as container:
            assert sum(packet.is_discard for packet in container.demux(video=0)) == CUT_AT - GOP
            stream = container.streams.video[0]
            container.seek(int(index.seek_targets[1][0]), stream=stream, backward=True)
            landed = next(packet for packet in container.demux(stream) if packet.size)
            assert index.frame_number(landed.pts) == index.keyframes[0]  # a keyframe early
    if name == MID_GOP:
        with av.open(str(path)) as container:
            packets = [packet for packet in container.demux(video=0) if packet.size]
        assert not packets[0].is_keyframe and len(packets) > index.frames  # the decoder drops some
    if name == "av1":
        assert probe_video(path).codec == "av1"  # the codec, not PyAV's decoder for it (libdav1d)
    if name.startswith("mpeg2-program-stream"):  # after some seeks the packets are not a sequential demux's
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            sequential = [(p.pts, p.is_keyframe, p.size) for p in container.demux(stream) if p.size]
            out_of_step = 0
            for target in index.seek_targets[1:, 1]:
                container.seek(int(target), stream=stream, backward=True)
                packets = (p for p in container.demux(stream) if p.size)
                after = [(p.pts, p.is_keyframe, p.size) for p in itertools.islice(packets, 4)]
                out_of_step += all(after != sequential[n : n + 4] for n in range(len(sequential)))
            assert out_of_step > 0


def test_seeking_gives_the_frames_of_a_sequential_decode(encoded: tuple[str, Path]) -> None:
    """Every window position (clip-like: every 2nd frame; scattered frames; one frame), with one and
    two decoder threads: the same pixels as decoding everything from frame 0."""
    name, path = encoded
    frames = frame_count(name, path)
    full = decode_frames(path)
    assert len(full) == frames
    index = scan_keyframe_index(path)
    routes = set()
    for threads in (1, 2):
        for start in range(0, frames - 8):
            for wanted in (np.arange(start, start + 8, 2), np.array([start, frames - 1, start + 5, start]), [start]):
                decoded = decode_at(path, wanted, index=index, codec_threads=threads)
                routes.add(decoded.route)
                np.testing.assert_array_equal(decoded.read(wanted), full[wanted], err_msg=f"{name} {wanted}")
    assert routes == {"seek", "start"}


def test_a_clip_costs_the_same_anywhere_in_the_video(encoded: tuple[str, Path]) -> None:
    """Decoding starts at the keyframe before the clip: a late clip decodes no more frames than an
    early one (at most a GOP before it, the clip's span and the B-frame delay)."""
    name, path = encoded
    index = scan_keyframe_index(path)
    frames = frame_count(name, path)
    late = decode_at(path, np.arange(frames - 10, frames, 2), index=index, codec_threads=1)
    assert late.route == "seek" and late.frames_decoded <= GOP + 10 + 4


def textured_motion(count: int, height: int, width: int) -> np.ndarray:
    """A blurred random texture sliding 3 px down and 5 px right per frame: detail everywhere."""
    texture = np.random.default_rng(0).integers(0, 256, (2 * height, 2 * width, 3), dtype=np.uint8)
    texture = cv2.GaussianBlur(texture.astype(np.float32), (0, 0), 1.5).astype(np.uint8)
    return np.stack([texture[(3 * t) % height :][:height, (5 * t) % width :][:, :width] for t in range(count)])


def test_an_intra_refresh_stream_is_never_sought_from_a_recovery_point(tmp_path: Path) -> None:
    """x264's periodic intra refresh (some cameras, low-latency streams): no IDR frame after the
    first, and the recovery points, P-frames, are flagged as keyframes. From one, FFmpeg holds
    frames back or shows wrong ones (here: one window of 64 without the check). A seek is trusted
    only from a keyframe that decodes as an intra frame, so every clip is frame-exact."""
    path = tmp_path / "intra_refresh.mp4"
    options = {"x264-params": f"keyint={GOP}:intra-refresh=1:bframes=0"}
    write_video(path, textured_motion(FRAMES, 240, 320), 25, "h264", options=options)
    index, full = scan_keyframe_index(path), decode_frames(path)
    assert index is not None and len(index.keyframes) >= FRAMES // GOP
    routes = set()
    for start in range(FRAMES - 8):
        wanted = np.arange(start, start + 8, 2)
        decoded = decode_at(path, wanted, index=index, codec_threads=1)
        routes.add(decoded.route)
        np.testing.assert_array_equal(decoded.read(wanted), full[wanted], err_msg=str(wanted))
    assert "sequential" in routes  # seeks to recovery points refused


@pytest.mark.parametrize("gop, cut_at", [(GOP, CUT_AT), (100, 180)])  # a lead-in of 6 and of 80 frames
def test_a_cut_seeks_like_its_source(tmp_path: Path, gop: int, cut_at: int) -> None:
    """The demuxer lands a keyframe early in a stream-copied cut (and on its discarded lead-in for the
    first keyframe): a clip still decodes from the keyframe before it, as in the uncut source. A
    long lead-in (a cut far into a long GOP) does not count against the packets a seek may skip."""
    source, cut = tmp_path / "source.mp4", tmp_path / "cut.mp4"
    options = {"x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=3"}
    write_video(source, moving_frames(cut_at + 2 * gop), 25, "h264", options=options)
    assert stream_copied_cut(source, cut, cut_at) == cut_at % gop
    source_index, cut_index = scan_keyframe_index(source), scan_keyframe_index(cut)
    assert source_index is not None and cut_index is not None
    for start in range(int(cut_index.keyframes[0]), cut_index.frames - 8):
        window = np.arange(start, start + 8, 2)
        in_cut = decode_at(cut, window, index=cut_index, codec_threads=1)
        in_source = decode_at(source, window + cut_at, index=source_index, codec_threads=1)
        assert in_cut.route == in_source.route == "seek"
        assert in_cut.frames_decoded == in_source.frames_decoded
    # Seeking by the first keyframe's dts lands on the discarded lead-in (ffmpeg's own cuts land
    # there by its pts too): the lead-in is skipped, however long, and the clip still seeks.
    by_dts = replace(cut_index, seek_targets=cut_index.seek_targets[:, [1, 1]])
    first = int(cut_index.keyframes[0])
    with av.open(str(cut)) as container:
        stream = container.streams.video[0]
        container.seek(int(by_dts.seek_targets[0][0]), stream=stream, backward=True)
        assert next(packet for packet in container.demux(stream) if packet.size).is_discard
    window = np.arange(first, first + 8, 2)
    decoded = decode_at(cut, window, index=by_dts, codec_threads=1)
    assert decoded.route == "seek"
    np.testing.assert_array_equal(decoded.read(window), decode_frames(cut)[window])


def test_every_clip_of_a_video_whose_size_changes_has_one_size(tmp_path: Path) -> None:
    """Two transport-stream recordings of different sizes joined end to end: clips after the change
    come at the size the stream's header gives (its first frames'), as clips before it."""
    parts = []
    for number, (height, width) in enumerate(((48, 64), (36, 48))):
        encoded, part = tmp_path / f"part{number}.mp4", tmp_path / f"part{number}.ts"
        frames = moving_frames(40, height=height, width=width)
        write_video(encoded, frames, 25, "h264", options=ENCODINGS["h264-bframes"][1])
        remux(encoded, part, "mpegts", options={"output_ts_offset": str(2.0 * number)})
        parts.append(part.read_bytes())
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(parts))
    index = scan_keyframe_index(joined)
    assert index is not None and index.frames == 80
    for short_side in (None, 24):
        shapes = {decode_at(joined, [start, start + 2], short_side, index=index).shape for start in range(0, 78, 6)}
        assert shapes == {(2, 48, 64, 3) if short_side is None else (2, 24, 32, 3)}


def test_frames_are_shrunk_to_the_short_side(encoded: tuple[str, Path]) -> None:
    _, path = encoded
    decoded = decode_at(path, [30, 32], 24, index=scan_keyframe_index(path))
    assert decoded.read([30, 32]).shape == (2, 24, 32, 3)


@pytest.mark.parametrize("codec", ["mpeg4", "mjpeg"])  # shrunk as I420, and as RGB (full-range MJPEG)
def test_frames_shrink_like_torchvision_antialiased_resize(tmp_path: Path, codec: str) -> None:
    """The short-side shrink is torchvision's ``Resize(antialias=True)``, the preprocessing the
    pretrained weights expect: fine grey detail (no chroma, whose subsampling differs by route)
    comes out within one grey level of it on average; an area filter is 1.6 away."""
    rng = np.random.default_rng(0)
    grey = np.stack([cv2.GaussianBlur(f, (0, 0), 1.0) for f in rng.integers(0, 255, (3, 240, 320), dtype=np.uint8)])
    path = tmp_path / f"grey{codec_extension(codec)}"
    write_video(path, np.repeat(grey[..., None], 3, axis=-1), 25, codec, options={"qscale": "1"})
    shrunk = decode_at(path, [0, 1, 2], 128, index=scan_keyframe_index(path)).read([0, 1, 2]).astype(int)
    height, width = shrunk.shape[1:3]
    assert height == 128 and width in (171, 172)  # 170.7, rounded (up to even for I420)
    full = torch.from_numpy(decode_frames(path, [0, 1, 2])).permute(0, 3, 1, 2)
    expected = tvf.resize(full, [height, width], antialias=True).permute(0, 2, 3, 1).numpy().astype(int)
    assert np.abs(shrunk - expected).mean() < 1.0


def native_threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(
    not os.path.isdir("/proc/self/task") or len(os.sched_getaffinity(0)) < 2,
    reason="counts the process's threads in /proc (Linux), and swscale starts extra ones only on 2+ cores",
)
@pytest.mark.parametrize("codec", ["mpeg4", "mjpeg"])  # I420 and RGB (full-range MJPEG) conversions
def test_frames_are_converted_without_extra_threads(tmp_path: Path, codec: str) -> None:
    """swscale (PyAV >= 17) starts a thread per core for each conversion context unless told not
    to, and wakes them for every frame: on small frames the hand-offs cost more CPU than the work,
    and the loader already converts several videos at once. No conversion starts a thread."""
    path = tmp_path / f"v{codec_extension(codec)}"
    write_video(path, moving_frames(4, height=240, width=320), 25, codec)
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        cv2.cvtColor(np.zeros((360, 320), np.uint8), cv2.COLOR_YUV2RGB_I420)  # OpenCV's own pool starts
        before = native_threads()
        shrink = FrameShrinker(128)
        assert shrink(frame).shape[0] > 0 and shrink.layout is not None  # the shrinker keeps its context
        assert shrink.layout.pixel_format == ("i420" if codec == "mpeg4" else "rgb24")
        assert frame_to_rgb(frame).shape == (240, 320, 3)  # the frame keeps the context of to_ndarray
        assert native_threads() == before


def test_without_a_usable_index_frames_are_decoded_sequentially(tmp_path: Path) -> None:
    """No index, an index of another file (a stale one), or one whose timestamps stop matching the
    file after the keyframe: the sequential route, counted as such, and still the right frames,
    never the frames the wrong index points at. Another file's keyframe packets have other sizes, so
    its seek is refused before anything is decoded; the frames a failed seek decoded count too (it
    stops at the first frame whose timestamp the index does not have)."""
    path, other = tmp_path / "a.mp4", tmp_path / "b.webm"
    write_video(path, moving_frames(FRAMES), 25, "h264", options={"g": str(GOP)})
    write_video(other, moving_frames(FRAMES)[::-1], 25, "vp9", options={"g": str(GOP)})
    full = decode_frames(path)
    wanted = np.array([50, 52, 54])
    own = scan_keyframe_index(path)
    assert own is not None
    shifted = own.pts.copy()
    shifted[52:] += 10**6  # frames from 52 on have timestamps the file does not
    diverging = replace(own, pts=shifted)
    for index, seek_decodes in ((None, False), (scan_keyframe_index(other), False), (diverging, True)):
        decoded = decode_at(path, wanted, index=index)
        assert decoded.route == "sequential"
        if seek_decodes:
            assert 55 < decoded.frames_decoded <= 55 + GOP
        else:
            assert decoded.frames_decoded == 55
        np.testing.assert_array_equal(decoded.read(wanted), full[wanted])


def test_a_short_tail_reads_as_the_last_frame_and_a_long_one_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "a.avi"
    write_video(path, moving_frames(40), 25, "mpeg4", options={"g": str(GOP)})
    full, index = decode_frames(path), scan_keyframe_index(path)
    for given in (index, None):
        np.testing.assert_array_equal(decode_at(path, [38, 41], index=given).read([38, 41]), full[[38, 39]])
        with pytest.raises(DecodeError, match="only 40 frames decodable, frame 59 requested"):
            decode_at(path, [50, 59], index=given)


def test_a_video_gone_since_prepare_is_a_decode_error_with_the_fix(tmp_path: Path) -> None:
    """Deleted (or moved) after `prepare` indexed it: with its stored index or without one, the
    seeking decoder rejects it with the same line as the DALI routes, naming the fix."""
    path = tmp_path / "a.avi"
    write_video(path, moving_frames(40), 25, "mpeg4", options={"g": str(GOP)})
    index = scan_keyframe_index(path)
    path.unlink()
    for given in (index, None):
        with pytest.raises(DecodeError) as error:
            decode_at(path, [20, 22], index=given)
        assert str(error.value) == (
            f"{path}: cannot read it (No such file or directory); if it was moved or deleted, rerun "
            "`python cli.py prepare` to index the folder again"
        )


def test_a_damaged_frame_is_a_one_line_error_with_its_frame_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "damaged.mp4"
    write_video(path, moving_frames(FRAMES), 25, "h264", options=ENCODINGS["h264-bframes"][1])
    index = scan_keyframe_index(path)
    assert index is not None
    with av.open(str(path)) as container:
        packets = {index.frame_number(p.pts): (p.pos, p.size) for p in container.demux(video=0) if p.size}
    position, size = packets[40]
    data = bytearray(path.read_bytes())
    data[position : position + size] = bytes(size)  # the frame's bytes zeroed
    path.write_bytes(bytes(data))
    assert decode_at(path, [20, 22], index=index).read([20, 22]).shape == (2, 48, 64, 3)  # before it: fine
    with pytest.raises(DecodeError) as error:
        decode_at(path, [38, 40, 42], index=index)
    message = str(error.value)
    assert message.startswith(f"{path}: InvalidDataError at frame ") and "\n" not in message
    assert "Errno" not in message and f"ffmpeg -i {path} -c:v libx264" in message
