"""Real videos come in more pixel formats and sizes than the demo's 4:2:0 with even sides: the
loader gives the source frames for 4:4:4 and 4:2:2, 10-bit, full range and odd sizes, through
PyAV (H.264, HEVC, MPEG-4) and DALI's CPU decoder (VP9, MJPEG), with the cache off and on."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from core.backend import resolve_backend
from pipelines.data.records import VideoRecord
from pipelines.video.clips import ClipSpec, eval_indices
from pipelines.video.loader import make_clip_loader
from tests.pipelines.video.test_loader import moving_frames

# (encoder, container, pixel format, width, height, encoder options)
FORMATS: dict[str, tuple[str, str, str, int, int, dict[str, str]]] = {
    "h264 4:4:4, odd size": ("libx264", "mp4", "yuv444p", 65, 49, {"crf": "12"}),
    "h264 10-bit": ("libx264", "mp4", "yuv420p10le", 64, 48, {"crf": "12"}),
    "h264 4:2:2": ("libx264", "matroska", "yuv422p", 64, 48, {"crf": "12"}),
    "hevc": ("libx265", "mp4", "yuv420p", 64, 48, {"crf": "12", "x265-params": "log-level=error"}),
    "mpeg4 4:2:0, odd size": ("mpeg4", "avi", "yuv420p", 65, 49, {"qmin": "1", "qmax": "2"}),
    "mjpeg 4:2:2, full range": ("mjpeg", "avi", "yuvj422p", 64, 48, {"qmin": "1", "qmax": "2"}),
    "vp9 4:4:4, odd size": ("libvpx-vp9", "webm", "yuv444p", 65, 49, {"crf": "10", "b": "0"}),
}
EXPECTED_ROUTE = {"libx264": "pyav", "libx265": "pyav", "mpeg4": "pyav", "mjpeg": "dali-cpu", "libvpx-vp9": "dali-cpu"}


def encode(
    path: Path, frames: np.ndarray, encoder: str, container_format: str, pixel_format: str, options: dict[str, str]
) -> str:
    """``frames`` (RGB) written with ``encoder`` in ``pixel_format``; returns the decoder's codec name."""
    height, width = frames.shape[1:3]
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(encoder, rate=25, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, pixel_format
        for frame in frames:
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format=pixel_format)
            container.mux(stream.encode(picture))
        container.mux(stream.encode())
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = next(container.decode(stream))
        assert decoded.format.name == pixel_format, decoded.format.name  # the format under test reached the file
        return stream.codec_context.name


@pytest.mark.parametrize("name", list(FORMATS))
def test_the_loader_gives_the_source_frames_in_every_pixel_format(tmp_path: Path, name: str) -> None:
    encoder, container_format, pixel_format, width, height, options = FORMATS[name]
    source = moving_frames(12, seed=3)[:, :height, :width]
    if source.shape[1:3] != (height, width):  # odd sizes: one more row/column, continuing the pattern
        source = np.pad(source, ((0, 0), (0, height - source.shape[1]), (0, width - source.shape[2]), (0, 0)), "edge")
    path = tmp_path / ("clip.mkv" if container_format == "matroska" else f"clip.{container_format}")
    codec = encode(path, source, encoder, container_format, pixel_format, options)
    record = VideoRecord(
        video_id="a/clip",
        path=str(path),
        class_name="a",
        label=0,
        group="clip",
        split="test",
        codec=codec,
        frames=len(source),
        fps=25.0,
        width=width,
        height=height,
    )
    assert (width - height) % 2 == 0  # a centre crop with whole-pixel borders
    spec = ClipSpec(frames=4, size=height, resize_short=height, stride=3, layout="BTHWC")
    x0 = (width - height) // 2
    expected = source[eval_indices(len(source), spec, fps=25.0), :, x0 : x0 + height].astype(int)
    backend = resolve_backend("cpu")
    loader = make_clip_loader([record], spec, backend, batch_size=1)
    uncached = list(loader)
    cached = make_clip_loader([record], spec, backend, batch_size=1, cache_dir=tmp_path / "cache")
    filling, reading = list(cached), list(cached)  # the second epoch reads what the first stored
    assert not loader.rejected and not cached.rejected, [item.reason for item in loader.rejected + cached.rejected]
    assert loader.decode_stats.routes == {EXPECTED_ROUTE[encoder]: 1}
    assert cached.decode_stats.routes == {"pyav": 1, "cache": 1}
    clips = {EXPECTED_ROUTE[encoder]: uncached, "pyav, filling the cache": filling, "cache": reading}
    for route, (batch,) in clips.items():
        frames = np.asarray(batch.clips[0]).astype(int)
        assert frames.shape == expected.shape
        error = np.abs(frames - expected).mean(axis=(1, 2, 3))
        assert error.max() < 4, (route, error)  # a misread format is off by tens of grey levels
