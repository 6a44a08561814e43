"""Learning curves: RETRAIN from the same initial weights on fractions of the training groups."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core import distributed as dist_utils
from core.backend import Backend
from core.distributed import DistContext
from core.runfiles import atomic_write_json, fingerprint, read_json, set_aside
from core.schema import LearningCurvePoint
from models.deep.config import DeepConfig
from models.deep.evaluate import predict_videos
from models.deep.runtime import amp_dtype
from models.deep.training import train_from_state
from pipelines.data.records import VideoRecord, index_fingerprint
from pipelines.data.splits import group_strata


def subsample_groups(records: Sequence[VideoRecord], fraction: float, seed: int) -> list[VideoRecord]:
    """Training videos of a random ``fraction`` of the groups of each stratum (one per class, or one
    for UCF101 group numbers shared by every class: :func:`~pipelines.data.splits.group_strata`),
    at least one group each."""
    owner = group_strata([r.class_name for r in records], [r.group for r in records])
    groups_by_class: dict[str, list[str]] = {}
    for group, class_name in owner.items():
        groups_by_class.setdefault(class_name, []).append(group)
    rng = np.random.default_rng([int(seed), int(round(fraction * 1_000_000))])
    kept: set[str] = set()
    for class_name in sorted(groups_by_class):
        groups = sorted(groups_by_class[class_name])
        count = max(1, int(round(fraction * len(groups))))
        kept.update(rng.permutation(groups)[:count].tolist())
    return [r for r in records if r.group in kept]


CURVE_DIR = "curve"  # under RUN_DIR/checkpoints/<model>/: one JSON per finished (fraction, seed)
CURVE_POINT_FORMAT = 1  # bump when what a saved point means changes; old points are then retrained
# Settings that do not change a point's score (the clip cache only changes decoding speed).
NOT_IN_FINGERPRINT = frozenset(
    {"num_threads", "cache", "cache_max_gb", "learning_curve_fractions", "learning_curve_epochs"}
)


def curve_config(config: DeepConfig) -> DeepConfig:
    """The settings each learning-curve model trains with (fewer epochs when asked)."""
    epochs = config.learning_curve_epochs or config.epochs
    return replace(config, epochs=epochs, patience=min(config.patience, epochs))


def _state_digest(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


def curve_fingerprint(
    config: DeepConfig, records: Sequence[VideoRecord], initial_state: dict[str, torch.Tensor]
) -> str:
    """Identity of everything a learning-curve point depends on except its fraction and seed: the
    training settings, the initial weights, the run's index (videos.csv rows) and its video files.
    The list of fractions is left out, so adding a fraction keeps the points already trained."""
    left_out = NOT_IN_FINGERPRINT | config.unused_settings
    settings = {k: v for k, v in curve_config(config).to_dict().items() if k not in left_out}
    settings.pop("seed")  # part of each point's key
    return fingerprint(CURVE_POINT_FORMAT, settings, _state_digest(initial_state), index_fingerprint(records))


@dataclass(frozen=True)
class SeedScore:
    """Test scores of one model retrained on one fraction with one seed: what a saved point holds."""

    fraction: float
    seed: int
    n_train_videos: int
    macro_f1: float
    accuracy: float
    epochs: int


def point_path(points_dir: Path, fraction: float, seed: int) -> Path:
    return points_dir / f"fraction{fraction:g}_seed{seed}.json"


def load_point(path: Path, expected_fingerprint: str) -> SeedScore | None:
    """The saved score, or None when missing, written for other settings or data, or unreadable
    (then set aside and named: the point is retrained)."""
    if not path.is_file():
        return None
    try:
        saved = read_json(path)
        if saved.get("fingerprint") != expected_fingerprint:
            return None
        return SeedScore(**saved["score"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        set_aside(path, exc, redo="retraining this learning-curve point")
        return None


def save_point(path: Path, score: SeedScore, point_fingerprint: str) -> None:
    atomic_write_json(path, {"fingerprint": point_fingerprint, "score": asdict(score)})


def aggregate(scores: Sequence[SeedScore]) -> LearningCurvePoint:
    """One learning-curve point from the seeds of one fraction (std 0 with a single seed)."""
    f1 = np.array([s.macro_f1 for s in scores], dtype=np.float64)
    accuracy = np.array([s.accuracy for s in scores], dtype=np.float64)
    return LearningCurvePoint(
        fraction=scores[0].fraction,
        n_train_videos=scores[0].n_train_videos,
        seeds=[s.seed for s in scores],
        macro_f1_mean=float(f1.mean()),
        macro_f1_std=float(f1.std()),
        accuracy_mean=float(accuracy.mean()),
        accuracy_std=float(accuracy.std()),
        epochs=scores[0].epochs,
    )


def learning_curve_points(
    initial_state: dict[str, torch.Tensor],
    records: Sequence[VideoRecord],
    loaders: dict[str, Any],
    config: DeepConfig,
    backend: Backend,
    context: DistContext,
    run_dir: Path,
    class_names: Sequence[str],
    progress: bool,
    on_trained: Callable[[float, nn.Module], None] | None = None,
    *,
    points_dir: Path | None = None,
    reuse: bool = True,
    seeds: Sequence[int] | None = None,
    rejected: list[Any] | None = None,
) -> list[LearningCurvePoint]:
    """RETRAIN from ``initial_state`` on each fraction of the training groups; test each model.

    With ``points_dir``, each finished (fraction, seed) score is saved there atomically as soon as
    it is known, and (with ``reuse``) a rerun takes saved scores whose fingerprint
    (:func:`curve_fingerprint`) matches instead of retraining, so an interrupted curve continues
    with the next point. ``seeds`` default to ``(config.seed,)``. ``on_trained(fraction, model)``
    sees every model actually retrained (tests check they differ and which were reused).
    Videos the retraining loaders reject are appended to ``rejected``."""
    lc_config = curve_config(config)
    train_records = [r for r in records if r.split == "train"]
    dtype = amp_dtype(config, context.device)
    seeds = tuple(seeds) if seeds is not None else (config.seed,)
    point_fingerprint = curve_fingerprint(config, records, initial_state) if points_dir is not None else ""
    # Every rank decides what to skip before any rank writes, so ranks stay in step under DDP.
    saved: dict[tuple[float, int], SeedScore | None] = {
        (fraction, seed): load_point(point_path(points_dir, fraction, seed), point_fingerprint)
        if points_dir is not None and reuse
        else None
        for fraction in lc_config.learning_curve_fractions
        for seed in seeds
    }
    points = []
    for fraction in lc_config.learning_curve_fractions:
        scores = []
        for seed in seeds:
            score = saved[(fraction, seed)]
            if score is None:
                score = _retrain_and_test(
                    initial_state, train_records, loaders, replace(lc_config, seed=seed), fraction,
                    backend, context, run_dir, class_names, dtype, progress, on_trained, rejected,
                )  # fmt: skip
                if points_dir is not None and context.is_main:
                    save_point(point_path(points_dir, fraction, seed), score, point_fingerprint)
                dist_utils.barrier(context)
            elif progress and context.is_main:
                print(f"{config.model} curve {fraction:g} (seed {seed}): reused the saved score", flush=True)
            scores.append(score)
        points.append(aggregate(scores))
    return points


def _retrain_and_test(
    initial_state: dict[str, torch.Tensor],
    train_records: Sequence[VideoRecord],
    loaders: dict[str, Any],
    config: DeepConfig,
    fraction: float,
    backend: Backend,
    context: DistContext,
    run_dir: Path,
    class_names: Sequence[str],
    dtype: torch.dtype | None,
    progress: bool,
    on_trained: Callable[[float, nn.Module], None] | None,
    rejected: list[Any] | None = None,
) -> SeedScore:
    subset = subsample_groups(train_records, fraction, config.seed)
    model, outcome = train_from_state(
        initial_state,
        subset,
        loaders["val"],
        config,
        backend,
        context,
        run_dir,
        class_names,
        progress=progress,
        desc=f"{config.model} curve {fraction:g}",
    )
    metrics = predict_videos(model, loaders["test"], context.device, dtype, context).metrics(class_names)
    if on_trained is not None:
        on_trained(fraction, model)
    if rejected is not None:
        rejected.extend(outcome.rejected)
    return SeedScore(
        fraction=fraction,
        seed=config.seed,
        n_train_videos=len(subset),
        macro_f1=metrics.macro_f1,
        accuracy=metrics.accuracy,
        epochs=config.epochs,
    )
