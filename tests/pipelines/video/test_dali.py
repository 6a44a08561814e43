"""The DALI clip pipelines' faster CPU operators give the same pixels as the operators they
replace: OpenCV's warp (``experimental.warp_perspective``) vs ``warp_affine`` for the training
augmentation, and one warp vs ``fn.resize`` for evaluation windows that are only enlarged; and
:class:`ScheduledPipeline` runs batches ahead without mixing them up."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import dali_installed

if not dali_installed():  # an installed DALI that fails to import fails this module instead
    pytest.skip("nvidia-dali not installed (a GPU machine with PyTorch and CuPy only)", allow_module_level=True)

from nvidia.dali import fn, pipeline_def, types  # noqa: E402

from pipelines.video.clips import (
    ClipSpec,
    augmentation_matrix,
    centre_crop_window,
    clip_rng,
    draw_augmentation,
    window_matrix,
)
from pipelines.video.codecs import write_video
from pipelines.video.dali import (
    ScheduledPipeline,
    build_clip_pipeline,
    has_cpu_warp_perspective,
    saturate_and_normalize,
)

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


@pytest.mark.parametrize("layout", ["CFHW", "FCHW", "FHWC"])
@pytest.mark.parametrize("normalized", [True, False])
def test_cpu_colour_stage_equals_dali_saturation_and_normalize(layout: str, normalized: bool) -> None:
    """The CPU training colour stage (OpenCV, one pass) against ``fn.saturation`` +
    ``crop_mirror_normalize``: the same pixels to within 0.3 grey levels (float; 0.18 from
    DALI's rounded YIQ matrix, 0.125 from the rounded luma) or one level (uint8), for saturation
    below and above 1 and per-clip brightness/contrast mean/std."""

    @pipeline_def(batch_size=3, num_threads=1, device_id=None)
    def dali_ops():  # type: ignore[no-untyped-def]
        frames = fn.external_source(name="frames", layout="FHWC", dtype=types.UINT8)
        saturation, mean, std = (fn.external_source(name=name, dtype=types.FLOAT) for name in ("s", "mean", "std"))
        saturated = fn.saturation(frames, saturation=saturation, dtype=types.FLOAT)
        return fn.crop_mirror_normalize(
            saturated,
            mean=mean,
            std=std,
            dtype=types.FLOAT if normalized else types.UINT8,
            output_layout=layout,
        )

    frames = np.random.default_rng(0).integers(0, 256, (4, HEIGHT, WIDTH, 3), dtype=np.uint8)
    frames[:, :8] = smooth_frames(4)[:, :8]
    saturations = [np.float32(v) for v in (0.75, 1.0, 1.25)]
    if normalized:
        means = [np.array(v, np.float32) for v in ([110.0, 100.5, 96.0], [0.0, 0.0, 0.0], [140.0, 120.0, 90.0])]
        stds = [np.array(v, np.float32) for v in ([58.0, 56.5, 55.0], [1.0, 1.0, 1.0], [40.0, 70.0, 60.0])]
    else:  # brightness/contrast only: mean' = -shift / gain, std' = 1 / gain
        means = [np.array([v] * 3, np.float32) for v in (-20.0, 0.0, 15.0)]
        stds = [np.array([v] * 3, np.float32) for v in (0.8, 1.0, 1.2)]
    pipe = dali_ops()
    pipe.build()
    pipe.feed_input("frames", [frames] * 3, layout="FHWC")
    pipe.feed_input("s", saturations)
    pipe.feed_input("mean", means)
    pipe.feed_input("std", stds)
    (expected,) = pipe.run()
    for sample in range(3):
        ours = saturate_and_normalize(
            frames, saturations[sample], means[sample], stds[sample], layout=layout, normalized=normalized
        )
        reference = np.array(expected[sample])
        assert ours.shape == reference.shape and ours.dtype == reference.dtype
        if normalized:
            channel_axis = layout.index("C")
            scale = np.expand_dims(stds[sample], [a for a in range(4) if a != channel_axis])
            assert np.abs((ours - reference) * scale).max() <= 0.35
        else:
            assert np.abs(ours.astype(int) - reference.astype(int)).max() <= 1


def test_cpu_training_pipeline_output_matches_across_thread_counts() -> None:
    """The CPU colour stage spreads clips over the pipeline's threads: same clips, same order."""
    spec = ClipSpec(frames=3, size=32, mode="train", layout="BCTHW", mean=(0.4, 0.4, 0.4), std=(0.2, 0.2, 0.2))
    frames = smooth_frames(3)
    outputs = []
    for threads in (1, 3):
        pipe = build_clip_pipeline(spec, "cpu", "frames", batch_size=4, num_threads=threads)
        pipe.feed_input("frames", [np.roll(frames, 5 * i, axis=2) for i in range(4)], layout="FHWC")
        pipe.feed_input("affine", [np.diag([1.0 + 0.1 * i, 1.0, 1.0]).astype(np.float32) for i in range(4)])
        pipe.feed_input("saturation", [np.float32(0.8 + 0.1 * i) for i in range(4)])
        pipe.feed_input("mean", [np.full(3, 100.0, np.float32)] * 4)
        pipe.feed_input("std", [np.full(3, 50.0, np.float32)] * 4)
        (output,) = pipe.run()
        outputs.append(np.array(output.as_tensor()))
    assert outputs[0].shape == (4, 3, 3, 32, 32)
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert len({outputs[0][i].tobytes() for i in range(4)}) == 4


@pipeline_def(batch_size=3, num_threads=1, device_id=None, exec_dynamic=True)
def _decode_first_frames():  # type: ignore[no-untyped-def]
    encoded = fn.external_source(name="encoded", dtype=types.UINT8, no_copy=True)
    indices = fn.external_source(name="indices", dtype=types.INT32)
    return fn.decoders.video(encoded, frames=indices, pad_mode="none", device="cpu")


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_scheduled_pipeline_runs_ahead_and_keeps_batches_apart(tmp_path, depth: int) -> None:  # type: ignore[no-untyped-def]
    """Batches submitted ahead come back as their own batch, also when asked out of order or
    when fewer batches than the queue depth were fed; a failing batch raises and the next works."""
    path = tmp_path / "clip.webm"
    write_video(path, smooth_frames(8), 25, "vp9")
    good = np.fromfile(path, np.uint8)
    bad = np.frombuffer(b"\x1aE\xdf\xa3 not a video" * 50, np.uint8)

    def batch(count: int, first: int, data: np.ndarray = good) -> dict[str, list[np.ndarray]]:
        return {"encoded": [data] * count, "indices": [np.array([first, first + 1], np.int32)] * count}

    pipe = _decode_first_frames(prefetch_queue_depth=depth)
    pipe.build()
    scheduled = ScheduledPipeline(pipe)
    assert scheduled.depth == depth
    expected = {}
    reference = np.asarray(_run_once(good, [0, 1, 2, 3, 4, 5]))
    first = scheduled.submit(batch(1, 0))
    assert np.array_equal(np.asarray(scheduled.result(first).as_tensor())[0], reference[:2])  # fewer than depth
    for number, count in enumerate([2, 3, 1]):
        expected[scheduled.submit(batch(count, 2 * number))] = (count, reference[2 * number : 2 * number + 2])
    tickets = list(expected)
    for ticket in [tickets[1], tickets[0], tickets[2]]:  # out of order
        output = np.asarray(scheduled.result(ticket).as_tensor())
        count, frames = expected[ticket]
        assert output.shape == (count, 2, HEIGHT, WIDTH, 3)
        assert all(np.array_equal(sample, frames) for sample in output)
    failing = scheduled.submit(batch(2, 0, bad))
    after = scheduled.submit(batch(1, 4))
    with pytest.raises(RuntimeError, match="decoders.video"):
        scheduled.result(failing)
    assert np.array_equal(np.asarray(scheduled.result(after).as_tensor())[0], reference[4:6])
    assert np.array_equal(np.asarray(scheduled.run(batch(1, 2)).as_tensor())[0], reference[2:4])


def test_ctrl_c_inside_a_python_stage_is_an_interrupt_not_a_failed_batch() -> None:
    """DALI turns a KeyboardInterrupt raised in a ``python_function`` into a RuntimeError; the
    scheduled pipeline raises it as KeyboardInterrupt (a failed batch would be rerouted to PyAV,
    and the Ctrl-C lost), while other errors of a Python stage stay failed batches."""

    def stage(batch: list[np.ndarray]) -> list[np.ndarray]:
        if float(batch[0][0]) == 1.0:
            raise KeyboardInterrupt
        if float(batch[0][0]) == 2.0:
            raise ValueError("a broken sample")
        return batch

    @pipeline_def(batch_size=1, num_threads=1, device_id=None, prefetch_queue_depth=1, exec_dynamic=True)
    def python_stage():  # type: ignore[no-untyped-def]
        values = fn.external_source(name="values", dtype=types.FLOAT)
        return fn.python_function(values, function=stage, batch_processing=True)

    pipe = python_stage()
    pipe.build()
    scheduled = ScheduledPipeline(pipe)
    with pytest.raises(RuntimeError, match="a broken sample") as failed:
        scheduled.run({"values": [np.array([2.0], np.float32)]})
    assert not isinstance(failed.value, KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        scheduled.run({"values": [np.array([1.0], np.float32)]})


def _run_once(encoded: np.ndarray, indices: list[int]) -> np.ndarray:
    pipe = _decode_first_frames(prefetch_queue_depth=1)
    pipe.build()
    pipe.feed_input("encoded", [encoded])
    pipe.feed_input("indices", [np.array(indices, np.int32)])
    (output,) = pipe.run()
    return np.asarray(output.as_tensor())[0]
