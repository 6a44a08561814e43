"""Handcrafted spatio-temporal features: one kernel for NumPy and CuPy, named feature groups.

:func:`compute_features` takes a batch of clips ``(B, T, H, W, 3)`` RGB (uint8, or float in 0..1)
as arrays of the module ``xp`` (``numpy`` or ``cupy``, from ``backend.xp()``) and returns a
``(B, F)`` float32 array of ``xp``. The code uses only operations both modules share (slicing,
element-wise maths, reductions, ``matmul``, ``bincount``, ``partition``, ``rfft``,
``take_along_axis``), so the CPU and the GPU run the same lines.

Groups (every column belongs to exactly one, see :func:`feature_groups`):

- ``motion``: frame-difference energy on a spatial grid (temporal mean/std/max per cell), left/right
  asymmetry per grid row, fraction of moving pixels, motion centroid, spread and shape, and
  histograms of the normal-flow direction (spatial gradient direction signed by the temporal
  difference), global and per cell. Before any of it, each frame step is corrected for a global
  camera translation (camera shake) and for a global brightness change (flicker), and differences
  are soft-thresholded at a multiple of the step's robust noise level.
- ``appearance``: HOG-like histograms of unsigned gradient orientation per cell (and global), and
  edge density per cell.
- ``colour``: HSV marginal histograms.
- ``temporal``: statistics of the motion-energy time series (mean, std, cv, trend) and its
  periodicity from the rFFT spectrum (dominant frequency, share of power in the peak), for the
  global series, per cell, for the net vertical/horizontal flow and for the motion centroid.

Mirror robustness (``mirror_fold=True``): grid columns ``j`` and ``grid-1-j`` are pooled (``j``
counts from the outer edge, so ``grid_1_0`` is row 1, outermost column pair), orientations in the
right half of the frame are mirrored before pooling, and horizontal flow direction is folded
(left and right motion share a bin). Horizontal and vertical stay distinct everywhere, and up and
down motion stay distinct. Quantities that flip sign under a mirror (net horizontal flow) enter
only through their magnitude, spread and spectrum.

Periodicity: an oscillation at ``f`` shows in the net flow and the centroid series at ``f`` and in
the motion energy at ``2f`` (speed peaks twice per cycle). Frequencies are in Hz when the clips'
sampling rates are given, else in cycles per clip (per ``T - 1`` frame intervals).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

import numpy as np

KERNEL_VERSION = "2"  # 2: faster kernel, same features up to float32 rounding (see FeatureSpec)
GROUPS = ("motion", "appearance", "colour", "temporal")
_EPS = 1e-8
_CPU_CHUNK = 4  # clips per kernel pass on the CPU (see compute_features)
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class FeatureSpec:
    """Settings of the kernel and of the clip it is fed (``frames`` x ``size`` x ``size``).

    Sampling that trades exactness for speed, all fixed here: HOG and colour histograms use every
    ``appearance_frame_step``-th frame (colour also every 2nd row), and the noise level uses every
    4th pixel in each direction (with its mirror image). Kernel version 2 computes the same
    features as version 1 up to float32 rounding (luma, gradient and pooling sums are formed in a
    different order, as matrix products); a pixel whose gradient lies within rounding of a
    histogram bin edge can land in the neighbouring bin, which moves a normalised bin by about
    1/(pixels per cell). Measured on 64 demo clips: HOG bins moved by at most 4e-4 (in 4 clips),
    every other column by at most 6e-5 of its range.
    """

    frames: int = 32  # frames per clip, `stride` apart (see feature_stride)
    size: int = 64  # the clip: shorter side resized to this, centre-cropped square
    max_stride: int = 4  # longest frame step between sampled frames
    grid: int = 4  # grid x grid spatial cells
    hog_bins: int = 8  # unsigned gradient orientation bins over [0, pi), bin 0 centred on horizontal gradients
    flow_bins: int = 9  # normal-flow direction bins over [-pi/2, pi/2]: down .. horizontal (centre) .. up
    cell_flow_bins: int = 3  # coarser flow bins per cell (down, horizontal, up); must divide flow_bins
    hue_bins: int = 12
    sat_bins: int = 4
    val_bins: int = 4
    mirror_fold: bool = True
    noise_threshold: float = 3.0 / 255.0  # |frame difference| below this is never motion
    noise_factor: float = 3.0  # ... nor below this many robust std devs of the step's differences
    appearance_frame_step: int = 8  # HOG and colour on every k-th frame (colour: every 2nd row)

    def __post_init__(self) -> None:
        if self.frames < 4:
            raise ValueError(f"frames must be at least 4, got {self.frames}")
        if self.grid < 1 or self.size < 2 * self.grid:
            raise ValueError(f"grid {self.grid} does not fit a clip of size {self.size}")
        if self.max_stride < 1:
            raise ValueError(f"max_stride must be at least 1, got {self.max_stride}")
        if self.flow_bins % self.cell_flow_bins:
            raise ValueError(f"cell_flow_bins ({self.cell_flow_bins}) must divide flow_bins ({self.flow_bins})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def feature_stride(n_frames: int, spec: FeatureSpec) -> int:
    """Frame step for a video of ``n_frames``: the window of ``spec.frames`` covers as much of the
    video as it can without gaps longer than ``max_stride`` frames (motion between frames far
    apart is not measurable). Uniform steps keep the motion time series evenly sampled."""
    return int(min(max(n_frames // spec.frames, 1), spec.max_stride))


def _grid_columns(spec: FeatureSpec) -> int:
    return (spec.grid + 1) // 2 if spec.mirror_fold else spec.grid


def _cell_names(spec: FeatureSpec) -> list[str]:
    return [f"grid_{i}_{j}" for i in range(spec.grid) for j in range(_grid_columns(spec))]


_SPECTRUM_STATS = ("peak_freq", "peak_power")


def _blocks(spec: FeatureSpec) -> list[tuple[str, str, list[str]]]:
    """The layout of the feature vector: (block key, group, column names) in output order."""
    cells = _cell_names(spec)
    bins = lambda n: [f"bin_{b}" for b in range(n)]  # noqa: E731
    per_cell = lambda prefix, stats: [f"{prefix}.{c}.{s}" for c in cells for s in stats]  # noqa: E731
    return [
        ("energy_grid", "motion", per_cell("motion.energy", ("t_mean", "t_std", "t_max"))),
        ("energy_asym", "motion", [f"motion.energy.row_{i}.lr_asymmetry" for i in range(spec.grid)]),
        ("active", "motion", ["motion.active_fraction.t_mean"]),
        (
            "centroid",
            "motion",
            [
                "motion.centroid.y_mean",
                "motion.centroid.x_offset",
                "motion.centroid.y_std",
                "motion.centroid.x_std",
                "motion.spread.y_mean",
                "motion.spread.x_mean",
                "motion.spread.y_share",
            ],
        ),
        ("flow_hist", "motion", [f"motion.flow_dir.{b}" for b in bins(spec.flow_bins)]),
        ("flow_cells", "motion", [f"motion.flow_dir.{c}.{b}" for c in cells for b in bins(spec.cell_flow_bins)]),
        ("hog_cells", "appearance", [f"appearance.hog.{c}.{b}" for c in cells for b in bins(spec.hog_bins)]),
        ("hog_global", "appearance", [f"appearance.hog.global.{b}" for b in bins(spec.hog_bins)]),
        ("edges", "appearance", [f"appearance.edge.{c}.mean" for c in cells]),
        (
            "colour",
            "colour",
            [f"colour.hsv.h.{b}" for b in bins(spec.hue_bins)]
            + [f"colour.hsv.s.{b}" for b in bins(spec.sat_bins)]
            + [f"colour.hsv.v.{b}" for b in bins(spec.val_bins)],
        ),
        (
            "energy_series",
            "temporal",
            [f"temporal.energy.{s}" for s in ("mean", "std", "cv", "slope", *_SPECTRUM_STATS)],
        ),
        ("energy_cells_spectrum", "temporal", per_cell("temporal.energy", _SPECTRUM_STATS)),
        (
            "flow_series",
            "temporal",
            [f"temporal.flow_up.{s}" for s in ("mean", "std", *_SPECTRUM_STATS)]
            + [f"temporal.flow_horizontal.{s}" for s in ("abs_mean", "std", *_SPECTRUM_STATS)],
        ),
        (
            "centroid_series",
            "temporal",
            [f"temporal.centroid_y.{s}" for s in _SPECTRUM_STATS]
            + [f"temporal.centroid_x.{s}" for s in _SPECTRUM_STATS],
        ),
    ]


def feature_names(spec: FeatureSpec | None = None) -> list[str]:
    """Column names, e.g. ``motion.energy.grid_1_0.t_mean``, ``temporal.energy.peak_freq``."""
    return [name for _, _, names in _blocks(spec or FeatureSpec()) for name in names]


def feature_groups(spec: FeatureSpec | None = None) -> list[str]:
    """The group (one of :data:`GROUPS`) of each column, aligned with :func:`feature_names`."""
    return [group for _, group, names in _blocks(spec or FeatureSpec()) for _ in names]


# --------------------------------------------------------------------------------------- kernel


@dataclass(frozen=True)
class _Layout:
    """Pooling matrices of a frame size: rows -> grid rows, columns -> (folded) grid columns and
    frame halves, with the pixel counts that turn sums into means."""

    cell: Any  # (H, W) int64 cell id of every pixel
    right: Any  # (W,) bool: pixel in the right half
    row_pool: Any  # (grid, H) float32 one-hot: pixel row -> grid row
    column_pool: Any  # (W, grid columns) float32 one-hot: pixel column -> grid column
    half_pool: Any  # (W, 2) float32 one-hot: pixel column -> left / right half
    cell_pixels: Any  # (grid * grid columns,) float32
    half_pixels: Any  # (grid, 2) float32


def _one_hot(index: np.ndarray, n: int) -> np.ndarray:
    matrix = np.zeros((index.size, n), np.float32)
    matrix[np.arange(index.size), index] = 1.0
    return matrix


def _layout(xp: ModuleType, spec: FeatureSpec, height: int, width: int) -> _Layout:
    rows = np.arange(height) * spec.grid // height
    cols = np.arange(width) * spec.grid // width
    right = np.arange(width) * 2 >= width
    if spec.mirror_fold:
        cols = np.minimum(cols, spec.grid - 1 - cols)
    row_pool, column_pool, half_pool = (
        _one_hot(rows, spec.grid).T,
        _one_hot(cols, _grid_columns(spec)),
        _one_hot(right.astype(np.int64), 2),
    )
    row_pixels = row_pool.sum(axis=1)
    return _Layout(
        cell=xp.asarray(rows[:, None] * _grid_columns(spec) + cols[None, :], dtype=xp.int64),
        right=xp.asarray(right),
        row_pool=xp.asarray(row_pool),
        column_pool=xp.asarray(column_pool),
        half_pool=xp.asarray(half_pool),
        cell_pixels=xp.asarray(np.outer(row_pixels, column_pool.sum(axis=0)).ravel()),
        half_pixels=xp.asarray(np.outer(row_pixels, half_pool.sum(axis=0))),
    )


def _bincount(xp: ModuleType, index: Any, weights: Any, length: int) -> Any:
    """Weighted counts of ``index`` (1-D, values < length) as float32; empty input gives zeros."""
    if index.size == 0:  # cupy.bincount takes max() of its input, which fails on an empty array
        return xp.zeros(length, dtype=xp.float32)
    return xp.bincount(index, weights=weights, minlength=length).astype(xp.float32)  # float64 sums


def _histograms(xp: ModuleType, bins: Any, weights: Any, cell: Any, n_bins: int, n_cells: int) -> Any:
    """Weighted histograms per clip and cell: bins/weights (B, ..., H, W), cell (H, W) -> (B, cells, bins)."""
    batch = bins.shape[0]
    clip = xp.arange(batch, dtype=xp.int64).reshape((batch,) + (1,) * (bins.ndim - 1))
    index = (clip * n_cells + cell) * n_bins + bins
    return _bincount(xp, index.ravel(), weights.ravel(), batch * n_cells * n_bins).reshape(batch, n_cells, n_bins)


def _normalise(hist: Any, xp: ModuleType) -> Any:
    """Histograms along the last axis scaled to sum 1 (all zeros stay zeros)."""
    total = hist.sum(axis=-1, keepdims=True)
    return xp.where(total > _EPS, hist / xp.maximum(total, _EPS), 0.0).astype(xp.float32)


def _median(values: Any, xp: ModuleType) -> Any:
    """Median over the last axis, equal to ``xp.median`` but with a single partition."""
    n = values.shape[-1]
    part = xp.partition(values, n // 2, axis=-1)
    upper = part[..., n // 2]
    return upper if n % 2 else xp.float32(0.5) * (part[..., : n // 2].max(axis=-1) + upper)


def _detrended(series: Any, xp: ModuleType) -> tuple[Any, Any]:
    """Series (..., N) minus its least-squares line; also the slope per step."""
    n = series.shape[-1]
    t = xp.arange(n, dtype=xp.float32) - (n - 1) / 2.0
    centred = series - series.mean(axis=-1, keepdims=True)
    slope = (centred * t).sum(axis=-1) / float((t * t).sum())
    return centred - slope[..., None] * t, slope


def _spectrum_peak(series: Any, xp: ModuleType, rate: Any) -> tuple[Any, Any]:
    """Dominant non-DC frequency of detrended series (B, ..., N) and the share of power in it.

    The peak bin is refined by a parabola through its neighbours. ``rate`` (B,) is in samples
    per second (frequency in Hz) or None (cycles per series).
    """
    n = series.shape[-1]
    residual, _ = _detrended(series, xp)
    spectrum = xp.fft.rfft(residual, axis=-1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(xp.float32)[..., 1:]
    total = power.sum(axis=-1)
    peak = xp.argmax(power, axis=-1)[..., None]
    padded = xp.concatenate([xp.zeros_like(power[..., :1]), power, xp.zeros_like(power[..., :1])], axis=-1)
    left = xp.take_along_axis(padded, peak, axis=-1)[..., 0]
    centre = xp.take_along_axis(padded, peak + 1, axis=-1)[..., 0]
    right = xp.take_along_axis(padded, peak + 2, axis=-1)[..., 0]
    curvature = left - 2.0 * centre + right
    shift = xp.where(curvature < -_EPS, 0.5 * (left - right) / xp.minimum(curvature, -_EPS), 0.0)
    cycles = peak[..., 0].astype(xp.float32) + 1.0 + xp.clip(shift, -0.5, 0.5)
    has_power = total > _EPS * n
    strength = xp.where(has_power, centre / xp.maximum(total, _EPS), 0.0)
    frequency = cycles if rate is None else cycles * rate.reshape(rate.shape + (1,) * (cycles.ndim - 1)) / n
    return xp.where(has_power, frequency, 0.0), strength


def _weighted_stats(values: Any, weights: Any, xp: ModuleType) -> tuple[Any, Any]:
    """Weighted mean and std over the last axis (zero where the weights are all zero)."""
    total = weights.sum(axis=-1)
    safe = xp.maximum(total, _EPS)
    mean = (values * weights).sum(axis=-1) / safe
    var = (weights * (values - mean[..., None]) ** 2).sum(axis=-1) / safe
    ok = total > _EPS
    return xp.where(ok, mean, 0.0), xp.where(ok, xp.sqrt(xp.maximum(var, 0.0)), 0.0)


def _luma(x: Any, xp: ModuleType, scale: float) -> Any:
    """Grey level (BT.601 luma) of RGB clips (B, T, H, W, 3) as float32 (B, T, H, W).

    One small matrix product per frame: a single product over the whole batch is large enough
    for a multi-threaded BLAS, which is several times slower on a busy machine."""
    batch, frames, height, width, _ = x.shape
    weights = xp.asarray((np.array(_LUMA, np.float32) * np.float32(scale)).reshape(3, 1))
    pixels = x.reshape(batch * frames, height * width, 3).astype(xp.float32)
    return (pixels @ weights).reshape(batch, frames, height, width)


def _motion_field(gray: Any, xp: ModuleType) -> Any:
    """(B, T, H, W) grey clips -> (B, S, 3, H, W) float32: per frame step the temporal difference
    and 4x the central differences along x and y of the mid-frame (zero on the border).

    The factor 4 (from the unscaled frame sum and difference) is exact in floating point and is
    divided out wherever a gradient's scale matters; one buffer lets one matrix product combine
    the three planes (camera compensation)."""
    batch, frames, height, width = gray.shape
    field = xp.empty((batch, frames - 1, 3, height, width), dtype=xp.float32)
    pair_sum = xp.add(gray[:, 1:], gray[:, :-1])
    xp.subtract(gray[:, 1:], gray[:, :-1], out=field[:, :, 0])
    xp.subtract(pair_sum[..., :, 2:], pair_sum[..., :, :-2], out=field[:, :, 1, :, 1:-1])
    xp.subtract(pair_sum[..., 2:, :], pair_sum[..., :-2, :], out=field[:, :, 2, 1:-1, :])
    field[:, :, 1, :, 0] = field[:, :, 1, :, -1] = 0.0
    field[:, :, 2, 0, :] = field[:, :, 2, -1, :] = 0.0
    return field


def _profile_shift(profiles: Any, xp: ModuleType) -> Any:
    """Per step, the sub-pixel shift of 1-D intensity profiles (B, T, L) -> (B, T-1).

    Least squares to first order (``delta + shift * slope = 0``), then a refit over the
    positions that fit (residual within 3 robust std devs), so a moving actor does not drag it.
    """
    delta = profiles[:, 1:] - profiles[:, :-1]
    mid = 0.5 * (profiles[:, 1:] + profiles[:, :-1])
    slope = xp.zeros_like(mid)
    slope[..., 1:-1] = 0.5 * (mid[..., 2:] - mid[..., :-2])

    def fit(weight: Any) -> Any:
        energy = (weight * slope * slope).sum(axis=-1)
        return xp.where(energy > _EPS, -(weight * slope * delta).sum(axis=-1) / xp.maximum(energy, _EPS), 0.0)

    shift = fit(xp.ones_like(slope))
    residual = xp.abs(delta + shift[..., None] * slope)
    limit = xp.float32(3 * 1.4826) * _median(residual, xp)
    return fit((residual <= limit[..., None]).astype(xp.float32))


def _compensated_difference(field: Any, gray: Any, xp: ModuleType) -> Any:
    """Frame differences (B, S, H, W) minus what a global sub-pixel translation per step explains
    (to first order: diff + dx * gx + dy * gy), as one matrix product over the motion field.

    The translation comes from the column and row means of the frames (integral projections),
    cheap and robust for the small shifts of camera shake.
    """
    batch, steps, _, height, width = field.shape
    # Column and row means as small matrix products per frame (faster than strided reductions).
    column_means = (xp.full((1, height), 1.0 / height, dtype=xp.float32) @ gray)[..., 0, :]  # (B, T, W)
    row_means = (gray @ xp.full((width, 1), 1.0 / width, dtype=xp.float32))[..., 0]  # (B, T, H)
    dx = _profile_shift(column_means, xp)  # horizontal shift
    dy = _profile_shift(row_means, xp)  # vertical shift
    quarter = xp.float32(0.25)  # the field holds 4x the gradients
    coefficients = xp.stack([xp.ones_like(dx), dx * quarter, dy * quarter], axis=-1)[:, :, None, :]
    planes = field.reshape(batch, steps, 3, height * width)
    return xp.matmul(coefficients, planes).reshape(batch, steps, height, width)


def _mirror_sample(frames: Any, xp: ModuleType, step: int = 4) -> Any:
    """(B, S, H, W) -> (B, S, n): every ``step``-th pixel and its horizontal mirror image."""
    batch, steps = frames.shape[:2]
    left = frames[..., ::step, ::step].reshape(batch, steps, -1)
    right = frames[..., ::step, ::-step].reshape(batch, steps, -1)
    return xp.concatenate([left, right], axis=-1)


def _colour_histograms(rgb: Any, xp: ModuleType, spec: FeatureSpec) -> Any:
    """HSV marginal histograms (B, hue+sat+val bins) of channel-first pixels ``rgb`` (3, B, ...)
    in 0..1; hue counts only chromatic pixels."""
    r, g, b = rgb[0], rgb[1], rgb[2]
    value = xp.maximum(xp.maximum(r, g), b)
    chroma = value - xp.minimum(xp.minimum(r, g), b)
    saturation = xp.where(value > _EPS, chroma / xp.maximum(value, _EPS), xp.float32(0.0))
    safe = xp.maximum(chroma, _EPS)
    # Hue in sixths of the circle: (g - b) / chroma if red is the maximum, else 2 + (b - r) / chroma if
    # green is, else 4 + (r - g) / chroma; one division for all three cases.
    red_max, green_max = value == r, value == g
    numerator = xp.where(red_max, g - b, xp.where(green_max, b - r, r - g))
    offset = xp.where(red_max, xp.float32(0.0), xp.where(green_max, xp.float32(2.0), xp.float32(4.0)))
    sector = numerator / safe + offset
    chromatic = (saturation > 0.1) & (value > 0.1)
    batch = rgb.shape[1]
    first_bin = xp.arange(batch, dtype=xp.int64).reshape((batch,) + (1,) * (rgb.ndim - 2))
    n_pixels = float(np.prod(rgb.shape[2:]))

    def histogram(bins_of_pixel: Any, n_bins: int, counted: Any = None) -> Any:
        index = first_bin * n_bins + xp.clip(bins_of_pixel.astype(xp.int64), 0, n_bins - 1)
        if counted is not None:  # pixels not counted go to one extra slot past the end
            index = xp.where(counted, index, batch * n_bins)
        counts = xp.bincount(index.ravel(), minlength=batch * n_bins + 1)[: batch * n_bins]
        return counts.reshape(batch, n_bins).astype(xp.float32) / xp.float32(n_pixels)

    # Hue bin from the sector in [-1, 5]: floor first, then wrap negatives, so no rounding of
    # sector + 6 moves a pixel across a bin edge.
    hue_bin = xp.floor(sector * xp.float32(spec.hue_bins / 6.0))
    hue_bin = xp.where(sector < 0, hue_bin + spec.hue_bins, hue_bin)
    return xp.concatenate(
        [
            histogram(hue_bin, spec.hue_bins, chromatic),
            histogram(saturation * xp.float32(spec.sat_bins), spec.sat_bins),
            histogram(value * xp.float32(spec.val_bins), spec.val_bins),
        ],
        axis=1,
    )


def compute_features(clips: Any, xp: ModuleType, spec: FeatureSpec | None = None, sample_rate: Any = None) -> Any:
    """Features of a batch of clips: (B, T, H, W, 3) RGB uint8 (or float in 0..1) -> (B, F) float32.

    ``xp`` is ``numpy`` or ``cupy`` (``backend.xp()``); ``clips`` must live in that module (a
    CuPy array stays on the GPU). ``sample_rate`` (B,) gives each clip's sampled frames per second
    for frequencies in Hz; without it frequencies are in cycles per clip.
    """
    spec = spec or FeatureSpec()
    x = xp.asarray(clips)
    if x.ndim != 5 or x.shape[-1] != 3:
        raise ValueError(f"clips must have shape (B, T, H, W, 3), got {tuple(x.shape)}")
    batch, frames, height, width, _ = (int(v) for v in x.shape)
    if frames < 4:
        raise ValueError(f"clips need at least 4 frames, got {frames}")
    if height < 2 * spec.grid or width < 2 * spec.grid:
        raise ValueError(f"clips of {width}x{height} px are too small for a {spec.grid}x{spec.grid} grid")
    rate = None if sample_rate is None else xp.asarray(sample_rate, dtype=xp.float32).reshape(batch)
    # On the CPU, a few clips at a time keep the kernel's intermediate arrays in the cache (each
    # clip's are a few MB); a GPU takes the whole batch at once.
    chunk = _CPU_CHUNK if xp.__name__ == "numpy" else batch
    parts = [
        _batch_features(x[i : i + chunk], xp, spec, None if rate is None else rate[i : i + chunk])
        for i in range(0, batch, chunk)
    ]
    return parts[0] if len(parts) == 1 else xp.concatenate(parts, axis=0)


def _batch_features(x: Any, xp: ModuleType, spec: FeatureSpec, rate: Any) -> Any:
    """:func:`compute_features` of one batch of validated clips ``x``; ``rate`` (B,) or None."""
    batch, frames, height, width, _ = (int(v) for v in x.shape)
    scale = 1.0 / 255.0 if x.dtype == xp.uint8 else 1.0
    gray = _luma(x, xp, scale)  # (B, T, H, W) float32

    n_cells = spec.grid * _grid_columns(spec)
    steps = frames - 1
    pixels = height * width
    layout = _layout(xp, spec, height, width)

    # Temporal differences and (4x) spatial gradients of the mid-frames, computed once and shared
    # by the camera compensation, the normal flow and the appearance histograms.
    field = _motion_field(gray, xp)  # (B, S, 3, H, W)
    # Camera motion: per step, a global sub-pixel translation is estimated and compensated to
    # first order, so camera shake does not read as actor motion.
    diff = _compensated_difference(field, gray, xp)  # (B, S, H, W)
    # Per step, the median difference (a global brightness change: flicker, auto-exposure) is
    # removed and the rest soft-thresholded at `noise_factor` robust standard deviations (MAD),
    # so sensor noise and compression flicker do not count as motion while the moving minority
    # of pixels does. The medians use a sparse pixel sample that is its own mirror image.
    sample = _mirror_sample(diff, xp)
    median = _median(sample, xp)[..., None]
    sample -= median
    noise = xp.float32(1.4826) * _median(xp.abs(sample), xp)
    threshold = xp.maximum(xp.float32(spec.noise_factor) * noise, xp.float32(spec.noise_threshold))
    diff -= median[..., None]
    energy = xp.abs(diff)
    energy -= threshold[..., None, None]
    xp.maximum(energy, xp.float32(0.0), out=energy)  # (B, S, H, W)

    blocks: dict[str, Any] = {}

    # ---- motion energy on the grid: rows pooled once into grid rows, then columns (small).
    energy_rows = xp.matmul(layout.row_pool, energy)  # (B, S, grid, W) sums over each grid row
    cell_series = (energy_rows @ layout.column_pool).reshape(batch, steps, n_cells) / layout.cell_pixels
    cell_series = xp.ascontiguousarray(xp.moveaxis(cell_series, 1, 2))  # (B, cells, S)
    blocks["energy_grid"] = xp.stack(
        [cell_series.mean(axis=-1), cell_series.std(axis=-1), cell_series.max(axis=-1)], axis=-1
    ).reshape(batch, -1)
    halves = (energy_rows.sum(axis=1) @ layout.half_pool) / layout.half_pixels  # (B, grid, 2) mean energy
    left_right = halves.sum(axis=-1)
    blocks["energy_asym"] = xp.where(
        left_right > _EPS, xp.abs(halves[..., 0] - halves[..., 1]) / xp.maximum(left_right, _EPS), 0.0
    )

    # ---- motion centroid and spread (energy-weighted, coordinates in 0..1)
    ys = (xp.arange(height, dtype=xp.float32) + 0.5) / height
    xs = (xp.arange(width, dtype=xp.float32) + 0.5) / width
    energy_y = (energy @ xp.ones((width, 1), dtype=xp.float32))[..., 0]  # (B, S, H) row sums
    energy_x = energy_rows.sum(axis=2)  # (B, S, W)
    frame_energy = energy_y.sum(axis=-1)  # (B, S)
    safe_energy = xp.maximum(frame_energy, _EPS)
    moving = frame_energy > _EPS
    cy = (energy_y * ys).sum(axis=-1) / safe_energy
    cx = (energy_x * xs).sum(axis=-1) / safe_energy
    sy = xp.sqrt(xp.maximum((energy_y * ys * ys).sum(axis=-1) / safe_energy - cy * cy, 0.0))
    sx = xp.sqrt(xp.maximum((energy_x * xs * xs).sum(axis=-1) / safe_energy - cx * cx, 0.0))
    cy_mean, cy_std = _weighted_stats(cy, frame_energy, xp)
    cx_mean, cx_std = _weighted_stats(cx, frame_energy, xp)
    sy_mean, _ = _weighted_stats(sy, frame_energy, xp)
    sx_mean, _ = _weighted_stats(sx, frame_energy, xp)
    any_motion = moving.any(axis=-1)
    cx_offset = xp.where(any_motion, xp.abs(cx_mean - 0.5), 0.0)
    # Shape of the moving region, free of scale: tall (pull-ups) vs wide (push-ups).
    spread_sum = sy_mean + sx_mean
    y_share = xp.where(spread_sum > _EPS, sy_mean / xp.maximum(spread_sum, _EPS), 0.0)
    blocks["centroid"] = xp.stack([cy_mean, cx_offset, cy_std, cx_std, sy_mean, sx_mean, y_share], axis=-1)

    # ---- normal-flow direction at moving pixels only (usually a small fraction of the clip):
    # the spatial gradient of the mid-frame signed by the temporal change, horizontal component
    # folded (left = right); angle from -pi/2 (down) through 0 (horizontal) to pi/2 (up).
    moving_at = xp.flatnonzero(energy > 0)  # flat indices into (B, S, H, W)
    step_of = moving_at // pixels  # clip * S + step
    clip_of = step_of // steps
    moving_pixels = _bincount(xp, clip_of, None, batch)
    blocks["active"] = (moving_pixels / float(steps * pixels))[:, None]
    pixel_of = moving_at - step_of * pixels
    in_field = moving_at + step_of * (2 * pixels)  # the same pixel in the (B, S, 3, H, W) field
    gx_m = field.reshape(-1)[in_field + pixels]
    gy_m = field.reshape(-1)[in_field + 2 * pixels]
    sign_m = xp.sign(diff.reshape(-1)[moving_at])
    energy_m = energy.reshape(-1)[moving_at]
    grad2_m = gx_m * gx_m + gy_m * gy_m
    flow_angle = xp.arctan2(sign_m * gy_m, xp.abs(gx_m))
    flow_bin = xp.minimum(
        ((flow_angle + xp.float32(math.pi / 2)) * xp.float32(spec.flow_bins / math.pi)).astype(xp.int64),
        spec.flow_bins - 1,
    )
    flow_index = (clip_of * n_cells + layout.cell.reshape(-1)[pixel_of]) * spec.flow_bins + flow_bin
    flow_cells = _bincount(xp, flow_index, energy_m * xp.sqrt(grad2_m), batch * n_cells * spec.flow_bins)
    flow_cells = flow_cells.reshape(batch, n_cells, spec.flow_bins)
    blocks["flow_hist"] = _normalise(flow_cells.sum(axis=1), xp)
    coarse = flow_cells.reshape(batch, n_cells, spec.cell_flow_bins, spec.flow_bins // spec.cell_flow_bins).sum(axis=-1)
    blocks["flow_cells"] = _normalise(coarse, xp).reshape(batch, -1)

    # ---- appearance on every k-th mid-frame: unsigned gradient orientation in [0, pi); when
    # folding, the right half of the frame is seen through a mirror (gx negated), so a mirrored
    # clip gives the same histograms. The 4x gradient scale cancels in the normalised histograms.
    gx = field[:, :: spec.appearance_frame_step, 1]
    gy = field[:, :: spec.appearance_frame_step, 2]
    magnitude = xp.sqrt(gx * gx + gy * gy)
    if spec.mirror_fold:
        gx = gx * xp.where(layout.right, xp.float32(-1.0), xp.float32(1.0))
    orientation = xp.arctan2(gy, gx)
    orientation = orientation + xp.float32(math.pi) * (orientation < 0)
    # Bins centred on 0, pi/B, ... so axis-aligned and diagonal edges sit mid-bin, not on an edge.
    hog_bin = (orientation * xp.float32(spec.hog_bins / math.pi) + xp.float32(0.5)).astype(xp.int64)
    hog_bin = hog_bin - spec.hog_bins * (hog_bin >= spec.hog_bins)  # the last half-bin wraps to bin 0
    hog = _histograms(xp, hog_bin, magnitude, layout.cell, spec.hog_bins, n_cells)
    blocks["hog_cells"] = _normalise(hog, xp).reshape(batch, -1)
    blocks["hog_global"] = _normalise(hog.sum(axis=1), xp)
    edge_sums = (xp.matmul(layout.row_pool, magnitude.mean(axis=1)) @ layout.column_pool).reshape(batch, n_cells)
    blocks["edges"] = edge_sums * xp.float32(0.25) / layout.cell_pixels

    # ---- colour
    sampled = xp.ascontiguousarray(xp.moveaxis(x[:, :: spec.appearance_frame_step, ::2], -1, 0))  # channel planes
    blocks["colour"] = _colour_histograms(sampled.astype(xp.float32) * xp.float32(scale), xp, spec)

    # ---- temporal dynamics
    global_series = frame_energy / float(pixels)  # (B, S) mean energy per step
    mean, std = global_series.mean(axis=-1), global_series.std(axis=-1)
    _, slope = _detrended(global_series, xp)
    cv = xp.where(mean > _EPS, std / xp.maximum(mean, _EPS), 0.0)

    # Net flow per step by least squares over moving pixels (fraction of the frame per step):
    # up is positive; the horizontal sign flips under a mirror, so only |mean|, std, spectrum.
    # The gradients are 4x, their squares 16x: the ratio is a quarter of the flow.
    signed_energy_m = sign_m * energy_m

    def step_sums(weights: Any) -> Any:
        return _bincount(xp, step_of, weights, batch * steps).reshape(batch, steps)

    safe_grad = xp.maximum(step_sums(grad2_m), _EPS) * xp.float32(0.25)
    flow_up = step_sums(signed_energy_m * gy_m) / safe_grad / height
    flow_right = -step_sums(signed_energy_m * gx_m) / safe_grad / width
    # Steps without motion take the clip's mean centroid so they add no oscillation.
    cy_filled = xp.where(moving, cy, cy_mean[:, None])
    cx_filled = xp.where(moving, cx, cx_mean[:, None])

    # Every spectrum of the clip in one rFFT: global energy, energy per cell, net flow, centroid.
    series = xp.concatenate(
        [global_series[:, None], cell_series, xp.stack([flow_up, flow_right, cy_filled, cx_filled], axis=1)], axis=1
    )
    freq, strength = _spectrum_peak(series, xp, rate)  # (B, 1 + cells + 4)
    blocks["energy_series"] = xp.stack([mean, std, cv, slope * (steps - 1), freq[:, 0], strength[:, 0]], axis=-1)
    blocks["energy_cells_spectrum"] = xp.stack(
        [freq[:, 1 : 1 + n_cells], strength[:, 1 : 1 + n_cells]], axis=-1
    ).reshape(batch, -1)
    up, right, ys_, xs_ = (1 + n_cells + k for k in range(4))
    blocks["flow_series"] = xp.stack(
        [
            flow_up.mean(axis=-1),
            flow_up.std(axis=-1),
            freq[:, up],
            strength[:, up],
            xp.abs(flow_right.mean(axis=-1)),
            flow_right.std(axis=-1),
            freq[:, right],
            strength[:, right],
        ],
        axis=-1,
    )
    blocks["centroid_series"] = xp.stack([freq[:, ys_], strength[:, ys_], freq[:, xs_], strength[:, xs_]], axis=-1)

    columns = []
    for key, _, names in _blocks(spec):
        block = blocks[key].astype(xp.float32).reshape(batch, -1)
        if block.shape[1] != len(names):
            raise AssertionError(f"block {key}: {block.shape[1]} columns, {len(names)} names")
        columns.append(block)
    return xp.concatenate(columns, axis=1)
