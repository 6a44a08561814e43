"""What was trained, read back from each result's ``config``: the CNNs' weights, clips and epochs,
the classical models' chosen hyper-parameters and search grid; and the warnings they call for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from analysis.names import human_name
from core.schema import ModelResult
from pipelines.video.clips import stride_text

TORCHVISION_WEIGHTS = {
    "IMAGENET1K_V1": "torchvision IMAGENET1K_V1 (ImageNet-1k)",
    "KINETICS400_V1": "torchvision KINETICS400_V1 (Kinetics-400)",
}
FROM_SCRATCH = "from scratch"
RECIPE_FRAMES = 16  # the clip the architectures were designed and pretrained for
RECIPE_SIZE = 112


def weights_text(weights: object) -> str:
    """ "from scratch", a torchvision weights name, or the checkpoint path a CNN started from."""
    if weights in (None, "", "none", "None"):
        return FROM_SCRATCH
    text = str(weights)
    return TORCHVISION_WEIGHTS.get(text, f"checkpoint {text}")


@dataclass(frozen=True)
class EpochRow:
    epoch: int  # 1-based
    loss: float | None
    val_macro_f1: float | None
    lr: float | None


@dataclass(frozen=True)
class DeepTraining:
    """How one CNN was trained (from its result's config)."""

    model: str
    weights: str  # weights_text
    from_scratch: bool
    frames: int | None
    size: int | None
    sampling: str
    epochs_planned: int | None
    epochs_run: int | None
    best_epoch: int | None
    test_clips: int | None
    batch_size: int | None
    lr: float | None
    profile: str | None
    decode_routes: dict[str, int] | None  # clips per decode route (config["decode"]["routes"])
    frames_decoded_per_clip: float | None  # the PyAV route's work per clip it served
    cache_hit_rate: float | None  # of the decoded-clip cache's video reads
    history: list[EpochRow]

    @property
    def epochs_text(self) -> str:
        if self.epochs_run is None:
            return "n/a" if self.epochs_planned is None else str(self.epochs_planned)
        planned = f" of {self.epochs_planned}" if self.epochs_planned and self.epochs_planned != self.epochs_run else ""
        best = f" (best: epoch {self.best_epoch})" if self.best_epoch else ""
        return f"{self.epochs_run}{planned}{best}"


def _int(config: Mapping[str, Any], key: str) -> int | None:
    value = config.get(key)
    return None if value is None else int(value)


def _float(row: Mapping[str, Any], key: str) -> float | None:
    value = row.get(key)
    return None if value is None else float(value)


def _sampling(model: str, config: Mapping[str, Any]) -> str:
    if model == "cnn2d":
        return "TSN segments (one frame from each of equal segments)"
    stride = config.get("stride")
    if stride is None:
        return "consecutive frames"
    return f"a window of {stride_text(int(stride), config.get('stride_fps'))}"


def deep_training(result: ModelResult) -> DeepTraining:
    config = result.config
    weights = config.get("weights")
    decode = config.get("decode")
    decode = decode if isinstance(decode, Mapping) else {}
    routes = decode.get("routes")
    history = [
        EpochRow(int(row.get("epoch", i)) + 1, _float(row, "loss"), _float(row, "val_macro_f1"), _float(row, "lr"))
        for i, row in enumerate(config.get("history") or [])
    ]
    return DeepTraining(
        model=result.model,
        weights=weights_text(weights),
        from_scratch=weights_text(weights) == FROM_SCRATCH,
        frames=_int(config, "frames"),
        size=_int(config, "size"),
        sampling=_sampling(result.model, config),
        epochs_planned=_int(config, "epochs"),
        epochs_run=_int(config, "epochs_run"),
        best_epoch=_int(config, "best_epoch"),
        test_clips=_int(config, "test_clips"),
        batch_size=_int(config, "batch_size"),
        lr=None if config.get("lr") is None else float(config["lr"]),
        profile=config.get("profile"),
        decode_routes={str(k): int(v) for k, v in routes.items()} if isinstance(routes, Mapping) else None,
        frames_decoded_per_clip=_float(decode, "frames_decoded_per_clip"),
        cache_hit_rate=_float(decode, "cache_hit_rate"),
        history=history,
    )


def training_warnings(trained: Sequence[DeepTraining]) -> list[str]:
    """One plain sentence per CNN trained in a way that makes it weaker than its architecture can be."""
    warnings = []
    for t in trained:
        reasons = []
        if t.from_scratch:
            reasons.append("from scratch (no pretrained weights)")
        if t.frames is not None and t.frames < RECIPE_FRAMES:
            reasons.append(f"on {t.frames}-frame clips (the recipe uses {RECIPE_FRAMES})")
        if t.size is not None and t.size < RECIPE_SIZE:
            reasons.append(f"at {t.size} px (the recipe uses at least {RECIPE_SIZE})")
        if reasons:
            epochs = t.epochs_run or t.epochs_planned
            for_epochs = f" for {epochs} epoch(s)" if epochs else ""
            warnings.append(
                f"{human_name(t.model)} was trained {', '.join(reasons)}{for_epochs}: its scores say what this "
                "budget buys, not what the architecture can do."
            )
    return warnings


@dataclass(frozen=True)
class Candidate:
    params: dict[str, Any]
    mean_macro_f1: float | None
    std_macro_f1: float | None


@dataclass(frozen=True)
class Tuning:
    """The hyper-parameter search of one classical model (from its result's config)."""

    model: str
    chosen: dict[str, Any]
    grid: dict[str, list[Any]]
    cv_folds: int | None
    cv_macro_f1: float | None
    selection: str
    candidates: list[Candidate]


def tuning(result: ModelResult) -> Tuning:
    config = result.config
    candidates = [
        Candidate(dict(row.get("params") or {}), _float(row, "mean_macro_f1"), _float(row, "std_macro_f1"))
        for row in config.get("cv_results") or []
    ]
    return Tuning(
        model=result.model,
        chosen=dict(config.get("params") or {}),
        grid={str(k): list(v) for k, v in (config.get("grid") or {}).items()},
        cv_folds=_int(config, "cv_folds"),
        cv_macro_f1=_float(config, "cv_macro_f1"),
        selection=str(config.get("selection") or ""),
        candidates=candidates,
    )


def params_text(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items())) or "defaults"


def grid_text(grid: Mapping[str, Sequence[Any]]) -> str:
    return "; ".join(f"{k} in {list(v)}" for k, v in sorted(grid.items())) or "none"
