"""Outer cross-validation: one sub-run per fold, the stages unchanged inside it, results pooled.

With K > 1 outer folds (``prepare --folds K``, or ``--split official:all``) each fold k gets a
sub-run folder ``RUN/folds/fold<k>/``: its own ``videos.csv`` (the run's index with fold k's splits
and no fold columns), a ``features.npz`` derived from the run's (same rows, fold k's splits:
:func:`~pipelines.features.store.with_splits`) and a link to the run's decoded-clip cache, which
every fold shares. The classical and deep stages run inside each sub-run exactly as in a run
without folds, and resume there. ``RUN/results/<model>.json`` then holds the pooled result
(:func:`pool_fold_results`): every video predicted once, by the model of the fold whose test set
holds it.

What is not pooled, and why: learning curves are computed on fold 0 only (K times their cost would
double a CPU run); the run-level ``models/`` and ``embeddings/`` files are fold 0's (hard links),
matching the run's ``split`` column (fold 0's splits), so interpretability and embedding plots show
fold 0's model on fold 0's test split. Every result says so in ``config["outer_cv"]``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from core import distributed as dist_utils
from core.backend import Backend
from core.distributed import is_main_process
from core.metrics import classification_metrics
from core.runfiles import RunPaths, append_rejected, atomic_path, fingerprint, read_rejected
from core.schema import Cost, FoldMetrics, ModelResult, save_result
from models.classical.train import ClassicalConfig, run_classical
from models.deep.config import DeepConfig
from models.deep.train import run_deep
from pipelines.data.records import (
    VideoRecord,
    fold_count,
    fold_records,
    index_fingerprint,
    read_videos_csv,
    write_videos_csv,
)
from pipelines.features.kernel import FeatureSpec
from pipelines.features.store import (
    features_fingerprint,
    load_features,
    save_features,
    up_to_date_features,
    with_splits,
)
from pipelines.video.loader import RejectedVideo

FOLDS_DIR = "folds"
LINKED_ARTIFACTS = ("model", "embeddings")  # fold 0's, linked into the run folder for the report
COST_NOTE = (
    "fit_seconds, search_seconds, model_bytes, parameters and flops_per_clip: mean over the fold models; "
    "inference_seconds_per_video_*: mean over all pooled test videos; peak_memory_*: maximum over the folds; "
    "epoch_seconds: fold 0's"
)


def fold_dir(run_dir: str | os.PathLike[str], fold: int) -> Path:
    """The sub-run folder of outer fold ``fold``."""
    return Path(run_dir) / FOLDS_DIR / f"fold{fold}"


def run_folds(run_dir: str | os.PathLike[str]) -> int:
    """K, the outer folds of the run's index (1 without folds or without a videos.csv yet)."""
    videos_csv = RunPaths(run_dir).videos_csv
    return fold_count(read_videos_csv(videos_csv)) if videos_csv.is_file() else 1


def prepare_fold(run_dir: str | os.PathLike[str], records: Sequence[VideoRecord], fold: int) -> Path:
    """Fold ``fold``'s sub-run folder with its videos.csv (rewritten only when its rows change),
    the run's keyframe index and the link to the run's decoded-clip cache."""
    target = fold_dir(run_dir, fold)
    rows = fold_records(records, fold)
    videos_csv = RunPaths(target).videos_csv
    if not videos_csv.is_file() or read_videos_csv(videos_csv) != rows:
        write_videos_csv(videos_csv, rows)
    keyframes = RunPaths(run_dir).keyframes_npz
    if keyframes.is_file():  # entries are checked against each file's signature when read
        _link(keyframes, RunPaths(target).keyframes_npz)
    _share_cache(Path(run_dir), target)
    return target


def _share_cache(run_dir: Path, target: Path) -> None:
    link = RunPaths(target).cache_dir
    if link.is_symlink() or link.exists():
        return
    shared = RunPaths(run_dir).cache_dir
    shared.mkdir(parents=True, exist_ok=True)
    try:
        link.symlink_to(os.path.relpath(shared, target), target_is_directory=True)
    except FileExistsError:
        pass  # another rank made it
    except OSError:
        pass  # no symbolic links on this file system: the fold fills its own cache (speed only)


def derive_fold_features(run_dir: str | os.PathLike[str], target: Path) -> None:
    """Write the fold's features.npz from the run's: same rows, the fold's splits, the fingerprint
    the features stage would give it (skipped when that file is already there)."""
    paths = RunPaths(run_dir)
    features = load_features(paths.features_npz)
    if features.spec is None or features.fingerprint != features_fingerprint(paths.videos_csv, features.spec):
        raise ValueError(
            f"{paths.features_npz} was not made from the current {paths.videos_csv}; "
            f"rerun `python cli.py features --run {run_dir}`"
        )
    fold_paths = RunPaths(target)
    expected = features_fingerprint(fold_paths.videos_csv, features.spec)
    if fold_paths.features_npz.is_file():
        try:
            existing = load_features(fold_paths.features_npz)
        except (ValueError, OSError):
            existing = None
        if existing is not None and existing.fingerprint == expected and existing.spec == features.spec:
            return
    splits = {record.video_id: record.split for record in read_videos_csv(fold_paths.videos_csv)}
    save_features(fold_paths.features_npz, with_splits(features, splits, expected))


def _announce(progress: bool, fold: int, folds: int, target: Path) -> None:
    if progress:
        print(f"  outer fold {fold + 1}/{folds}: {target}", flush=True)


def _keep_rejected(run_dir: str | os.PathLike[str], target: Path) -> None:
    """Copy the fold's later-stage rejections into the run's rejected.csv (where every notice points)."""
    for row in read_rejected(target):
        if row.get("stage") != "prepare":
            append_rejected(run_dir, row["path"], row["reason"], row["stage"])


def classical_folds(
    run_dir: str | os.PathLike[str],
    backend: Backend,
    config: ClassicalConfig,
    *,
    models: list[str] | None = None,
    learning_curve: bool = True,
    force: bool = False,
    progress: bool = True,
    feature_spec: FeatureSpec | None = None,
    rejected: list[RejectedVideo] | None = None,
) -> list[ModelResult]:
    """The classical stage in every fold's sub-run, then the pooled results (learning curve: fold 0).
    The run's features.npz is first brought up to date, as :func:`run_classical` does in one split."""
    up_to_date_features(run_dir, backend, default_spec=feature_spec, progress=progress, rejected=rejected)
    records = read_videos_csv(RunPaths(run_dir).videos_csv)
    folds = fold_count(records)
    per_fold: list[list[ModelResult]] = []
    for fold in range(folds):
        target = prepare_fold(run_dir, records, fold)
        derive_fold_features(run_dir, target)
        _announce(progress, fold, folds, target)
        per_fold.append(
            run_classical(
                target,
                backend,
                models=models,
                learning_curve=learning_curve and fold == 0,
                force=force,
                config=config,
                progress=progress,
                feature_spec=feature_spec,
                rejected=rejected,
            )  # fmt: skip
        )
        _keep_rejected(run_dir, target)
    return [_pool_and_save(run_dir, records, list(results)) for results in zip(*per_fold, strict=True)]


def deep_folds(
    run_dir: str | os.PathLike[str],
    backend: Backend,
    config: DeepConfig,
    *,
    learning_curve: bool = True,
    force: bool = False,
    resume: str = "no",
    progress: bool = True,
    rejected: list[RejectedVideo] | None = None,
) -> ModelResult:
    """The deep stage in every fold's sub-run, then the pooled result (learning curve: fold 0)."""
    records = read_videos_csv(RunPaths(run_dir).videos_csv)
    folds = fold_count(records)
    results: list[ModelResult] = []
    found: dict[str, RejectedVideo] = {}
    context = dist_utils.init_distributed(backend.torch_device())  # under torchrun: one process group for all folds
    try:
        for fold in range(folds):
            target = prepare_fold(run_dir, records, fold)
            _announce(progress and context.is_main, fold, folds, target)
            fold_rejected: list[RejectedVideo] = []
            results.append(
                run_deep(
                    target,
                    backend,
                    config,
                    learning_curve=learning_curve and fold == 0,
                    force=force,
                    resume=resume,
                    progress=progress,
                    rejected=fold_rejected,
                )  # fmt: skip
            )
            found.update({item.path: item for item in fold_rejected})
            if context.is_main:
                _keep_rejected(run_dir, target)
    finally:
        dist_utils.shutdown(context)
    if rejected is not None:
        rejected.extend(found.values())
    return _pool_and_save(run_dir, records, results)


def _pool_and_save(
    run_dir: str | os.PathLike[str], records: Sequence[VideoRecord], results: list[ModelResult]
) -> ModelResult:
    folds = len(results)
    n_train = [sum(record.split_in(fold) == "train" for record in records) for fold in range(folds)]
    paths = [f"{FOLDS_DIR}/fold{fold}" for fold in range(folds)]
    pooled = pool_fold_results(results, n_train=n_train, fold_paths=paths, index_id=index_fingerprint(records))
    if is_main_process():
        for name in LINKED_ARTIFACTS:
            if name in results[0].artifacts:
                _link(fold_dir(run_dir, 0) / results[0].artifacts[name], Path(run_dir) / results[0].artifacts[name])
        save_result(pooled, RunPaths(run_dir).result_json(pooled.model))
    return pooled


def _link(source: Path, target: Path) -> None:
    """``target`` becomes ``source`` (a hard link, else a copy), atomically."""
    if target.exists() and os.path.samefile(source, target):
        return
    with atomic_path(target) as tmp:
        tmp.unlink()
        try:
            os.link(source, tmp)
        except OSError:  # another file system, or no hard links
            shutil.copyfile(source, tmp)


def _mean(values: Sequence[float | int | None]) -> float | None:
    return None if any(v is None for v in values) else float(np.mean([float(v) for v in values if v is not None]))


def _max(values: Sequence[int | None]) -> int | None:
    return None if any(v is None for v in values) else max(int(v) for v in values if v is not None)


def _rounded(value: float | None) -> int | None:
    return None if value is None else int(round(value))


def _per_video(costs: Sequence[Cost], n_test: Sequence[int], name: str) -> float | None:
    """Mean seconds per video over all pooled test videos (each fold weighted by its test videos)."""
    values = [getattr(cost, name) for cost in costs]
    if any(v is None for v in values):
        return None
    return float(np.average([float(v) for v in values], weights=n_test))


def pooled_cost(costs: Sequence[Cost], n_test: Sequence[int]) -> Cost:
    """The costs of K fold models as one :class:`Cost`, as :data:`COST_NOTE` says."""
    return Cost(
        fit_seconds=float(np.mean([cost.fit_seconds for cost in costs])),
        search_seconds=_mean([cost.search_seconds for cost in costs]),
        epoch_seconds=costs[0].epoch_seconds,
        inference_seconds_per_video_model=_per_video(costs, n_test, "inference_seconds_per_video_model"),
        inference_seconds_per_video_end_to_end=_per_video(costs, n_test, "inference_seconds_per_video_end_to_end"),
        model_bytes=_rounded(_mean([cost.model_bytes for cost in costs])),
        parameters=_rounded(_mean([cost.parameters for cost in costs])),
        flops_per_clip=_mean([cost.flops_per_clip for cost in costs]),
        peak_memory_fit_bytes=_max([cost.peak_memory_fit_bytes for cost in costs]),
        peak_memory_predict_bytes=_max([cost.peak_memory_predict_bytes for cost in costs]),
        memory_kind=costs[0].memory_kind,
    )


def _outer_cv(results: Sequence[ModelResult], fold_paths: Sequence[str]) -> dict[str, Any]:
    """What the pooled result's fields mean (stored as ``config["outer_cv"]``)."""
    per_fold_keys = ("params", "cv_macro_f1", "best_epoch", "epochs_run", "n_train_videos", "n_val_videos")
    return {
        "folds": len(results),
        "predictions": "pooled: each video predicted once, by the model of the fold whose test set holds it",
        "metrics": "computed on the pooled predictions; per-fold test metrics in `folds`",
        "cost": COST_NOTE,
        "learning_curve": "fold 0 only (retrained on fractions of fold 0's training groups, scored on its test split)"
        if results[0].learning_curve is not None
        else None,
        "validation": "fold 0's validation split",
        "config": "the other keys of config are fold 0's; per-fold values in per_fold",
        "artifacts": "model and embeddings: fold 0's (linked into the run folder); <name>_fold<k>: fold k's",
        "per_fold": [
            {
                "fold": fold,
                "result": f"{path}/results/{r.model}.json",
                **{k: r.config[k] for k in per_fold_keys if k in r.config},
            }
            for fold, (r, path) in enumerate(zip(results, fold_paths, strict=True))
        ],
    }


def pool_fold_results(
    results: Sequence[ModelResult], *, n_train: Sequence[int], fold_paths: Sequence[str], index_id: str
) -> ModelResult:
    """One model's K fold results (fold k at position k) as one result: pooled predictions (each
    with its fold), metrics of the pooled predictions, per-fold metrics, costs as :data:`COST_NOTE`,
    fold 0's learning curve, validation and config (``config["outer_cv"]`` says all this)."""
    first = results[0]
    if any(r.model != first.model or r.class_names != first.class_names for r in results):
        raise ValueError(f"the fold results of {first.model} differ in model or classes; rerun its stage with --force")
    predictions = [replace(p, fold=fold) for fold, r in enumerate(results) for p in r.predictions]
    metrics = classification_metrics(
        [p.true_label for p in predictions],
        [p.pred_label for p in predictions],
        [p.scores for p in predictions],
        first.class_names,
    )
    config = {**first.config, "data_fingerprint": index_id, "outer_cv": _outer_cv(results, fold_paths)}
    if "fingerprint" in first.config:
        config["fingerprint"] = fingerprint([r.config.get("fingerprint") for r in results])
    artifacts = {name: path for name, path in first.artifacts.items() if name in LINKED_ARTIFACTS}
    artifacts.update(
        {f"{name}_fold{fold}": f"{fold_path}/{path}" for fold, (r, fold_path) in
         enumerate(zip(results, fold_paths, strict=True)) for name, path in r.artifacts.items()}
    )  # fmt: skip
    return replace(
        first,
        config=config,
        test_protocol=(
            f"Group {len(results)}-fold outer cross-validation: every video is in exactly one fold's test set and is "
            f"predicted once, by the model trained without its fold's groups; metrics on the pooled predictions. "
            f"Within each fold: {first.test_protocol}"
        ),
        predictions=predictions,
        metrics=metrics,
        cost=pooled_cost([r.cost for r in results], [len(r.predictions) for r in results]),
        folds=[FoldMetrics(fold, r.metrics, n_train[fold]) for fold, r in enumerate(results)],
        artifacts=artifacts,
        index_fingerprint=index_id,
    )
