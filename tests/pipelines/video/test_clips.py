"""Frame sampling, augmentation draws, epoch order and sharding (pure functions, no video)."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.video.clips import (
    CROP_RATIO,
    CROP_SCALE,
    ClipSpec,
    centre_crop_window,
    clip_rng,
    draw_augmentation,
    epoch_order,
    eval_indices,
    frame_step,
    shard_indices,
    stride_text,
    train_indices,
    window_matrix,
    window_span,
)


def test_spec_defaults_and_validation() -> None:
    spec = ClipSpec()
    assert (spec.frames, spec.size, spec.layout, spec.mode) == (16, 112, "BCTHW", "eval")
    assert spec.short_side == 128
    assert ClipSpec(size=224).short_side == 256
    assert ClipSpec(size=112, resize_short=150).short_side == 150
    for bad in ({"layout": "NCHW"}, {"mode": "test"}, {"sampling": "dense"}, {"mean": (0.5, 0.5, 0.5)}):
        with pytest.raises(ValueError):
            ClipSpec(**bad)  # type: ignore[arg-type]


def test_eval_window_is_centred_consecutive_with_stride() -> None:
    spec = ClipSpec(frames=4, stride=2)
    indices = eval_indices(100, spec, fps=25.0)
    assert np.all(np.diff(indices) == 2)
    span = window_span(spec, fps=25.0)
    assert indices[0] == (100 - span) // 2
    np.testing.assert_array_equal(indices, eval_indices(100, spec, fps=25.0))


def test_window_stride_is_counted_at_stride_fps_so_clips_span_the_same_time() -> None:
    spec = ClipSpec(frames=16, stride=2)  # 80 ms between samples at the default 25 fps
    assert spec.stride_fps == 25.0 and frame_step(spec, 25.0) == 2.0
    offsets = {fps: eval_indices(600, spec, fps=fps) for fps in (25.0, 50.0, 30000 / 1001, 10.0)}
    for fps, indices in offsets.items():
        indices = indices - indices[0]
        assert abs(indices[-1] / fps - 15 * 0.08) <= 0.5 / fps, (fps, indices)  # 1.2 s, to the nearest frame
        assert np.all(np.abs(indices / fps - np.arange(16) * 0.08) <= 0.5 / fps + 1e-9), (fps, indices)
    np.testing.assert_array_equal(offsets[50.0] - offsets[50.0][0], np.arange(16) * 4)
    np.testing.assert_array_equal((offsets[30000 / 1001] - offsets[30000 / 1001][0])[:5], [0, 2, 5, 7, 10])
    assert len(set(offsets[10.0].tolist())) < 16  # below 12.5 fps a frame repeats: the clip keeps its time span
    np.testing.assert_array_equal(offsets[25.0], eval_indices(600, spec, fps=25.0 + 1e-7))
    # A video of unknown rate, or a spec without stride_fps (the feature clips), counts frames.
    for unknown in (0.0, float("nan"), float("inf")):
        np.testing.assert_array_equal(eval_indices(600, spec, fps=unknown), offsets[25.0])
    frames_only = ClipSpec(frames=16, stride=2, stride_fps=None)
    np.testing.assert_array_equal(np.diff(eval_indices(600, frames_only, fps=50.0)), np.full(15, 2))
    assert window_span(spec, fps=50.0) == 61 and window_span(frames_only, fps=50.0) == 31
    train = ClipSpec(frames=16, stride=2, mode="train")
    drawn = train_indices(600, train, clip_rng(1, 0, 0), fps=50.0)
    np.testing.assert_array_equal(drawn - drawn[0], np.arange(16) * 4)
    assert (
        stride_text(2, 25.0).startswith("frames 80 ms apart") and stride_text(2, None) == "frames 2 apart in each video"
    )
    with pytest.raises(ValueError, match="stride_fps"):
        ClipSpec(stride_fps=0.0)


def test_eval_clips_are_evenly_spaced_over_the_whole_video() -> None:
    spec = ClipSpec(frames=4, stride=2, test_clips=3)
    starts = [eval_indices(100, spec, k, fps=25.0)[0] for k in range(3)]
    assert starts[0] == 0 and eval_indices(100, spec, 2, fps=25.0)[-1] == 99
    assert starts[1] - starts[0] == pytest.approx(starts[2] - starts[1], abs=1)
    with pytest.raises(ValueError):
        eval_indices(100, spec, 3, fps=25.0)


def test_eval_segment_takes_segment_centres() -> None:
    spec = ClipSpec(frames=4, sampling="segment")
    np.testing.assert_array_equal(eval_indices(40, spec, fps=25.0), [5, 15, 25, 35])
    two = ClipSpec(frames=4, sampling="segment", test_clips=2)
    np.testing.assert_array_equal(eval_indices(40, two, 0, fps=25.0), [2, 12, 22, 32])
    np.testing.assert_array_equal(eval_indices(40, two, 1, fps=25.0), [7, 17, 27, 37])


def test_short_videos_loop_windows_and_repeat_segments() -> None:
    window = ClipSpec(frames=8, stride=2)
    np.testing.assert_array_equal(eval_indices(5, window, fps=25.0), [0, 2, 4, 1, 3, 0, 2, 4])
    segment = ClipSpec(frames=8, sampling="segment")
    indices = eval_indices(3, segment, fps=25.0)
    assert len(indices) == 8 and indices.min() == 0 and indices.max() == 2
    assert np.all(np.diff(indices) >= 0)
    rng = clip_rng(0, 0, 0)
    assert train_indices(1, window, rng, fps=25.0).tolist() == [0] * 8


@pytest.mark.parametrize("sampling", ["window", "segment"])
def test_train_indices_reproducible_and_random(sampling: str) -> None:
    spec = ClipSpec(frames=8, stride=2, sampling=sampling, mode="train")
    first = train_indices(120, spec, clip_rng(7, 0, 3), fps=25.0)
    np.testing.assert_array_equal(first, train_indices(120, spec, clip_rng(7, 0, 3), fps=25.0))
    draws = {tuple(train_indices(120, spec, clip_rng(7, epoch, 3), fps=25.0)) for epoch in range(6)}
    assert len(draws) > 1
    assert first.min() >= 0 and first.max() < 120
    if sampling == "segment":
        segments = np.floor(first / (120 / 8))
        np.testing.assert_array_equal(segments, np.arange(8))
    else:
        assert np.all(np.diff(first) == 2)


def test_augmentation_draw_inside_frame_and_in_range() -> None:
    for video in range(50):
        aug = draw_augmentation(clip_rng(1, 2, video), 48, 64)
        x, y, w, h = aug.crop
        assert 0 <= x and 0 <= y and x + w <= 64 + 1e-6 and y + h <= 48 + 1e-6
        assert CROP_SCALE[0] * 0.99 <= w * h / (48 * 64) <= 1.0 + 1e-6
        assert CROP_RATIO[0] * 0.99 <= w / h <= CROP_RATIO[1] * 1.01
        assert -10 <= aug.angle <= 10 and 0.7 < aug.brightness < 1.3
    flips = [draw_augmentation(clip_rng(1, 2, v), 48, 64).flip for v in range(50)]
    assert 0 < sum(flips) < 50


def test_epoch_order_shuffles_with_seed_and_epoch() -> None:
    np.testing.assert_array_equal(epoch_order(10, 0, 0, shuffle=False), np.arange(10))
    a = epoch_order(10, 0, 0, shuffle=True)
    assert sorted(a) == list(range(10))
    np.testing.assert_array_equal(a, epoch_order(10, 0, 0, shuffle=True))
    assert not np.array_equal(a, epoch_order(10, 0, 1, shuffle=True))
    assert not np.array_equal(a, epoch_order(10, 1, 0, shuffle=True))


@pytest.mark.parametrize("n, shards", [(10, 3), (7, 2), (2, 4), (9, 1)])
def test_shards_disjoint_and_covering(n: int, shards: int) -> None:
    order = epoch_order(n, 0, 0, shuffle=True)
    parts = [shard_indices(order, shards, s, equal=False) for s in range(shards)]
    merged = np.concatenate(parts)
    assert sorted(merged.tolist()) == list(range(n))
    equal = [shard_indices(order, shards, s, equal=True) for s in range(shards)]
    assert len({len(part) for part in equal}) == 1 and len(equal[0]) == n // shards
    assert len(set(np.concatenate(equal).tolist())) == n // shards * shards
    with pytest.raises(ValueError):
        shard_indices(order, shards, shards, equal=False)


def test_window_matrix_maps_the_output_square_onto_the_window() -> None:
    spec = ClipSpec(frames=4, size=48, resize_short=52)
    start, end = centre_crop_window(48, 64, spec)
    matrix = window_matrix(start, end, (48, 64), spec.size)
    corners = matrix @ np.array([[0, 0, 1], [48, 48, 1]], np.float64).T  # output (x, y) corners
    np.testing.assert_allclose(corners[:2, 0], [start[1] * 64, start[0] * 48], atol=1e-4)
    np.testing.assert_allclose(corners[:2, 1], [end[1] * 64, end[0] * 48], atol=1e-4)
    np.testing.assert_allclose(corners[2], 1)
