"""What a clip is (:class:`ClipSpec`) and which frames and augmentation each clip gets.

Everything here is a pure function of its arguments, so training is reproducible: the random
draws for a clip come from ``numpy.random.default_rng([seed, epoch, video_index])`` and do not
depend on batch composition, sharding or thread timing.

Frame sampling
--------------
* ``"window"`` (3D CNNs): ``frames`` frames ``stride`` apart. Training: a random start.
  Evaluation: clip ``k`` of ``K`` starts at an evenly spaced position over the whole video
  (``K = 1``: the centred window). The stride is counted at ``stride_fps`` (25 by default, UCF101's
  rate): a video at another rate gets it scaled by its rate over that one, rounded frame by frame,
  so every clip spans the same time (a 50 fps video: every 4th frame; 29.97 fps: 0, 2, 5, 7, 10, ...;
  below ``stride_fps / stride`` a frame can repeat). Without ``stride_fps``, or for a video of
  unknown rate, the stride is in the video's own frames.
* ``"segment"`` (TSN, 2D CNNs): the video is cut into ``frames`` equal segments and one frame is
  taken from each. Training: a random frame per segment. Evaluation: clip ``k`` of ``K`` takes
  the frame at fraction ``(k + 0.5) / K`` of every segment (``K = 1``: segment centres).

Videos shorter than a clip **loop**: a window that runs past the last frame wraps around to
frame 0 (index ``i mod n``), so motion stays natural instead of freezing on a padded last frame.
Segment sampling of a video with fewer frames than segments repeats frames (each segment maps to
the nearest frame).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SAMPLINGS = ("window", "segment")
MODES = ("train", "eval")
LAYOUTS = ("BTCHW", "BCTHW", "BTHWC")

# Training augmentation ranges (one draw per clip, applied to every frame of the clip).
CROP_SCALE = (0.35, 1.0)  # fraction of the frame area kept by the random resized crop
CROP_RATIO = (3 / 4, 4 / 3)  # aspect ratio range of the crop
MAX_ROTATION_DEG = 10.0
BRIGHTNESS = 0.25  # multiplicative factor drawn from [1 - x, 1 + x]
CONTRAST = 0.25
SATURATION = 0.25
EVAL_RESIZE_RATIO = 1.14  # eval resizes the short side to ~size * 1.14 (e.g. 128 for 112, 256 for 224)
STRIDE_FPS = 25.0  # the frame rate a window's stride is counted at (see "Frame sampling")


@dataclass(frozen=True)
class ClipSpec:
    """Shape, sampling, augmentation mode, layout and normalisation of the clips a model sees.

    ``mean``/``std`` are in 0..1 units and come from the model's weights metadata; ``None``
    (required for ``BTHWC``) yields raw uint8 pixels. ``stride_fps``: the frame rate ``stride`` is
    counted at (None: in each video's own frames; see "Frame sampling").
    """

    frames: int = 16
    size: int = 112
    sampling: str = "window"
    stride: int = 2
    mode: str = "eval"
    test_clips: int = 1
    layout: str = "BCTHW"
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    resize_short: int | None = None
    stride_fps: float | None = STRIDE_FPS

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"unknown sampling {self.sampling!r}; use one of {SAMPLINGS}")
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; use one of {MODES}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}; use one of {LAYOUTS}")
        if self.frames < 1 or self.size < 8 or self.stride < 1 or self.test_clips < 1:
            raise ValueError(f"invalid clip spec: {self}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std, or neither")
        if self.stride_fps is not None and not self.stride_fps > 0:
            raise ValueError(f"stride_fps must be positive or None, got {self.stride_fps}")
        if self.resize_short is not None and self.resize_short < self.size:
            raise ValueError(f"resize_short {self.resize_short} is smaller than the crop size {self.size}")

    @property
    def short_side(self) -> int:
        """Shorter side frames are resized to before the centre crop (eval) and the cache size."""
        return self.resize_short or int(math.ceil(self.size * EVAL_RESIZE_RATIO))

    @property
    def normalized(self) -> bool:
        return self.mean is not None

    @property
    def clips_per_video(self) -> int:
        """Clips per video in one pass: ``test_clips`` in eval mode, one in training."""
        return self.test_clips if self.mode == "eval" else 1


@dataclass(frozen=True)
class Augmentation:
    """One draw of training augmentation, applied identically to every frame of one clip.

    The crop is in source pixels: ``(x, y, width, height)`` of the frame the clip is taken from.
    """

    crop: tuple[float, float, float, float]
    flip: bool
    angle: float
    brightness: float
    contrast: float
    saturation: float


def clip_rng(seed: int, epoch: int, video_index: int) -> np.random.Generator:
    """The random generator of one video in one epoch of one run."""
    return np.random.default_rng([int(seed), int(epoch), int(video_index)])


def known_rate(fps: float) -> bool:
    """Whether ``fps`` is a usable frame rate (0, negative, NaN or infinite: unknown)."""
    return math.isfinite(fps) and fps > 0


def frame_step(spec: ClipSpec, fps: float) -> float:
    """Frames between a window's samples in a video of ``fps`` frames per second: ``stride`` at
    ``stride_fps``, scaled to the video's rate (``fps`` not a positive number: unknown, ``stride``)."""
    if spec.stride_fps is None or not known_rate(fps):
        return float(spec.stride)
    return spec.stride * fps / spec.stride_fps


def stride_text(stride: int, stride_fps: float | None) -> str:
    """A window's frames and their spacing, for protocols, reports and model cards."""
    if stride_fps is None:
        return f"frames {stride} apart in each video"
    return (
        f"frames {stride / stride_fps * 1000:.0f} ms apart: stride {stride} at {stride_fps:g} fps, "
        "scaled to each video's frame rate and rounded to the nearest frame"
    )


def _offsets(spec: ClipSpec, fps: float) -> np.ndarray:
    """Each window sample's frame offset from the window's first frame."""
    return np.floor(np.arange(spec.frames) * frame_step(spec, fps) + 0.5).astype(np.int64)


def window_span(spec: ClipSpec, *, fps: float) -> int:
    """Number of source frames a window clip covers in a video of ``fps`` frames per second."""
    return int(_offsets(spec, fps)[-1]) + 1


def _window(start: int, spec: ClipSpec, n_frames: int, fps: float) -> np.ndarray:
    return (start + _offsets(spec, fps)) % n_frames


def _segment(offsets: np.ndarray, spec: ClipSpec, n_frames: int) -> np.ndarray:
    """Frame ``offsets`` (0..1) into each of ``spec.frames`` equal segments of the video."""
    length = n_frames / spec.frames
    positions = (np.arange(spec.frames) + offsets) * length
    return np.minimum(np.floor(positions).astype(np.int64), n_frames - 1)


def eval_indices(n_frames: int, spec: ClipSpec, clip: int = 0, *, fps: float) -> np.ndarray:
    """Deterministic frame indices of clip ``clip`` (0..test_clips-1) of a video of ``n_frames``
    at ``fps`` frames per second (0: unknown)."""
    if n_frames < 1:
        raise ValueError("a video needs at least one frame")
    if not 0 <= clip < spec.test_clips:
        raise ValueError(f"clip {clip} out of range for test_clips={spec.test_clips}")
    k, count = clip, spec.test_clips
    if spec.sampling == "segment":
        return _segment(np.full(spec.frames, (k + 0.5) / count), spec, n_frames)
    free = max(n_frames - window_span(spec, fps=fps), 0)
    start = free // 2 if count == 1 else int(round(k * free / (count - 1)))
    return _window(start, spec, n_frames, fps)


def train_indices(n_frames: int, spec: ClipSpec, rng: np.random.Generator, *, fps: float) -> np.ndarray:
    """Random frame indices of one training clip of a video of ``n_frames`` at ``fps`` frames per
    second (window: random start; segment: TSN)."""
    if n_frames < 1:
        raise ValueError("a video needs at least one frame")
    if spec.sampling == "segment":
        return _segment(rng.random(spec.frames), spec, n_frames)
    free = max(n_frames - window_span(spec, fps=fps), 0)
    return _window(int(rng.integers(0, free + 1)), spec, n_frames, fps)


def draw_augmentation(rng: np.random.Generator, height: int, width: int) -> Augmentation:
    """One random-resized-crop + flip + rotation + colour jitter draw for a (height, width) frame.

    Like torchvision's RandomResizedCrop: up to 10 tries for a crop of the requested area and
    aspect ratio that fits, else the largest centred crop with a ratio inside the range.
    """
    area = height * width
    crop = None
    for _ in range(10):
        target = area * rng.uniform(*CROP_SCALE)
        ratio = math.exp(rng.uniform(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])))
        crop_w = math.sqrt(target * ratio)
        crop_h = math.sqrt(target / ratio)
        if crop_w <= width and crop_h <= height:
            x = rng.uniform(0, width - crop_w)
            y = rng.uniform(0, height - crop_h)
            crop = (x, y, crop_w, crop_h)
            break
    if crop is None:
        ratio = min(max(width / height, CROP_RATIO[0]), CROP_RATIO[1])
        crop_w, crop_h = min(width, height * ratio), min(height, width / ratio)
        crop = ((width - crop_w) / 2, (height - crop_h) / 2, crop_w, crop_h)
    return Augmentation(
        crop=tuple(float(v) for v in crop),  # type: ignore[arg-type]
        flip=bool(rng.random() < 0.5),
        angle=float(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG)),
        brightness=float(rng.uniform(1 - BRIGHTNESS, 1 + BRIGHTNESS)),
        contrast=float(rng.uniform(1 - CONTRAST, 1 + CONTRAST)),
        saturation=float(rng.uniform(1 - SATURATION, 1 + SATURATION)),
    )


def centre_crop_window(height: int, width: int, spec: ClipSpec) -> tuple[np.ndarray, np.ndarray]:
    """Relative ``[y, x]`` start and end of the source window that, resized to ``spec.size``,
    equals the centre crop of the frame resized to ``spec.short_side``."""
    fraction = spec.size / spec.short_side  # of the shorter side
    short = min(height, width)
    rel_h, rel_w = fraction * short / height, fraction * short / width
    start = np.array([(1 - rel_h) / 2, (1 - rel_w) / 2], np.float32)
    return start, (start + np.array([rel_h, rel_w], np.float32)).astype(np.float32)


def window_matrix(start: np.ndarray, end: np.ndarray, frame_size: tuple[int, int], output_size: int) -> np.ndarray:
    """The (3, 3) map from output pixel coordinates to source pixel coordinates that resamples the
    relative ``[y, x]`` window ``start``..``end`` of a (height, width) frame onto an
    ``output_size`` square (continuous coordinates, like :func:`augmentation_matrix`)."""
    height, width = frame_size
    scale_y = float(end[0] - start[0]) * height / output_size
    scale_x = float(end[1] - start[1]) * width / output_size
    return np.array(
        [[scale_x, 0, float(start[1]) * width], [0, scale_y, float(start[0]) * height], [0, 0, 1]], np.float32
    )


def augmentation_matrix(
    aug: Augmentation, drawn_size: tuple[int, int], frame_size: tuple[int, int], output_size: int
) -> np.ndarray:
    """The affine map from output pixel coordinates to source pixel coordinates, as a (3, 3)
    homogeneous matrix (last row ``0 0 1``; its first two rows are the 2x3 affine map).

    Output (``output_size`` square) -> rotate by ``aug.angle`` about the centre -> mirror if
    ``aug.flip`` -> scale into ``aug.crop``. The crop was drawn on a frame of ``drawn_size``
    (height, width) and is rescaled to the frame actually fed (``frame_size``), so the same
    draw means the same crop on a cached, resized copy. Continuous coordinates (pixel centres
    at +0.5), as DALI's ``warp_affine`` and ``experimental.warp_perspective`` (with
    ``pixel_origin="corner"``) use them.
    """
    scale_y, scale_x = frame_size[0] / drawn_size[0], frame_size[1] / drawn_size[1]
    x, y, w, h = aug.crop
    centre = output_size / 2
    theta = math.radians(aug.angle)
    cos, sin = math.cos(theta), math.sin(theta)
    rotate = np.array(
        [[cos, -sin, centre - cos * centre + sin * centre], [sin, cos, centre - sin * centre - cos * centre], [0, 0, 1]]
    )
    mirror = np.array([[-1, 0, output_size], [0, 1, 0], [0, 0, 1]]) if aug.flip else np.eye(3)
    crop = np.array(
        [[w * scale_x / output_size, 0, x * scale_x], [0, h * scale_y / output_size, y * scale_y], [0, 0, 1]]
    )
    return (crop @ mirror @ rotate).astype(np.float32)


def jitter_normalization(
    aug: Augmentation, mean: tuple[float, ...] | None, std: tuple[float, ...] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-clip (mean, std) in pixel units that apply ``aug``'s brightness and contrast and then
    the weights' normalisation in one step.

    Brightness ``b`` and contrast ``c`` (around grey 128, as DALI's ``brightness_contrast``) map a
    pixel ``x`` to ``b * c * x + 128 * b * (1 - c)``; normalising that by ``(M, S)`` equals
    ``(x - mean') / std'`` with ``mean' = (M - 128 b (1 - c)) / (b c)`` and ``std' = S / (b c)``.
    Without weights (raw uint8 clips) ``M = 0`` and ``S = 1``. Values are not clipped to 0..255
    before normalising (torchvision's ColorJitter clips; the difference only affects pixels the
    jitter pushes past white or black).
    """
    base_mean = np.zeros(3) if mean is None else 255.0 * np.asarray(mean, dtype=np.float64)
    base_std = np.ones(3) if std is None else 255.0 * np.asarray(std, dtype=np.float64)
    gain = aug.brightness * aug.contrast
    shift = 128.0 * aug.brightness * (1.0 - aug.contrast)
    return ((base_mean - shift) / gain).astype(np.float32), (base_std / gain).astype(np.float32)


def epoch_order(n_videos: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """Order of video indices in one epoch: a permutation seeded by (seed, epoch), or identity."""
    if not shuffle:
        return np.arange(n_videos, dtype=np.int64)
    return np.random.default_rng([int(seed), int(epoch), 0x5EED]).permutation(n_videos).astype(np.int64)


def shard_indices(order: np.ndarray, num_shards: int, shard_id: int, *, equal: bool) -> np.ndarray:
    """This shard's share of ``order``: disjoint across shards.

    ``equal=False`` (evaluation): shards cover every item, sizes differ by at most one.
    ``equal=True`` (training, DDP needs the same number of steps per rank): every shard gets
    ``len(order) // num_shards`` items; the at most ``num_shards - 1`` items left over are skipped
    for this epoch (a different, shuffled set each epoch).
    """
    if num_shards < 1 or not 0 <= shard_id < num_shards:
        raise ValueError(f"invalid shard {shard_id} of {num_shards}")
    if equal:
        order = order[: len(order) // num_shards * num_shards]
    return order[shard_id::num_shards]
