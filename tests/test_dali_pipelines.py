"""The DALI clip pipelines' faster CPU operators give the same pixels as the operators they
replace: OpenCV's warp (``experimental.warp_perspective``) vs ``warp_affine`` for the training
augmentation, and one warp vs ``fn.resize`` for evaluation windows that are only enlarged."""

from __future__ import annotations

import numpy as np
import pytest
from nvidia.dali import fn, pipeline_def, types

from pipelines.clips import (
    ClipSpec,
    augmentation_matrix,
    centre_crop_window,
    clip_rng,
    draw_augmentation,
    window_matrix,
)
from pipelines.dali_pipelines import build_clip_pipeline, has_cpu_warp_perspective

HEIGHT, WIDTH = 48, 64


def smooth_frames(count: int) -> np.ndarray:
    """Smooth colour gradients that change from frame to frame (bilinear sampling is exact on them
    up to rounding, so differences come from the sampling positions alone)."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    frames = np.empty((count, HEIGHT, WIDTH, 3), np.uint8)
    for t in range(count):
        frames[t, ..., 0] = 128 + 100 * np.sin(xx / 7.0 + t)
        frames[t, ..., 1] = 128 + 100 * np.cos(yy / 5.0)
        frames[t, ..., 2] = (2 * xx + 3 * yy + 10 * t) % 256
    return frames


@pytest.mark.skipif(not has_cpu_warp_perspective(), reason="this DALI has no CPU warp_perspective")
def test_cpu_warp_equals_warp_affine_for_augmentation_draws() -> None:
    """Same 3x3 matrices (crop, flip, rotation) through both warps: within one grey level, the
    same black corners, and every frame of a clip warped alike."""

    @pipeline_def(batch_size=6, num_threads=1, device_id=None)
    def both():  # type: ignore[no-untyped-def]
        frames = fn.external_source(name="frames", layout="FHWC", dtype=types.UINT8)
        matrix = fn.external_source(name="matrix", dtype=types.FLOAT)
        affine = fn.warp_affine(
            frames, matrix=matrix[0:2], size=[40, 40], inverse_map=True, fill_value=0, interp_type=types.INTERP_LINEAR
        )
        perspective = fn.experimental.warp_perspective(
            frames, matrix=matrix, size=[40, 40], inverse_map=True, pixel_origin="corner", fill_value=0
        )
        return affine, perspective

    frames = smooth_frames(3)
    matrices = []
    for video in range(6):
        draw = draw_augmentation(clip_rng(0, 0, video), HEIGHT, WIDTH)
        matrices.append(augmentation_matrix(draw, (HEIGHT, WIDTH), (HEIGHT, WIDTH), 40))
    assert all(m.shape == (3, 3) and np.allclose(m[2], [0, 0, 1]) for m in matrices)
    pipe = both()
    pipe.build()
    pipe.feed_input("frames", [frames] * 6, layout="FHWC")
    pipe.feed_input("matrix", matrices)
    affine, perspective = pipe.run()
    for sample in range(6):
        a, b = np.array(affine[sample]).astype(int), np.array(perspective[sample]).astype(int)
        assert np.abs(a - b).max() <= 1
        assert ((a == 0).all(-1) == (b == 0).all(-1)).all()


def test_eval_warp_equals_resize_when_the_window_is_enlarged() -> None:
    """Evaluation resamples an enlarged centre window with one warp instead of ``fn.resize``:
    identical sampling positions, so identical pixels up to rounding."""
    spec = ClipSpec(frames=3, size=48, resize_short=52, layout="BTHWC")  # window 44x44 -> 48x48
    start, end = centre_crop_window(HEIGHT, WIDTH, spec)
    assert ((end - start) * np.array([HEIGHT, WIDTH])).max() <= spec.size
    frames = smooth_frames(3)
    clips = {}
    for geometry in ("resize", "warp"):
        pipe = build_clip_pipeline(spec, "cpu", "frames", geometry=geometry, batch_size=1, num_threads=1)
        pipe.feed_input("frames", [frames], layout="FHWC")
        if geometry == "resize":
            pipe.feed_input("crop_start", [start])
            pipe.feed_input("crop_end", [end])
        else:
            pipe.feed_input("affine", [window_matrix(start, end, (HEIGHT, WIDTH), spec.size)])
        (output,) = pipe.run()
        clips[geometry] = np.array(output[0]).astype(int)
    assert clips["warp"].shape == (3, 48, 48, 3)
    difference = np.abs(clips["warp"] - clips["resize"])
    assert difference.max() <= 1 and difference.mean() < 0.1
