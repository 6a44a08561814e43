"""The pre-flight check accepts good videos and rejects damaged ones, each with its own reason."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from pipelines.data.preflight import (
    EMPTY_FILE,
    MIN_FRAMES,
    NO_DECODABLE_FRAME,
    NO_VIDEO_STREAM,
    NOT_A_VIDEO,
    ROTATED,
    TOO_SHORT,
    TRUNCATED,
    preflight,
    probe_video,
)
from pipelines.video.codecs import codec_extension, write_video
from tests.edited_videos import remux, stream_copied_cut

FRAMES = 10


def tiny_video(path: Path, codec: str = "mjpeg") -> Path:
    frames = np.random.default_rng(0).integers(0, 256, (FRAMES, 24, 32, 3), dtype=np.uint8)
    write_video(path, frames, fps=25, codec=codec)
    return path


def zero_avi_payloads(path: Path) -> None:
    """Keep the AVI structure (headers, chunk ids, index) but zero every chunk in the 'movi' list."""
    data = bytearray(path.read_bytes())
    start = data.index(b"movi") + 4
    end = data.find(b"idx1", start)
    end = len(data) if end < 0 else end
    offset = start
    while offset + 8 <= end:
        size = int.from_bytes(data[offset + 4 : offset + 8], "little")
        if data[offset : offset + 4] != b"LIST":
            data[offset + 8 : offset + 8 + size] = bytes(size)
            offset += 8 + size + (size & 1)
        else:
            offset += 12  # descend into 'rec ' lists
    path.write_bytes(bytes(data))


def audio_only(path: Path) -> Path:
    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        frame.pts = 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.mark.parametrize("codec", ["mjpeg", "mpeg4", "vp9", "h264"])
def test_accepts_good_videos(tmp_path: Path, codec: str) -> None:
    path = tiny_video(tmp_path / f"good{codec_extension(codec)}", codec)
    result = probe_video(path)
    assert result.ok, result.reason
    assert (result.codec, result.frames, result.fps, result.width, result.height) == (codec, FRAMES, 25.0, 32, 24)


def test_rejects_each_problem_with_its_own_reason(tmp_path: Path) -> None:
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")

    text = tmp_path / "notes.avi"
    text.write_text("this is a text file, not a video\n" * 20)

    truncated_avi = tiny_video(tmp_path / "cut.avi")
    truncated_avi.write_bytes(truncated_avi.read_bytes()[: truncated_avi.stat().st_size // 2])
    truncated_webm = tiny_video(tmp_path / "cut.webm", "vp9")
    truncated_webm.write_bytes(truncated_webm.read_bytes()[: truncated_webm.stat().st_size // 2])
    truncated_mp4 = tiny_video(tmp_path / "cut.mp4", "h264")
    truncated_mp4.write_bytes(truncated_mp4.read_bytes()[: truncated_mp4.stat().st_size // 2])

    undecodable = tiny_video(tmp_path / "zeroed.avi")
    zero_avi_payloads(undecodable)

    no_video = audio_only(tmp_path / "sound.mkv")
    good = tiny_video(tmp_path / "good.avi")

    paths = [empty, text, truncated_avi, truncated_webm, truncated_mp4, undecodable, no_video, good]
    results = preflight(paths, workers=2, progress=False)
    assert [r.path for r in results] == [str(p) for p in paths]
    kinds = {Path(r.path).name: r.kind if r.reason else "ok" for r in results}
    assert kinds == {
        "empty.avi": EMPTY_FILE,
        "notes.avi": NOT_A_VIDEO,
        "cut.avi": TRUNCATED,
        "cut.webm": TRUNCATED,
        "cut.mp4": TRUNCATED,
        "zeroed.avi": NO_DECODABLE_FRAME,
        "sound.mkv": NO_VIDEO_STREAM,
        "good.avi": "ok",
    }
    assert all(r.reason.startswith(f"{r.kind}: ") and len(r.reason) > len(r.kind) + 3 for r in results if not r.ok)
    # The zeroed file still opens and demuxes: only decoding fails.
    with av.open(str(undecodable)) as container:
        assert sum(p.size > 0 for p in container.demux(container.streams.video[0])) == FRAMES


def rotated_video(path: Path, degrees: int, codec: str = "libx264", container_format: str = "mp4") -> Path:
    """A phone-style video: frames stored sideways plus a display matrix asking players to rotate."""
    frames = np.random.default_rng(1).integers(0, 256, (FRAMES, 24, 32, 3), dtype=np.uint8)
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        stream.set_display_rotation(degrees)
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.mark.parametrize(
    ("name", "degrees", "codec", "container_format"),
    [
        ("phone.mp4", 90, "libx264", "mp4"),
        ("upside.mkv", 180, "libvpx-vp9", "matroska"),
        ("left.mp4", -90, "mpeg4", "mp4"),
    ],
)
def test_rotation_metadata_is_rejected_with_the_fix(
    tmp_path: Path, name: str, degrees: int, codec: str, container_format: str
) -> None:
    path = rotated_video(tmp_path / name, degrees, codec, container_format)
    with av.open(str(path)) as container:  # the frames themselves are stored unrotated
        assert next(container.decode(video=0)).to_ndarray(format="rgb24").shape == (24, 32, 3)
    result = probe_video(path)
    assert result.kind == ROTATED
    assert f"by {degrees % 360} degrees" in result.reason and f"ffmpeg -i {path}" in result.reason
    unrotated = rotated_video(tmp_path / f"flat_{name}", 0, codec, container_format)
    assert probe_video(unrotated).ok


def anamorphic_video(path: Path, codec: str = "h264", pixel_aspect: Fraction = Fraction(32, 27)) -> Path:
    """A 64x48 video whose pixels players show ``pixel_aspect`` times as wide as high (a DVD's 16:9)."""
    container_format = {"h264": "mp4", "mpeg4": "avi"}[codec]
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream({"h264": "libx264", "mpeg4": "mpeg4"}[codec], rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.sample_aspect_ratio = pixel_aspect
        rng = np.random.default_rng(3)
        for frame in rng.integers(0, 256, (MIN_FRAMES, 48, 64, 3), dtype=np.uint8):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.mark.parametrize("codec", ["h264", "mpeg4"])
def test_the_pixel_aspect_players_use_is_probed(tmp_path: Path, codec: str) -> None:
    wide = probe_video(anamorphic_video(tmp_path / f"dvd{codec_extension(codec)}", codec))
    assert wide.ok and wide.pixel_aspect == pytest.approx(32 / 27, abs=1e-6)
    square = probe_video(anamorphic_video(tmp_path / f"square{codec_extension(codec)}", codec, Fraction(1, 1)))
    assert square.ok and square.pixel_aspect == 1.0


def test_too_short_videos_are_rejected(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    for count, expected in ((1, TOO_SHORT), (MIN_FRAMES - 1, TOO_SHORT), (MIN_FRAMES, "ok")):
        path = tmp_path / f"n{count}.avi"
        write_video(path, rng.integers(0, 256, (count, 24, 32, 3), dtype=np.uint8), fps=25, codec="mjpeg")
        result = probe_video(path)
        assert (result.kind if result.reason else "ok") == expected, result.reason
        if expected == TOO_SHORT:
            assert f"{count} frame(s), at least {MIN_FRAMES}" in result.reason


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command (not a project dependency)")
def test_the_suggested_ffmpeg_command_writes_an_upright_copy_that_passes(tmp_path: Path) -> None:
    path = rotated_video(tmp_path / "my phone.mp4", 90)
    reason = probe_video(path).reason
    command = reason.split("`")[1]
    subprocess.run(shlex.split(command), check=True, capture_output=True)
    upright = probe_video(tmp_path / "my phone_upright.mp4")
    assert upright.ok, upright.reason
    assert (upright.width, upright.height, upright.frames) == (24, 32, FRAMES)  # 32x24 turned by 90 degrees


def test_a_cut_with_a_long_discarded_lead_in_passes(tmp_path: Path) -> None:
    """A stream-copied cut 80 frames into a long GOP: the 80 frames before the cut are in the file,
    discarded, and are no frames of the video; its first shown frame still decodes."""
    frames = np.zeros((100, 24, 32, 3), np.uint8)
    for t in range(100):
        frames[t, 8:16, t % 24 : t % 24 + 8] = 255
    source, cut = tmp_path / "source.mp4", tmp_path / "cut.mp4"
    write_video(source, frames, 25, "h264", options={"x264-params": "keyint=200:min-keyint=200:scenecut=0"})
    assert stream_copied_cut(source, cut, 80) == 80
    result = probe_video(cut)
    assert result.ok, result.reason
    assert result.frames == 20


def test_a_transport_stream_whose_clock_wrapped_is_not_truncated(tmp_path: Path) -> None:
    """An MPEG-TS clock near its 26.5-hour wrap: FFmpeg unwraps the timestamps to start below 0, and
    the packets' span, not their end, is compared with the header's duration."""
    source, wrapped = tmp_path / "source.mp4", tmp_path / "wrapped.ts"
    tiny = np.random.default_rng(3).integers(0, 256, (50, 24, 32, 3), dtype=np.uint8)
    write_video(source, tiny, 25, "h264")
    remux(source, wrapped, "mpegts", options={"output_ts_offset": "95440"})  # 2**33 / 90 kHz = 95443.7 s
    with av.open(str(wrapped)) as container:
        assert next(packet.pts for packet in container.demux(video=0)) < 0
    result = probe_video(wrapped)
    assert result.ok, result.reason
    assert result.frames == 50


def timed_video(path: Path, seconds: list[float], container_format: str, rate: Fraction) -> Path:
    """An H.264 video whose frame i is shown at ``seconds[i]``, with ``rate`` as the stream's nominal rate."""
    with av.open(str(path), "w", format=container_format) as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.time_base = stream.time_base = Fraction(1, 90000)
        for i, t in enumerate(seconds):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), (i * 3) % 255, np.uint8), format="rgb24")
            frame.pts, frame.time_base = int(round(t * 90000)), Fraction(1, 90000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.mark.parametrize("container_format", ["matroska", "mp4"])
def test_the_frame_rate_is_the_timestamps_when_the_header_disagrees(tmp_path: Path, container_format: str) -> None:
    """Clips step by time at the probed rate. A variable-rate video (2 s at 30 fps, then 2 s at 15 fps) gets its
    timestamps' rate (the mean gap between frames: 23 fps), so does a 15 fps video whose header says 30; a 29.97 fps
    video keeps its exact header rate, and so does a 30 fps video with a held last frame or a pause (one long gap)."""
    at_30 = [i / 30 for i in range(60)]
    cases = {
        "held last frame": (at_30 + [12.0], 30, 30.0),
        "pause": (at_30[:30] + [t + 1 for t in at_30[30:]], 30, 30.0),
        "variable": (at_30 + [2 + i / 15 for i in range(30)], 30, 23.0),
        "lying header": ([i / 15 for i in range(45)], 30, 15.0),
        "ntsc": ([i * 1001 / 30000 for i in range(45)], Fraction(30000, 1001), 30000 / 1001),
    }
    for number, (name, (seconds, header, expected)) in enumerate(cases.items()):
        path = timed_video(tmp_path / f"v{number}.{container_format[:3]}", seconds, container_format, Fraction(header))
        probe = probe_video(path)
        assert probe.ok and probe.frames == len(seconds), probe.reason
        assert probe.fps == pytest.approx(expected, rel=0.01), (name, probe.fps)
        if expected in (30.0, 30000 / 1001):
            assert probe.fps == round(float(header), 6), (name, probe.fps)  # the header's value, exactly
