"""The ``deep`` stage: train, test and measure one deep model (``cnn2d``, ``cnn3d``) into the shared
result schema, and read its saved model back.

One call of :func:`run_deep` does a whole model: build (failing early when pretrained weights are
missing), train (models/deep/training.py; ``--resume`` continues from last.pt), test with "K clips
x 1 crop", save embeddings, the final model and the result JSON with measured costs. With
``learning_curve=True`` it then RETRAINS on fractions of the training groups (models/deep/curve.py).
Under ``torchrun`` it trains with DDP (see core/distributed.py).
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core import distributed as dist_utils
from core.backend import Backend, library_versions
from core.console import notice
from core.distributed import DistContext
from core.runfiles import RunPaths, atomic_path, atomic_write_json, read_json, set_aside, to_json
from core.schema import Cost, ModelResult, Prediction, load_result, save_result
from models.deep.build import (
    build_model,
    count_parameters,
    flops_per_clip,
    make_loaders,
    normalization,
    uses_clip_cache,
)
from models.deep.checkpoint import RESUME_MODES, save_checkpoint
from models.deep.config import DeepConfig
from models.deep.curve import CURVE_DIR, curve_config, learning_curve_points
from models.deep.evaluate import VideoScores, predict_videos
from models.deep.runtime import amp_dtype, configure_determinism, peak_memory, seed_everything, use_channels_last
from models.deep.training import TrainOutcome, train_from_state
from models.networks import cnn2d, cnn3d
from pipelines.data.records import VideoRecord, index_fingerprint, read_videos_csv, records_in_split
from pipelines.data.records import class_names as ordered_class_names
from pipelines.video.clips import stride_text
from pipelines.video.routes import DecodeStats, add_decode_counts


def _made_from(result: ModelResult) -> str | None:
    """The run index a result was made from (results of older versions kept it in their config)."""
    return result.index_fingerprint or result.config.get("data_fingerprint")


def stored_result(path: Path, config: DeepConfig, data_id: str, *, quiet: bool = False) -> ModelResult | None:
    """The result at ``path`` when it can stand for ``config`` on the index ``data_id``; else None,
    after saying why it is retrained (unless ``quiet``): unreadable (set aside), made from another
    index (``prepare`` rerun, a video replaced), or trained with other settings."""
    if not path.is_file():
        return None
    try:
        result = load_result(path)
    except (ValueError, OSError) as exc:
        if not quiet:
            set_aside(path, exc, redo=f"retraining {config.model}")
        return None
    if _made_from(result) != data_id:
        if not quiet:
            notice(f"{path} was made from another index (videos.csv or a video changed): retraining {config.model}")
        return None
    changed = config.changes_from(result.config)
    if changed:
        if not quiet:
            notice(f"{path} was trained with other settings ({', '.join(changed)}): retraining {config.model}")
        return None
    return result


def has_current_result(run_dir: str | os.PathLike[str], config: DeepConfig) -> bool:
    """Whether RUN_DIR/results/<model>.json stands for ``config`` on the run's current index
    (videos.csv and its files: :func:`~pipelines.data.records.index_fingerprint`)."""
    paths = RunPaths(run_dir)
    if not paths.videos_csv.is_file():
        return False
    data_id = index_fingerprint(read_videos_csv(paths.videos_csv))
    return stored_result(paths.result_json(config.model), config, data_id, quiet=True) is not None


def _curve_is_current(result: ModelResult, config: DeepConfig) -> bool:
    """Whether ``result`` has the learning curve ``config`` asks for (its fractions and epochs)."""
    wanted = curve_config(config)
    curve = result.learning_curve
    return (
        curve is not None
        and [point.fraction for point in curve] == list(wanted.learning_curve_fractions)
        and all(point.epochs == wanted.epochs for point in curve)
    )


def _resume_mode(checkpoint_dir: Path, data_id: str, resume: str, context: DistContext) -> str:
    """``resume`` unless the checkpoints were written for another index ("no" then); records the
    index in ``checkpoint_dir/data.json`` for the training about to start."""
    if resume not in RESUME_MODES:
        raise ValueError(f"resume {resume!r}: use one of {', '.join(RESUME_MODES)}")
    marker = checkpoint_dir / "data.json"
    if resume != "no" and marker.is_file():
        try:
            made_from = read_json(marker).get("data_fingerprint")
        except (ValueError, OSError, AttributeError) as exc:
            set_aside(marker, exc, redo="training afresh")
            made_from = None
        if made_from != data_id:
            notice(
                f"{checkpoint_dir} holds checkpoints of another index (videos.csv or a video changed since): "
                "training afresh"
            )
            resume = "no"
    if context.is_main:
        atomic_write_json(marker, {"data_fingerprint": data_id})
    return resume


def run_deep(
    run_dir: str | os.PathLike[str],
    backend: Backend,
    config: DeepConfig,
    *,
    learning_curve: bool = False,
    force: bool = False,
    resume: str = "no",
    progress: bool = True,
    rejected: list[Any] | None = None,
) -> ModelResult:
    """Train, test and measure one deep model; write RUN_DIR/results/<model>.json (rank 0 only).

    A finished model is returned as is unless ``force``, or the run's index changed since it was made
    (videos.csv re-prepared: other videos or splits; a video file replaced), or it was trained with
    other settings (:func:`stored_result` says which), which retrain it; an unreadable result is set
    aside and retrained. A missing learning curve, or one of other fractions or epochs, is added.
    ``resume`` (:data:`~models.deep.checkpoint.RESUME_MODES`): "yes" continues from
    checkpoints/<model>/last.pt, "auto" (``run``) only from one of these very settings.
    The result is written as soon as the model is tested, then again with the learning curve, whose
    points are saved one by one under checkpoints/<model>/curve/: an interrupted curve continues
    with its next point on a rerun (``force`` retrains them all).
    Videos that failed to decode in this call (main training, validation and test, all ranks) are
    appended to ``rejected`` once each (:class:`pipelines.video.loader.RejectedVideo`); every one of them
    is also in RUN_DIR/rejected.csv.
    """
    paths = RunPaths(run_dir)
    result_path = paths.result_json(config.model)
    if not paths.videos_csv.is_file():
        raise FileNotFoundError(
            f"{paths.videos_csv} not found; run `python cli.py prepare DATA_ROOT --run {run_dir}` first"
        )
    records = read_videos_csv(paths.videos_csv)
    data_id = index_fingerprint(records)
    existing = None if force else stored_result(result_path, config, data_id)
    if existing is not None and existing.index_fingerprint is None and dist_utils.is_main_process():
        existing.index_fingerprint = data_id  # a result of an older version: record its index
        save_result(existing, result_path)
    if existing is not None and (not learning_curve or _curve_is_current(existing, config)):
        return existing
    names = ordered_class_names(records)
    if not records_in_split(records, "test"):
        raise ValueError(f"{paths.videos_csv} has no test videos; rerun `python cli.py prepare`")
    seed_everything(config.seed)
    initial_model = build_model(config, len(names))  # fails here, before any training, without weights
    initial_state = {k: v.clone() for k, v in initial_model.state_dict().items()}
    parameters = count_parameters(initial_model)
    del initial_model

    context = dist_utils.init_distributed(backend.torch_device())
    try:
        configure_determinism(config.deterministic, context.device)
        loaders = make_loaders(records, config, backend, context, Path(run_dir))
        if existing is not None:  # only the learning curve is missing or of other settings
            curve_rejected: list[Any] = []
            result = _add_learning_curve(
                existing, initial_state, records, loaders, config, backend, context, paths, progress=progress,
                rejected=curve_rejected,
            )  # fmt: skip
            _collect_rejected(rejected, [loaders["val"], loaders["test"]], curve_rejected, context)
            return result
        checkpoint_dir = paths.checkpoints_dir / config.model
        resume = _resume_mode(checkpoint_dir, data_id, resume, context)
        model, outcome = train_from_state(
            initial_state,
            records,
            loaders["val"],
            config,
            backend,
            context,
            Path(run_dir),
            names,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            progress=progress,
        )
        dtype = amp_dtype(config, context.device)
        with peak_memory(context.device, resident=model) as predict_memory:
            test = predict_videos(
                model, loaders["test"], context.device, dtype, context, progress=progress, desc="test"
            )
        plain = dist_utils.unwrap(model)
        flops = flops_per_clip(plain, config, context.device)
        result = _build_result(
            config,
            backend,
            context,
            names,
            test,
            outcome,
            parameters,
            flops,
            predict_memory.peak_bytes,
            paths,
        )
        result.config.update(**_run_facts(config, backend, outcome, loaders, context))
        result.index_fingerprint = data_id
        if context.is_main:
            _save_model(paths.models_dir / f"{config.model}.pt", plain, config, names)
            _save_embeddings(paths.embeddings_dir / f"{config.model}.npz", test, names)
            result.cost.model_bytes = (paths.models_dir / f"{config.model}.pt").stat().st_size
            save_result(result, result_path)
        dist_utils.barrier(context)
        curve_rejected: list[Any] = []
        if learning_curve:
            result = _add_learning_curve(
                result, initial_state, records, loaders, config, backend, context, paths, progress=progress,
                force=force, rejected=curve_rejected,
            )  # fmt: skip
        _collect_rejected(rejected, [loaders["val"], loaders["test"]], [*outcome.rejected, *curve_rejected], context)
        return result
    finally:
        dist_utils.shutdown(context)


def _run_facts(
    config: DeepConfig, backend: Backend, outcome: TrainOutcome, loaders: dict[str, Any], context: DistContext
) -> dict[str, Any]:
    """Result config entries about how the run went: the clip cache used, PyTorch's own peak, and
    how clips were decoded (``decode``, over the training, validation and test loaders of all ranks):
    the clips per decode route and the clips that left their route (``routes``, ``fallbacks``),
    the PyAV route's counters (seeks, sequential fallbacks, frames decoded per clip) and the
    cache's (hit rate, evictions, size limit). Every rank must call it (it gathers across ranks)."""
    evaluation = [loaders[s] for s in ("val", "test") if loaders[s] is not None]
    local = (
        DecodeStats.merged([outcome.decode_stats, *(loader.decode_stats for loader in evaluation)]),
        [outcome.loader_counts, *(loader.decode_counts() for loader in evaluation)],
    )
    gathered = dist_utils.gather_objects(local, context)
    routes = DecodeStats.merged(stats for stats, _ in gathered)
    decode: dict[str, Any] = {
        "routes": dict(sorted(routes.routes.items())),
        "fallbacks": dict(sorted(routes.fallbacks.items())),
        **add_decode_counts(counts for _, part in gathered for counts in part),
    }
    caches = [loader.cache for loader in evaluation if loader.cache is not None]
    if caches:
        decode["cache_max_bytes"] = caches[0].max_bytes
    return {
        "cache": uses_clip_cache(config, backend),
        "torch_max_memory_allocated_bytes": outcome.torch_peak_bytes,
        "decode": decode,
    }


def _collect_rejected(
    into: list[Any] | None, loaders: Sequence[Any], more: Sequence[Any], context: DistContext
) -> None:
    """Extend ``into`` with the rejected videos of ``loaders`` and ``more`` on every rank, one per path.
    Every rank must call it (it gathers across ranks)."""
    local = [item for loader in loaders if loader is not None for item in loader.rejected] + list(more)
    unique: dict[str, Any] = {}
    for items in dist_utils.gather_objects(local, context):
        for item in items:
            unique.setdefault(item.path, item)
    if into is not None:
        into.extend(unique.values())


def _add_learning_curve(
    result: ModelResult,
    initial_state: dict[str, torch.Tensor],
    records: Sequence[VideoRecord],
    loaders: dict[str, Any],
    config: DeepConfig,
    backend: Backend,
    context: DistContext,
    paths: RunPaths,
    *,
    progress: bool,
    force: bool = False,
    rejected: list[Any] | None = None,
) -> ModelResult:
    """``result`` with its learning curve (saved points reused unless ``force``), written again;
    videos its training loaders reject are appended to ``rejected``."""
    result.learning_curve = learning_curve_points(
        initial_state,
        records,
        loaders,
        config,
        backend,
        context,
        paths.root,
        result.class_names,
        progress,
        points_dir=paths.checkpoints_dir / config.model / CURVE_DIR,
        reuse=not force,
        rejected=rejected,
    )
    if context.is_main:
        save_result(result, paths.result_json(config.model))
    dist_utils.barrier(context)
    return result


def _build_result(
    config: DeepConfig,
    backend: Backend,
    context: DistContext,
    names: Sequence[str],
    test: VideoScores,
    outcome: TrainOutcome,
    parameters: int,
    flops: float,
    predict_peak: int | None,
    paths: RunPaths,
) -> ModelResult:

    n_videos = len(test.video_ids)
    predictions = [
        Prediction(video_id, int(label), int(probs.argmax()), [float(p) for p in probs])
        for video_id, label, probs in zip(test.video_ids, test.labels, test.probabilities, strict=True)
    ]
    dtype = amp_dtype(config, context.device)
    if config.model == "cnn2d":
        sampling = "TSN segments (one frame per segment)"
    else:
        sampling = f"windows of {stride_text(config.stride, config.stride_fps)}"
    protocol = (
        f"{config.test_clips} clips x 1 crop: {config.test_clips} evenly spaced {config.frames}-frame clips per video "
        f"({sampling}), each a {config.size} px centre crop after resizing the shorter side; softmax probabilities "
        "averaged per video. Weights of the epoch with the best validation macro-F1 "
        f"(epoch {outcome.state.best_epoch + 1})."
    )
    run_config = config.to_dict()
    run_config.update(
        amp_dtype=str(dtype).replace("torch.", "") if dtype else None,
        channels_last=use_channels_last(config, context.device),
        world_size=context.world_size,
        epochs_run=outcome.state.epoch + 1,
        best_epoch=outcome.state.best_epoch + 1,
        stopped_early=outcome.state.stopped_early,
        history=outcome.state.history,
        normalization=dict(zip(("mean", "std"), normalization(config), strict=True)),
    )
    run_config = json.loads(to_json(run_config))  # as it reads back from the result file
    return ModelResult(
        model=config.model,
        family="deep",
        backend=backend.deep.name,
        device=backend.device_description(),
        versions=library_versions(),
        seed=config.seed,
        config=run_config,
        class_names=list(names),
        test_protocol=protocol,
        predictions=predictions,
        metrics=test.metrics(names),
        cost=Cost(
            fit_seconds=outcome.fit_seconds,
            epoch_seconds=list(outcome.state.epoch_seconds),
            inference_seconds_per_video_model=test.model_seconds / n_videos,
            inference_seconds_per_video_end_to_end=test.wall_seconds / n_videos,
            parameters=parameters,
            flops_per_clip=flops,
            peak_memory_fit_bytes=outcome.peak_memory_bytes,
            peak_memory_predict_bytes=predict_peak,
            memory_kind=outcome.memory_kind,
        ),
        validation=outcome.validation,
        learning_curve=None,
        artifacts={
            "model": f"models/{config.model}.pt",
            "embeddings": f"embeddings/{config.model}.npz",
            "best_checkpoint": f"checkpoints/{config.model}/best.pt",
            "last_checkpoint": f"checkpoints/{config.model}/last.pt",
        },
    )


def _save_model(path: Path, model: nn.Module, config: DeepConfig, names: Sequence[str]) -> None:
    mean, std = normalization(config)
    payload = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "architecture": config.model,
        "class_names": list(names),
        "config": config.to_dict(),
        "mean": list(mean),
        "std": list(std),
        "input_layout": cnn2d.INPUT_LAYOUT if config.model == "cnn2d" else cnn3d.INPUT_LAYOUT,
    }
    save_checkpoint(path, payload)


def load_trained_model(
    path: str | os.PathLike[str], device: torch.device | str = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """A model saved by :func:`run_deep` (RUN_DIR/models/<model>.pt), in eval mode, and its metadata
    (architecture, class_names, config, mean, std, input_layout).

    The file holds tensors, strings and numbers only, so it is read with ``weights_only=True``: a
    file from someone else's run folder cannot run code here (a file that needs more is refused).
    """
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise ValueError(
            f"{path} is not a model file of `deep` that loads without running code ({type(exc).__name__}); "
            "retrain it with `python cli.py deep --run RUN --model MODEL --force`"
        ) from exc
    config = DeepConfig.from_saved(payload["config"])
    model = build_model(replace(config, weights="none"), len(payload["class_names"]))
    model.load_state_dict(payload["model"])
    model.to(device).eval()
    return model, {k: v for k, v in payload.items() if k != "model"}


def _save_embeddings(path: Path, scores: VideoScores, names: Sequence[str]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(
                handle,
                video_ids=np.array(scores.video_ids, dtype=str),
                embeddings=scores.embeddings,
                labels=scores.labels,
                class_names=np.array(list(names), dtype=str),
            )


def summarize(result: ModelResult) -> str:
    cost = result.cost
    return (
        f"{result.model}: test accuracy {result.metrics.accuracy:.3f}, macro-F1 {result.metrics.macro_f1:.3f} "
        f"on {result.metrics.n_videos} videos; trained {cost.fit_seconds:.1f} s on {result.device}; "
        f"{(cost.inference_seconds_per_video_end_to_end or 0) * 1000:.1f} ms/video end to end"
    )


__all__ = ["load_trained_model", "run_deep", "summarize"]
