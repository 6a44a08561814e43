"""Handcrafted spatio-temporal features: one kernel for NumPy and CuPy, named feature groups.

:func:`compute_features` takes a batch of clips ``(B, T, H, W, 3)`` RGB (uint8, or float in 0..1)
as arrays of the module ``xp`` (``numpy`` or ``cupy``, from ``backend.xp()``) and returns a
``(B, F)`` float32 array of ``xp``. The code uses only operations both modules share (slicing,
element-wise maths, reductions, ``matmul``, ``bincount``, ``partition``, ``rfft``, ``take``,
``take_along_axis``, ``searchsorted``), so the CPU and the GPU run the same lines.

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

import functools
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
    every other column by at most 6e-5 of its range. Later speed-ups within version 2 (cached
    constant matrices, merged reductions) move values by float32 rounding only: on the 300 demo
    clips at most 2e-6 of a column's range, histograms and the active fraction unchanged.
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


@functools.lru_cache(maxsize=16)
def _block_widths(spec: FeatureSpec) -> tuple[tuple[str, int], ...]:
    """(block key, number of columns) in output order (cached: a pure function of the spec)."""
    return tuple((key, len(names)) for key, _, names in _blocks(spec))


def feature_names(spec: FeatureSpec | None = None) -> list[str]:
    """Column names, e.g. ``motion.energy.grid_1_0.t_mean``, ``temporal.energy.peak_freq``."""
    return [name for _, _, names in _blocks(spec or FeatureSpec()) for name in names]


def feature_groups(spec: FeatureSpec | None = None) -> list[str]:
    """The group (one of :data:`GROUPS`) of each column, aligned with :func:`feature_names`."""
    return [group for _, group, names in _blocks(spec or FeatureSpec()) for _ in names]


# --------------------------------------------------------------------------------------- kernel


@dataclass(frozen=True)
class _Plan:
    """Constant arrays of one frame size: pooling matrices (pixel rows -> grid rows, columns ->
    (folded) grid columns and frame halves), the pixel counts that turn sums into means, pixel
    coordinates, cell ids and the noise sample. Built once per array module, device, spec and
    frame size (:func:`_plan`), not on every batch."""

    cell: Any  # (H, W) int64 cell id of every pixel
    cell_first_hog_bin: Any  # (H, W) float32: cell id x hog_bins
    mirror_sign: Any  # (W,) float32: -1 in the right half, 1 in the left (gx seen through a mirror)
    row_pool: Any  # (grid, H) float32 one-hot: pixel row -> grid row
    column_pool: Any  # (W, grid columns) float32 one-hot: pixel column -> grid column
    half_pool: Any  # (W, 2) float32 one-hot: pixel column -> left / right half
    cell_pixels: Any  # (grid * grid columns,) float32
    half_pixels: Any  # (grid, 2) float32
    row_mean: Any  # (W, 1) float32: frame @ row_mean -> mean of each pixel row
    column_mean: Any  # (1, H) float32: column_mean @ frame -> mean of each pixel column
    row_pool_moments: Any  # (grid + 2, H) float32: row_pool, then rows y and y^2 (pixel-row centre y in 0..1)
    x_moments: Any  # (W, 3) float32 columns 1, x, x^2
    noise_sample: Any  # (n,) int64 flat pixel indices of the noise-level sample (_mirror_sample_pixels)


def _one_hot(index: np.ndarray, n: int) -> np.ndarray:
    matrix = np.zeros((index.size, n), np.float32)
    matrix[np.arange(index.size), index] = 1.0
    return matrix


def _moments(n: int) -> np.ndarray:
    """(n, 3) float32: 1, c, c^2 for the pixel centres c = (i + 0.5) / n."""
    centre = (np.arange(n, dtype=np.float32) + np.float32(0.5)) / np.float32(n)
    return np.stack([np.ones_like(centre), centre, centre * centre], axis=1)


def _mirror_sample_pixels(height: int, width: int, step: int = 4) -> np.ndarray:
    """Flat indices of every ``step``-th pixel of a frame and of its horizontal mirror image."""
    pixel = np.arange(height * width).reshape(height, width)
    return np.concatenate([pixel[::step, ::step].ravel(), pixel[::step, ::-step].ravel()])


def _device_of(xp: ModuleType) -> int | None:
    """The current CuPy device (arrays of a plan live on one device); None for NumPy."""
    return None if xp.__name__ == "numpy" else int(xp.cuda.runtime.getDevice())


@functools.lru_cache(maxsize=16)
def _plan(xp: ModuleType, device: int | None, spec: FeatureSpec, height: int, width: int) -> _Plan:
    """The :class:`_Plan` of ``height`` x ``width`` frames, cached: a pure function of its arguments
    (``device`` only keys the cache, as CuPy arrays live on one device)."""
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
    cell = rows[:, None] * _grid_columns(spec) + cols[None, :]
    mirror_sign = np.where(right, np.float32(-1.0), np.float32(1.0))
    return _Plan(
        cell=xp.asarray(cell, dtype=xp.int64),
        cell_first_hog_bin=xp.asarray(cell * spec.hog_bins, dtype=xp.float32),
        mirror_sign=xp.asarray(mirror_sign, dtype=xp.float32),
        row_pool=xp.asarray(row_pool),
        column_pool=xp.asarray(column_pool),
        half_pool=xp.asarray(half_pool),
        cell_pixels=xp.asarray(np.outer(row_pixels, column_pool.sum(axis=0)).ravel()),
        half_pixels=xp.asarray(np.outer(row_pixels, half_pool.sum(axis=0))),
        row_mean=xp.full((width, 1), 1.0 / width, dtype=xp.float32),
        column_mean=xp.full((1, height), 1.0 / height, dtype=xp.float32),
        row_pool_moments=xp.asarray(np.concatenate([row_pool, _moments(height).T[1:]])),
        x_moments=xp.asarray(_moments(width)),
        noise_sample=xp.asarray(_mirror_sample_pixels(height, width), dtype=xp.int64),
    )


def _bincount(xp: ModuleType, index: Any, weights: Any, length: int) -> Any:
    """Weighted counts of ``index`` (1-D, values < length) as float32; empty input gives zeros."""
    if index.size == 0:  # cupy.bincount takes max() of its input, which fails on an empty array
        return xp.zeros(length, dtype=xp.float32)
    return xp.bincount(index, weights=weights, minlength=length).astype(xp.float32)  # float64 sums


def _normalise(hist: Any, xp: ModuleType) -> Any:
    """Histograms along the last axis scaled to sum 1 (all zeros stay zeros)."""
    total = hist.sum(axis=-1, keepdims=True)
    return xp.where(total > _EPS, hist / xp.maximum(total, _EPS), 0.0).astype(xp.float32)


def _mean_std(values: Any, xp: ModuleType) -> tuple[Any, Any]:
    """Mean and standard deviation over the last axis, equal to ``mean()`` and ``std()`` (the same
    sums and divisions) without their per-call overhead."""
    n = values.shape[-1]
    mean = values.sum(axis=-1, keepdims=True) / n
    centred = values - mean
    return mean[..., 0], xp.sqrt((centred * centred).sum(axis=-1) / n)


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
    centred = series - series.sum(axis=-1, keepdims=True) / n
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
    peak = xp.argmax(power, axis=-1)
    edge = xp.zeros(power.shape[:-1] + (1,), dtype=power.dtype)
    padded = xp.concatenate([edge, power, edge], axis=-1)
    # The peak and its two neighbours (zero past either end) in one gather.
    around = xp.take_along_axis(padded, peak[..., None] + xp.arange(3), axis=-1)
    left, centre, right = around[..., 0], around[..., 1], around[..., 2]
    curvature = left - 2.0 * centre + right
    shift = xp.where(curvature < -_EPS, 0.5 * (left - right) / xp.minimum(curvature, -_EPS), 0.0)
    cycles = peak.astype(xp.float32) + 1.0 + xp.clip(shift, -0.5, 0.5)
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
    steps, pixels = frames - 1, height * width
    field = xp.empty((batch, steps, 3, height, width), dtype=xp.float32)
    pair_sum = xp.add(gray[:, 1:], gray[:, :-1])
    xp.subtract(gray[:, 1:], gray[:, :-1], out=field[:, :, 0])
    # x differences over whole flattened frames (one contiguous run per frame, faster than row by
    # row); the two border columns, where they straddle rows, are zeroed below.
    flat_sum = pair_sum.reshape(batch, steps, pixels)
    flat_gx = field.reshape(batch, steps, 3, pixels)[:, :, 1]  # a view: field is contiguous
    xp.subtract(flat_sum[..., 2:], flat_sum[..., :-2], out=flat_gx[..., 1:-1])
    xp.subtract(pair_sum[..., 2:, :], pair_sum[..., :-2, :], out=field[:, :, 2, 1:-1, :])
    field[:, :, 1, :, :: width - 1] = 0.0  # first and last column
    field[:, :, 2, :: height - 1, :] = 0.0  # first and last row
    return field


def _profile_shift(profiles: Any, xp: ModuleType) -> Any:
    """Per step, the sub-pixel shift of 1-D intensity profiles (..., T, L) -> (..., T-1).

    Least squares to first order (``delta + shift * slope = 0``), then a refit over the
    positions that fit (residual within 3 robust std devs), so a moving actor does not drag it.
    """
    delta = profiles[..., 1:, :] - profiles[..., :-1, :]
    mid = 0.5 * (profiles[..., 1:, :] + profiles[..., :-1, :])
    slope = xp.zeros_like(mid)
    slope[..., 1:-1] = 0.5 * (mid[..., 2:] - mid[..., :-2])
    slope_slope, slope_delta = slope * slope, slope * delta

    def fit(squares: Any, products: Any) -> Any:  # the per-position terms slope^2 and slope * delta
        energy = squares.sum(axis=-1)
        return xp.where(energy > _EPS, -products.sum(axis=-1) / xp.maximum(energy, _EPS), 0.0)

    shift = fit(slope_slope, slope_delta)
    residual = xp.abs(delta + shift[..., None] * slope)
    limit = xp.float32(3 * 1.4826) * _median(residual, xp)
    fits = residual <= limit[..., None]  # selected by a product with the 0/1 mask (exact)
    return fit(slope_slope * fits, slope_delta * fits)


def _compensated_difference(field: Any, gray: Any, xp: ModuleType, plan: _Plan) -> Any:
    """Frame differences (B, S, H, W) minus what a global sub-pixel translation per step explains
    (to first order: diff + dx * gx + dy * gy), as one matrix product over the motion field.

    The translation comes from the column and row means of the frames (integral projections),
    cheap and robust for the small shifts of camera shake.
    """
    batch, steps, _, height, width = field.shape
    # Column and row means as small matrix products per frame (faster than strided reductions).
    column_means = (plan.column_mean @ gray)[..., 0, :]  # (B, T, W)
    row_means = (gray @ plan.row_mean)[..., 0]  # (B, T, H)
    if height == width:  # both directions in one pass
        dx, dy = _profile_shift(xp.stack([column_means, row_means]), xp)
    else:
        dx, dy = _profile_shift(column_means, xp), _profile_shift(row_means, xp)  # horizontal, vertical
    quarter = xp.float32(0.25)  # the field holds 4x the gradients
    coefficients = xp.stack([xp.ones_like(dx), dx * quarter, dy * quarter], axis=-1)[:, :, None, :]
    planes = field.reshape(batch, steps, 3, height * width)
    return xp.matmul(coefficients, planes).reshape(batch, steps, height, width)


def _motion_energy(diff: Any, xp: ModuleType, spec: FeatureSpec, plan: _Plan) -> tuple[Any, Any]:
    """Soft-thresholded frame differences (B, S, H, W): signed, and their magnitude (the motion energy).

    Per step, the median difference (a global brightness change: flicker, auto-exposure) is
    removed and the rest soft-thresholded at ``noise_factor`` robust standard deviations (MAD),
    so sensor noise and compression flicker do not count as motion while the moving minority of
    pixels does. The medians use a sparse pixel sample that is its own mirror image. ``diff`` is
    overwritten (it becomes the signed result).
    """
    batch, steps, height, width = diff.shape
    sample = xp.take(diff.reshape(batch, steps, height * width), plan.noise_sample, axis=-1)  # (B, S, n)
    median = _median(sample, xp)[..., None]
    sample -= median
    noise = xp.float32(1.4826) * _median(xp.abs(sample), xp)
    threshold = xp.maximum(xp.float32(spec.noise_factor) * noise, xp.float32(spec.noise_threshold))
    # The excess over the band median +- threshold is diff - clip(diff, band): two passes.
    low, high = median - threshold[..., None], median + threshold[..., None]
    in_band = xp.clip(diff, low[..., None], high[..., None])
    signed = xp.subtract(diff, in_band, out=diff)
    return signed, xp.abs(signed, out=in_band)


def _orientation_histograms(field: Any, xp: ModuleType, spec: FeatureSpec, plan: _Plan) -> tuple[Any, Any]:
    """HOG-like histograms (B, cells, hog_bins) of unsigned gradient orientation, weighted by the
    gradient magnitude, on every ``appearance_frame_step``-th step of the motion ``field``; also
    the (4x) gradient magnitude averaged over those steps (B, H, W).

    When folding, the right half of the frame is seen through a mirror (gx negated), so a mirrored
    clip gives the same histograms. Bins are centred on 0, pi/B, ... so axis-aligned and diagonal
    edges sit mid-bin, not on an edge.
    """
    batch, n_cells, n_bins = field.shape[0], plan.cell_pixels.shape[0], spec.hog_bins
    gx = field[:, :: spec.appearance_frame_step, 1]
    gy = field[:, :: spec.appearance_frame_step, 2]
    magnitude = xp.sqrt(gx * gx + gy * gy)
    if spec.mirror_fold:
        gx = gx * plan.mirror_sign
    orientation = xp.arctan2(gy, gx)
    orientation = orientation + xp.float32(math.pi) * (orientation < 0)  # in [0, pi]
    # Bin numbers are whole numbers in float32 (exact), so the histogram index is formed in float32.
    hog_bin = xp.floor(orientation * xp.float32(n_bins / math.pi) + xp.float32(0.5))
    hog_bin -= xp.float32(n_bins) * (hog_bin >= n_bins)  # the last half-bin wraps to bin 0
    clip_first_bin = xp.arange(0, batch * n_cells * n_bins, n_cells * n_bins, dtype=xp.float32)
    hog_bin += clip_first_bin.reshape(batch, 1, 1, 1) + plan.cell_first_hog_bin  # (B, 1, H, W)
    hog = _bincount(xp, hog_bin.astype(xp.int64).ravel(), magnitude.ravel(), batch * n_cells * n_bins)
    mean_magnitude = magnitude.sum(axis=1) / magnitude.shape[1]  # as mean(axis=1)
    return hog.reshape(batch, n_cells, n_bins), mean_magnitude


def _colour_histograms(rgb: Any, xp: ModuleType, spec: FeatureSpec) -> Any:
    """HSV marginal histograms (B, hue+sat+val bins) of channel-first pixels ``rgb`` (3, B, ...)
    in 0..1; hue counts only chromatic pixels.

    One joint histogram per clip over (hue bin or "not chromatic", saturation bin, value bin),
    counted in a single pass; the three histograms are its marginals."""
    r, g, b = rgb[0], rgb[1], rgb[2]
    value = xp.maximum(xp.maximum(r, g), b)
    chroma = value - xp.minimum(xp.minimum(r, g), b)
    saturation = xp.where(value > _EPS, chroma / xp.maximum(value, _EPS), xp.float32(0.0))
    safe = xp.maximum(chroma, _EPS)
    # Hue in sixths of the circle: (g - b) / chroma if red is the maximum, else 2 + (b - r) / chroma if
    # green is, else 4 + (r - g) / chroma.
    sector = xp.where(value == r, (g - b) / safe, xp.where(value == g, (b - r) / safe + 2, (r - g) / safe + 4))
    chromatic = (saturation > 0.1) & (value > 0.1)
    # Hue bin from the sector in [-1, 5]: floor first, then wrap negatives, so no rounding of
    # sector + 6 moves a pixel across a bin edge. Bins are whole numbers in float32 (exact).
    hue_bin = xp.floor(sector * xp.float32(spec.hue_bins / 6.0))
    hue_bin = xp.where(sector < 0, hue_bin + spec.hue_bins, hue_bin)
    hue_slot = xp.where(chromatic, xp.clip(hue_bin, 0, spec.hue_bins - 1), xp.float32(spec.hue_bins))
    sat_bin = xp.clip(xp.floor(saturation * xp.float32(spec.sat_bins)), 0, spec.sat_bins - 1)
    val_bin = xp.clip(xp.floor(value * xp.float32(spec.val_bins)), 0, spec.val_bins - 1)
    batch = rgb.shape[1]
    hue_slots = spec.hue_bins + 1
    first_slot = xp.arange(0, batch * hue_slots, hue_slots, dtype=xp.float32).reshape((batch,) + (1,) * (rgb.ndim - 2))
    joint_bin = ((first_slot + hue_slot) * spec.sat_bins + sat_bin) * spec.val_bins + val_bin
    n_joint = batch * hue_slots * spec.sat_bins * spec.val_bins
    joint = _bincount(xp, joint_bin.astype(xp.int64).ravel(), None, n_joint)
    joint = joint.reshape(batch, hue_slots, spec.sat_bins, spec.val_bins)  # whole counts, exact in float32
    counts = xp.concatenate(
        [joint[:, : spec.hue_bins].sum(axis=(2, 3)), joint.sum(axis=(1, 3)), joint.sum(axis=(1, 2))], axis=1
    )
    return counts / xp.float32(np.prod(rgb.shape[2:]))


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
    batch, _, height, width, _ = (int(v) for v in x.shape)
    scale = 1.0 / 255.0 if x.dtype == xp.uint8 else 1.0
    gray = _luma(x, xp, scale)  # (B, T, H, W) float32
    plan = _plan(xp, _device_of(xp), spec, height, width)

    # Temporal differences and (4x) spatial gradients of the mid-frames, computed once and shared
    # by the camera compensation, the normal flow and the appearance histograms.
    field = _motion_field(gray, xp)  # (B, S, 3, H, W)
    # Camera motion: per step, a global sub-pixel translation is estimated and compensated to
    # first order, so camera shake does not read as actor motion.
    diff = _compensated_difference(field, gray, xp, plan)  # (B, S, H, W)
    del gray  # big arrays are freed once used up: a smaller memory footprint
    signed_energy, energy = _motion_energy(diff, xp, spec, plan)  # (B, S, H, W) each

    blocks: dict[str, Any] = {}
    layout = _energy_layout(energy, xp, spec, plan, blocks)
    moving = _moving_pixels(field, signed_energy, energy, xp, spec, plan, blocks)
    _appearance_blocks(x, field, xp, spec, plan, scale, blocks)
    _temporal_blocks(layout, moving, xp, spec, (height, width), rate, blocks)

    columns = []
    for key, n_columns in _block_widths(spec):
        block = blocks[key].astype(xp.float32).reshape(batch, -1)
        if block.shape[1] != n_columns:
            raise AssertionError(f"block {key}: {block.shape[1]} columns, {n_columns} names")
        columns.append(block)
    return xp.concatenate(columns, axis=1)


@dataclass(frozen=True)
class _EnergyLayout:
    """Where the motion energy is, per frame step: the series the temporal block analyses."""

    cell_series: Any  # (B, cells, S) mean energy of each grid cell
    frame_energy: Any  # (B, S) total energy
    moving: Any  # (B, S) bool: the step has any energy
    cy: Any  # (B, S) energy centroid, y (0..1)
    cx: Any  # (B, S) energy centroid, x (0..1)
    cy_mean: Any  # (B,) energy-weighted mean of cy
    cx_mean: Any  # (B,) energy-weighted mean of cx


def _energy_layout(
    energy: Any, xp: ModuleType, spec: FeatureSpec, plan: _Plan, blocks: dict[str, Any]
) -> _EnergyLayout:
    """The motion-energy grid, left/right asymmetry and centroid blocks (into ``blocks``)."""
    batch, steps = energy.shape[:2]
    n_cells = spec.grid * _grid_columns(spec)
    # ---- motion energy on the grid: rows pooled once into grid rows, then columns (small); the
    # same product gives the energy's first and second moments along y for the centroid.
    pooled = plan.row_pool_moments @ energy  # (B, S, grid + 2, W)
    energy_rows = pooled[..., : spec.grid, :]  # (B, S, grid, W) sums over each grid row
    cell_series = (energy_rows @ plan.column_pool).reshape(batch, steps, n_cells) / plan.cell_pixels
    cell_series = xp.ascontiguousarray(xp.moveaxis(cell_series, 1, 2))  # (B, cells, S)
    cell_mean, cell_std = _mean_std(cell_series, xp)
    blocks["energy_grid"] = xp.stack([cell_mean, cell_std, cell_series.max(axis=-1)], axis=-1).reshape(batch, -1)
    halves = (energy_rows.sum(axis=1) @ plan.half_pool) / plan.half_pixels  # (B, grid, 2) mean energy
    left_right = halves.sum(axis=-1)
    blocks["energy_asym"] = xp.where(
        left_right > _EPS, xp.abs(halves[..., 0] - halves[..., 1]) / xp.maximum(left_right, _EPS), 0.0
    )

    # ---- motion centroid and spread (energy-weighted, coordinates in 0..1) from the energy's
    # moments per step: its total and its first and second moments along y and along x.
    moments_y = pooled[..., spec.grid :, :].sum(axis=-1)  # (B, S, 2): sums of e y, e y^2
    moments_x = energy_rows.sum(axis=2) @ plan.x_moments  # (B, S, 3): sums of e, e x, e x^2
    frame_energy = moments_x[..., 0]  # (B, S)
    safe_energy = xp.maximum(frame_energy, _EPS)
    moving = frame_energy > _EPS
    cy = moments_y[..., 0] / safe_energy
    cx = moments_x[..., 1] / safe_energy
    sy = xp.sqrt(xp.maximum(moments_y[..., 1] / safe_energy - cy * cy, 0.0))
    sx = xp.sqrt(xp.maximum(moments_x[..., 2] / safe_energy - cx * cx, 0.0))
    means, stds = _weighted_stats(xp.stack([cy, cx, sy, sx]), frame_energy, xp)  # (4, B) each
    cy_mean, cx_mean, sy_mean, sx_mean = means
    cy_std, cx_std = stds[0], stds[1]
    any_motion = moving.any(axis=-1)
    cx_offset = xp.where(any_motion, xp.abs(cx_mean - 0.5), 0.0)
    # Shape of the moving region, free of scale: tall (pull-ups) vs wide (push-ups).
    spread_sum = sy_mean + sx_mean
    y_share = xp.where(spread_sum > _EPS, sy_mean / xp.maximum(spread_sum, _EPS), 0.0)
    blocks["centroid"] = xp.stack([cy_mean, cx_offset, cy_std, cx_std, sy_mean, sx_mean, y_share], axis=-1)
    return _EnergyLayout(cell_series, frame_energy, moving, cy, cx, cy_mean, cx_mean)


@dataclass(frozen=True)
class _MovingPixels:
    """The moving pixels of a batch (energy > 0), flat, with what the net-flow series needs."""

    step_of: Any  # clip * S + step of each
    gx: Any  # 4x spatial gradients of the mid-frame
    gy: Any
    signed_energy: Any
    grad2: Any  # gx^2 + gy^2


def _moving_pixels(
    field: Any, signed_energy: Any, energy: Any, xp: ModuleType, spec: FeatureSpec, plan: _Plan, blocks: dict[str, Any]
) -> _MovingPixels:
    """The active fraction and the normal-flow direction histograms (into ``blocks``).

    Normal-flow direction at moving pixels only (usually a small fraction of the clip): the
    spatial gradient of the mid-frame signed by the temporal change, horizontal component folded
    (left = right); angle from -pi/2 (down) through 0 (horizontal) to pi/2 (up)."""
    batch, steps, height, width = energy.shape
    pixels = height * width
    n_cells = spec.grid * _grid_columns(spec)
    moving_at = xp.flatnonzero(energy > 0)  # flat indices into (B, S, H, W)
    step_of = moving_at // pixels  # clip * S + step
    clip_of = step_of // steps
    # moving_at is sorted: each clip's moving pixels are one run, found by binary search.
    clip_runs = xp.searchsorted(moving_at, xp.arange(batch + 1) * (steps * pixels))
    moving_pixels = (clip_runs[1:] - clip_runs[:-1]).astype(xp.float32)
    blocks["active"] = (moving_pixels / float(steps * pixels))[:, None]
    pixel_of = moving_at - step_of * pixels
    in_field = moving_at + step_of * (2 * pixels)  # the same pixel in the (B, S, 3, H, W) field
    gx_m = xp.take(field, in_field + pixels)  # take without an axis: elements of the flat array
    gy_m = xp.take(field, in_field + 2 * pixels)
    signed_energy_m = xp.take(signed_energy, moving_at)
    sign_m, energy_m = xp.sign(signed_energy_m), xp.abs(signed_energy_m)
    grad2_m = gx_m * gx_m + gy_m * gy_m
    flow_angle = xp.arctan2(sign_m * gy_m, xp.abs(gx_m))
    flow_bin = xp.minimum(
        ((flow_angle + xp.float32(math.pi / 2)) * xp.float32(spec.flow_bins / math.pi)).astype(xp.int64),
        spec.flow_bins - 1,
    )
    flow_index = (clip_of * n_cells + xp.take(plan.cell, pixel_of)) * spec.flow_bins + flow_bin
    flow_cells = _bincount(xp, flow_index, energy_m * xp.sqrt(grad2_m), batch * n_cells * spec.flow_bins)
    flow_cells = flow_cells.reshape(batch, n_cells, spec.flow_bins)
    blocks["flow_hist"] = _normalise(flow_cells.sum(axis=1), xp)
    coarse = flow_cells.reshape(batch, n_cells, spec.cell_flow_bins, spec.flow_bins // spec.cell_flow_bins).sum(axis=-1)
    blocks["flow_cells"] = _normalise(coarse, xp).reshape(batch, -1)
    return _MovingPixels(step_of, gx_m, gy_m, signed_energy_m, grad2_m)


def _appearance_blocks(
    x: Any, field: Any, xp: ModuleType, spec: FeatureSpec, plan: _Plan, scale: float, blocks: dict[str, Any]
) -> None:
    """HOG, edge density and colour histograms (into ``blocks``).

    Appearance on every k-th mid-frame (the 4x gradient scale cancels in the normalised
    histograms and is divided out of the edge density)."""
    batch = x.shape[0]
    n_cells = spec.grid * _grid_columns(spec)
    hog, mean_magnitude = _orientation_histograms(field, xp, spec, plan)
    blocks["hog_cells"] = _normalise(hog, xp).reshape(batch, -1)
    blocks["hog_global"] = _normalise(hog.sum(axis=1), xp)
    edge_sums = (xp.matmul(plan.row_pool, mean_magnitude) @ plan.column_pool).reshape(batch, n_cells)
    blocks["edges"] = edge_sums * xp.float32(0.25) / plan.cell_pixels
    rgb = xp.moveaxis(x[:, :: spec.appearance_frame_step, ::2], -1, 0).astype(xp.float32, order="C")  # planes
    rgb *= xp.float32(scale)
    blocks["colour"] = _colour_histograms(rgb, xp, spec)


def _temporal_blocks(
    layout: _EnergyLayout,
    moving: _MovingPixels,
    xp: ModuleType,
    spec: FeatureSpec,
    frame_size: tuple[int, int],
    rate: Any,
    blocks: dict[str, Any],
) -> None:
    """Statistics and spectra of the energy, net-flow and centroid series (into ``blocks``)."""
    batch, steps = layout.frame_energy.shape
    height, width = frame_size
    n_cells = spec.grid * _grid_columns(spec)
    global_series = layout.frame_energy / float(height * width)  # (B, S) mean energy per step
    _, slope = _detrended(global_series, xp)

    # Net flow per step by least squares over moving pixels (fraction of the frame per step):
    # up is positive; the horizontal sign flips under a mirror, so only |mean|, std, spectrum.
    # The gradients are 4x, their squares 16x: the ratio is a quarter of the flow.

    def step_sums(weights: Any) -> Any:
        return _bincount(xp, moving.step_of, weights, batch * steps).reshape(batch, steps)

    safe_grad = xp.maximum(step_sums(moving.grad2), _EPS) * xp.float32(0.25)
    flow_up = step_sums(moving.signed_energy * moving.gy) / safe_grad / height
    flow_right = -step_sums(moving.signed_energy * moving.gx) / safe_grad / width
    # Steps without motion take the clip's mean centroid so they add no oscillation.
    cy_filled = xp.where(layout.moving, layout.cy, layout.cy_mean[:, None])
    cx_filled = xp.where(layout.moving, layout.cx, layout.cx_mean[:, None])
    series_means, series_stds = _mean_std(xp.stack([global_series, flow_up, flow_right]), xp)  # (3, B) each
    (mean, up_mean, right_mean), (std, up_std, right_std) = series_means, series_stds
    cv = xp.where(mean > _EPS, std / xp.maximum(mean, _EPS), 0.0)

    # Every spectrum of the clip in one rFFT: global energy, energy per cell, net flow, centroid.
    series = xp.concatenate(
        [global_series[:, None], layout.cell_series, xp.stack([flow_up, flow_right, cy_filled, cx_filled], axis=1)],
        axis=1,
    )
    freq, strength = _spectrum_peak(series, xp, rate)  # (B, 1 + cells + 4)
    blocks["energy_series"] = xp.stack([mean, std, cv, slope * (steps - 1), freq[:, 0], strength[:, 0]], axis=-1)
    blocks["energy_cells_spectrum"] = xp.stack(
        [freq[:, 1 : 1 + n_cells], strength[:, 1 : 1 + n_cells]], axis=-1
    ).reshape(batch, -1)
    up, right, ys_, xs_ = (1 + n_cells + k for k in range(4))
    blocks["flow_series"] = xp.stack(
        [
            up_mean,
            up_std,
            freq[:, up],
            strength[:, up],
            xp.abs(right_mean),
            right_std,
            freq[:, right],
            strength[:, right],
        ],
        axis=-1,
    )
    blocks["centroid_series"] = xp.stack([freq[:, ys_], strength[:, ys_], freq[:, xs_], strength[:, xs_]], axis=-1)
