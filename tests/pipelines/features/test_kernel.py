"""The feature kernel on synthetic clips with known motion (NumPy; CuPy equality on a GPU)."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.features.kernel import (
    GROUPS,
    FeatureSpec,
    compute_features,
    feature_groups,
    feature_names,
    feature_stride,
)

SPEC = FeatureSpec(frames=32, size=64)


def textured_background(size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    blocks = rng.integers(20, 120, (size // 8, size // 8, 3))
    return blocks.repeat(8, axis=0).repeat(8, axis=1).astype(np.uint8)


def oscillating_bar(
    cycles: float, vertical: bool = True, frames: int = 32, size: int = 64, amplitude: int = 10
) -> np.ndarray:
    """A bright bar moving sinusoidally (``cycles`` per clip) up/down or left/right."""
    clip = np.repeat(textured_background(size)[None], frames, axis=0)
    for t in range(frames):
        centre = size // 2 + int(round(amplitude * np.sin(2 * np.pi * cycles * t / (frames - 1))))
        if vertical:
            clip[t, centre - 10 : centre + 10, 12:34] = (230, 60, 40)
        else:
            clip[t, 18:46, centre - 10 : centre + 10] = (230, 60, 40)
    return clip


def features_of(*clips: np.ndarray, spec: FeatureSpec = SPEC, **kwargs) -> dict[str, np.ndarray]:
    values = compute_features(np.stack(clips), np, spec, **kwargs)
    return dict(zip(feature_names(spec), values.T, strict=True))


def test_names_are_unique_and_every_column_has_one_group():
    names, groups = feature_names(SPEC), feature_groups(SPEC)
    assert len(names) == len(set(names)) == len(groups)
    assert set(groups) == set(GROUPS)
    assert all(name.split(".")[0] == group for name, group in zip(names, groups, strict=True))
    assert 100 <= len(names) <= 400
    values = compute_features(oscillating_bar(2)[None], np, SPEC)
    assert values.shape == (1, len(names)) and values.dtype == np.float32
    assert np.isfinite(values).all()


def test_static_clip_has_zero_motion_and_temporal_features():
    static = np.repeat(textured_background(64)[None], 32, axis=0)
    values = compute_features(static[None], np, SPEC)[0]
    groups = np.array(feature_groups(SPEC))
    moving = (groups == "motion") | (groups == "temporal")
    assert np.all(values[moving] == 0.0)
    assert values[groups == "appearance"].sum() > 0 and values[groups == "colour"].sum() > 0


def test_oscillating_bar_gives_the_periodicity_peak_at_its_frequency():
    cycles = 3
    values = features_of(oscillating_bar(cycles))
    assert values["temporal.flow_up.peak_freq"][0] == pytest.approx(cycles, abs=0.1)
    assert values["temporal.centroid_y.peak_freq"][0] == pytest.approx(cycles, abs=0.15)
    # Speed peaks twice per cycle, so the motion energy oscillates at twice the frequency.
    assert values["temporal.energy.peak_freq"][0] == pytest.approx(2 * cycles, abs=0.1)
    assert values["temporal.flow_up.peak_power"][0] > 0.5
    # In Hz given the sampling rate: 3 cycles over 31 frame steps at 12.5 frames/s.
    in_hz = features_of(oscillating_bar(cycles), sample_rate=[12.5])
    assert in_hz["temporal.flow_up.peak_freq"][0] == pytest.approx(cycles * 12.5 / 31, rel=0.03)


def test_horizontal_and_vertical_motion_give_different_orientation_histograms():
    values = compute_features(
        np.stack([oscillating_bar(2, vertical=True), oscillating_bar(2, vertical=False)]), np, SPEC
    )
    names = feature_names(SPEC)
    columns = [i for i, name in enumerate(names) if name.startswith("motion.flow_dir.bin_")]
    vertical, horizontal = values[0, columns], values[1, columns]
    centre = SPEC.flow_bins // 2
    assert vertical[0] + vertical[-1] > 0.6  # down and up
    assert horizontal[centre] > 0.6  # sideways
    assert np.abs(vertical - horizontal).sum() > 1.0
    by_name = dict(zip(names, values.T, strict=True))
    assert by_name["temporal.flow_up.std"][0] > 5 * by_name["temporal.flow_up.std"][1]
    assert by_name["temporal.flow_horizontal.std"][1] > 5 * by_name["temporal.flow_horizontal.std"][0]


def test_mirrored_clip_gives_the_same_features():
    clip = oscillating_bar(2, vertical=False)
    values = compute_features(np.stack([clip, clip[:, :, ::-1]]), np, SPEC)
    np.testing.assert_allclose(values[0], values[1], atol=1e-5)


def test_output_is_deterministic_and_independent_of_the_batch():
    clips = np.stack([oscillating_bar(2), oscillating_bar(1, vertical=False), oscillating_bar(4)])
    first = compute_features(clips, np, SPEC)
    assert np.array_equal(first, compute_features(clips, np, SPEC))
    np.testing.assert_allclose(compute_features(clips[1:2], np, SPEC)[0], first[1], rtol=1e-4, atol=1e-7)


def test_a_batch_larger_than_one_cpu_pass_matches_its_parts():
    clips = np.stack([oscillating_bar(c % 4 + 1, vertical=c % 2 == 0) for c in range(6)])
    rates = np.linspace(8.0, 25.0, 6).astype(np.float32)
    whole = compute_features(clips, np, SPEC, sample_rate=rates)
    tail = compute_features(clips[4:], np, SPEC, sample_rate=rates[4:])
    np.testing.assert_allclose(whole[4:], tail, rtol=1e-4, atol=1e-7)
    assert whole.shape == (6, len(feature_names(SPEC)))


def test_uint8_and_float_clips_agree():
    clip = oscillating_bar(2)[None]
    np.testing.assert_allclose(
        compute_features(clip, np, SPEC),
        compute_features(clip.astype(np.float32) / 255.0, np, SPEC),
        rtol=1e-4,
        atol=1e-6,
    )


def test_bad_input_is_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match=r"\(B, T, H, W, 3\)"):
        compute_features(np.zeros((2, 8, 32, 32), np.uint8), np, SPEC)
    with pytest.raises(ValueError, match="at least 4 frames"):
        compute_features(np.zeros((1, 3, 32, 32, 3), np.uint8), np, SPEC)
    with pytest.raises(ValueError, match="cell_flow_bins"):
        FeatureSpec(flow_bins=9, cell_flow_bins=4)


def test_feature_stride_covers_long_videos_without_long_gaps():
    spec = FeatureSpec(frames=32, max_stride=4)
    assert [feature_stride(n, spec) for n in (10, 50, 64, 100, 1000)] == [1, 1, 2, 3, 4]


@pytest.mark.gpu
def test_cupy_matches_numpy():
    cupy = pytest.importorskip("cupy")
    clips = np.stack([oscillating_bar(2), oscillating_bar(3, vertical=False), oscillating_bar(1, amplitude=6)])
    rates = np.array([12.5, 25.0, 8.0], np.float32)
    on_cpu = compute_features(clips, np, SPEC, sample_rate=rates)
    on_gpu = compute_features(cupy.asarray(clips), cupy, SPEC, sample_rate=cupy.asarray(rates))
    assert isinstance(on_gpu, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(on_gpu), on_cpu, rtol=1e-5, atol=1e-6)
