from __future__ import annotations

import av
import numpy as np
import pytest

from pipelines.video.codecs import CODECS, codec_extension, read_frames, write_video

# Lossy 4:2:0 codecs on a smooth gradient clip: mean absolute error per channel value stays
# well under this (measured about 2-3 for every codec at the write_video settings).
MEAN_ABS_TOLERANCE = 6.0


def smooth_clip(frames: int = 10, height: int = 32, width: int = 48) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    clip = [np.stack([x * 4 + t * 3, y * 6, np.full_like(x, 100 + t * 8)], axis=-1) for t in range(frames)]
    return np.clip(clip, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_round_trip_every_codec(tmp_path, codec):
    clip = smooth_clip()
    path = tmp_path / f"clip{codec_extension(codec)}"
    write_video(path, clip, fps=25, codec=codec)

    decoded = read_frames(path)
    assert decoded.shape == clip.shape
    assert decoded.dtype == np.uint8
    assert np.abs(decoded.astype(np.int16) - clip).mean() < MEAN_ABS_TOLERANCE
    # nothing but the finished file is left in the folder
    assert [p.name for p in tmp_path.iterdir()] == [path.name]

    with av.open(str(path), metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        assert float(stream.average_rate) == pytest.approx(25)
        expected = {"vp9": "vp9", "mjpeg": "mjpeg", "mpeg4": "mpeg4", "h264": "h264"}[codec]
        assert stream.codec_context.name == expected


def test_read_selected_indices_in_requested_order(tmp_path):
    clip = smooth_clip()
    path = tmp_path / "clip.avi"
    write_video(path, clip, fps=10, codec="mjpeg")
    full = read_frames(path)
    picked = read_frames(path, [7, 0, 3, 3])
    np.testing.assert_array_equal(picked, full[[7, 0, 3, 3]])
    with pytest.raises(IndexError):
        read_frames(path, [10])


def test_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="unknown codec"):
        write_video(tmp_path / "x.avi", smooth_clip(), fps=25, codec="theora")
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "x.webm", smooth_clip(height=31), fps=25)
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "x.webm", smooth_clip().astype(np.float32), fps=25)
    assert list(tmp_path.iterdir()) == []
