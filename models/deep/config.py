"""The settings of one deep training run (:class:`DeepConfig`).

The per-machine values (tiny, cpu, gpu) are defined once, in ``workflow/profiles.py``; the defaults
here are the recipe's own (R3D-18 at 16 x 112 px, the notebook study's clip).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from models.networks import cnn2d, cnn3d
from pipelines.data.video_stream import FRAMES_DEFINITION
from pipelines.video.clips import STRIDE_FPS
from pipelines.video.decode import SHRINK_FILTER

MODELS = ("cnn2d", "cnn3d")
OPTIMIZERS = ("adamw", "sgd")
# Settings that do not change what the main model learns: the profile is a label; the decoded-clip
# cache and its size limit, thread counts, memory layout and torch.compile only change speed (results
# stored the layout actually used under "channels_last"); the learning-curve settings concern the
# curve's retrained models, whose points carry their own fingerprint (models/deep/curve.py).
NOT_IN_MODEL = frozenset(
    {
        "profile",
        "num_threads",
        "cache",
        "cache_max_gb",
        "channels_last",
        "compile",
        "learning_curve_fractions",
        "learning_curve_epochs",
    }
)


@dataclass(frozen=True)
class DeepConfig:
    """Every knob of one deep training run. ``None`` for amp/channels_last means "on with CUDA"."""

    model: str = "cnn3d"
    profile: str = "custom"  # the profile these settings came from (a label in result files)
    epochs: int = 20
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.05
    optimizer: str = "adamw"
    momentum: float = 0.9
    warmup_epochs: float = 2.0
    label_smoothing: float = 0.1
    amp: bool | None = None
    compile: bool = False
    channels_last: bool | None = None
    frames: int = 16
    size: int = 112
    stride: int = 2
    stride_fps: float | None = STRIDE_FPS  # the frame rate stride is counted at (None: each video's frames)
    weights: str = "default"  # the model's pretrained weights (IMAGENET1K_V1 / KINETICS400_V1), none, or a file
    freeze: str = "none"
    pooling: str = "avg"
    dropout: float = 0.5
    test_clips: int = 5
    val_clips: int = 1
    grad_accum: int = 1
    patience: int = 5
    deterministic: bool = False
    seed: int = 0
    num_threads: int = 2
    # Decoded-clip cache under RUN_DIR/cache (speed only: what is trained stays the same). None: the
    # backend's default (core.backend.CLIP_CACHE_DEFAULT: on with CPU decoding, off with NVDEC).
    cache: bool | None = None
    cache_max_gb: float | None = None  # its size limit (1e9 bytes); None: 25% of the disk space free for it
    learning_curve_fractions: tuple[float, ...] = (0.25, 0.5, 1.0)
    learning_curve_epochs: int | None = None  # None: the same epochs as the main run

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"unknown deep model {self.model!r}; use one of {MODELS}")
        if self.weights == "default":
            default = cnn2d.DEFAULT_WEIGHTS if self.model == "cnn2d" else cnn3d.DEFAULT_WEIGHTS
            object.__setattr__(self, "weights", default)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; use one of {OPTIMIZERS}")
        if min(self.epochs, self.batch_size, self.frames, self.test_clips, self.val_clips, self.grad_accum) < 1:
            raise ValueError("epochs, batch_size, frames, test_clips, val_clips and grad_accum must be >= 1")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.model == "cnn2d" and self.pooling not in cnn2d.POOLINGS:
            raise ValueError(f"unknown pooling {self.pooling!r}; use one of {cnn2d.POOLINGS}")
        if self.model == "cnn3d" and self.freeze not in cnn3d.FREEZE_CHOICES:
            raise ValueError(f"unknown freeze {self.freeze!r}; use one of {cnn3d.FREEZE_CHOICES}")
        if self.cache_max_gb is not None and self.cache_max_gb <= 0:
            raise ValueError(f"cache_max_gb must be positive, got {self.cache_max_gb}")
        if not all(0 < f <= 1 for f in self.learning_curve_fractions):
            raise ValueError("learning-curve fractions must be in (0, 1]")
        object.__setattr__(self, "learning_curve_fractions", tuple(float(f) for f in self.learning_curve_fractions))

    @classmethod
    def from_saved(cls, saved: Mapping[str, Any]) -> DeepConfig:
        """The settings stored with a model, result or checkpoint (keys this version lacks are
        ignored). Saved before ``stride_fps`` existed, the stride was in each video's frames."""
        known = set(cls.__dataclass_fields__)
        settings = {key: value for key, value in saved.items() if key in known}
        settings.setdefault("stride_fps", None)
        return cls(**settings)

    def to_dict(self) -> dict[str, Any]:
        """The settings, and how the clips' frames are decoded (not settings: the filter they are
        shrunk with and which packets are frames, recorded so that checkpoints, results and
        learning-curve points of frames decoded otherwise are not continued or reused)."""
        data = asdict(self)
        data["learning_curve_fractions"] = list(self.learning_curve_fractions)
        data["shrink_filter"] = SHRINK_FILTER
        data["frames_definition"] = FRAMES_DEFINITION
        return data

    @property
    def unused_settings(self) -> frozenset[str]:
        """Settings this model's clips do not depend on, left out of every comparison: the 2D CNN's
        TSN segments ignore ``stride_fps``, so its results from before that setting stay current."""
        return frozenset({"stride_fps"}) if self.model == "cnn2d" else frozenset()

    def changes_from(self, saved: Mapping[str, Any], ignore: frozenset[str] = NOT_IN_MODEL) -> list[str]:
        """``"name: saved -> current"`` for every setting, outside ``ignore`` and
        :attr:`unused_settings`, that differs from ``saved`` (the settings stored in a result or
        checkpoint)."""
        current = self.to_dict()
        return [
            f"{name}: {saved.get(name)!r} -> {value!r}"
            for name, value in current.items()
            if name not in ignore | self.unused_settings and saved.get(name) != value
        ]
