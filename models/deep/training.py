"""The training loop: AdamW/SGD with warm-up + cosine, AMP, gradient accumulation, DDP, early
stopping on validation macro-F1, best/last checkpoints and ``--resume``."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from core import distributed as dist_utils
from core.backend import Backend
from core.console import progress_bar
from core.distributed import DistContext
from core.schema import Metrics
from models.deep.build import build_model, make_loaders
from models.deep.checkpoint import (
    check_resumable,
    cpu_state,
    load_resume_point,
    rng_states,
    save_checkpoint,
    set_rng_states,
)
from models.deep.config import DeepConfig
from models.deep.evaluate import predict_videos
from models.deep.runtime import amp_dtype, autocast, peak_memory, prepare_model, seed_everything
from pipelines.data.records import VideoRecord
from pipelines.video.routes import DecodeStats

if TYPE_CHECKING:  # annotations only: the training loop runs without the video stack (scripts/gpu_check.py)
    from pipelines.video.loader import ClipLoader


@dataclass
class TrainState:
    """What survives an interruption: written to last.pt after every epoch."""

    epoch: int = -1  # last completed epoch
    best_epoch: int = -1
    best_macro_f1: float = -math.inf  # without a validation split, minus the training loss
    epoch_seconds: list[float] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False


@dataclass
class TrainOutcome:
    best_state: dict[str, torch.Tensor]
    state: TrainState
    validation: Metrics | None
    fit_seconds: float
    peak_memory_bytes: int | None
    memory_kind: str
    torch_peak_bytes: int | None = None  # PyTorch's max_memory_allocated during training (CUDA)
    rejected: list[Any] = field(default_factory=list)  # training videos that failed to decode (this rank)
    decode_stats: DecodeStats = field(default_factory=DecodeStats)  # the training loader's routes (this rank)
    loader_counts: dict[str, float] = field(default_factory=dict)  # the training loader's decode_counts()


# BatchNorm cannot normalise one value per channel in training: R3D-18's last blocks see one value per
# clip at small crops (ResNet-18 at one frame per clip), so a training batch needs two clips or more.
MIN_TRAIN_BATCH = 2


def training_batches(loader: ClipLoader) -> int:
    """Batches trained on per epoch: the loader's, less a last batch of a single clip (dropped)."""
    full, rest = divmod(loader.n_videos * loader.spec.clips_per_video, loader.batch_size)
    return full + int(rest >= MIN_TRAIN_BATCH)


def make_optimizer(model: nn.Module, config: DeepConfig) -> torch.optim.Optimizer:
    """No weight decay on biases and normalisation parameters (1-D tensors)."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=config.lr)


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR factor: linear warm-up from ~0 to 1, then cosine decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def train_model(
    model: nn.Module,
    train_loader: ClipLoader,
    val_loader: ClipLoader | None,
    config: DeepConfig,
    device: torch.device,
    class_names: Sequence[str],
    context: DistContext | None = None,
    *,
    checkpoint_dir: Path | None = None,
    resume: str = "no",
    progress: bool = True,
    desc: str = "",
    on_epoch_end: Callable[[int, TrainState], None] | None = None,
) -> TrainOutcome:
    """Train ``model`` (already prepared on ``device``) and return the best weights by validation macro-F1.

    ``train_loader``/``val_loader`` are clip loaders (``__iter__`` of ClipBatch, ``__len__``, ``set_epoch``).
    With ``checkpoint_dir``, writes last.pt after every epoch and best.pt on improvement; ``resume``
    (:data:`~models.deep.checkpoint.RESUME_MODES`) "yes" or "auto" continues from last.pt (model,
    optimizer, scheduler, scaler, epoch, RNG states, history).
    """
    context = context or DistContext(device=device)
    dtype = amp_dtype(config, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    optimizer = make_optimizer(model, config)
    batches = min(dist_utils.gather_objects(training_batches(train_loader), context))
    steps_per_epoch = max(1, math.ceil(batches / config.grad_accum))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        warmup_cosine(config.epochs * steps_per_epoch, int(round(config.warmup_epochs * steps_per_epoch))),
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    state = TrainState()
    best_state = cpu_state(model)
    last_path = checkpoint_dir / "last.pt" if checkpoint_dir else None
    best_path = checkpoint_dir / "best.pt" if checkpoint_dir else None
    point = load_resume_point(last_path, best_path) if resume != "no" and last_path and best_path else None
    if point is not None and check_resumable(point, config, last_path, resume):
        state = _restore(point.last, model, optimizer, scheduler, scaler, device)
        best_state = point.best_model if point.best_model is not None else best_state
        if progress and context.is_main:
            print(f"{desc or config.model}: resuming from {last_path} after epoch {state.epoch + 1}", flush=True)
    ddp_model = dist_utils.wrap_model(model, context)
    train_model_ = torch.compile(ddp_model) if config.compile else ddp_model
    memory = peak_memory(device, resident=model)
    with memory:
        for epoch in range(state.epoch + 1, config.epochs):
            if state.stopped_early:
                break
            epoch_start = time.perf_counter()
            train_loader.set_epoch(epoch)
            train_model_.train()
            stats = _train_one_epoch(
                train_model_,
                ddp_model,
                train_loader,
                optimizer,
                scheduler,
                scaler,
                criterion,
                config,
                device,
                dtype,
                context,
                progress=progress,
                desc=f"{desc or config.model} epoch {epoch + 1}/{config.epochs}",
            )
            row: dict[str, float] = {"epoch": float(epoch), **stats, "lr": float(scheduler.get_last_lr()[0])}
            if val_loader is not None:
                scores = predict_videos(model, val_loader, device, dtype, context, desc="validation")
                macro_f1 = scores.metrics(class_names).macro_f1
                row["val_macro_f1"] = macro_f1
            else:
                macro_f1 = -float(stats["loss"])  # no validation split: keep the lowest training loss
            improved = macro_f1 > state.best_macro_f1
            if improved:
                state.best_macro_f1, state.best_epoch = macro_f1, epoch
                best_state = cpu_state(model)
            state.epoch = epoch
            state.epoch_seconds.append(time.perf_counter() - epoch_start)
            state.history.append(row)
            state.stopped_early = epoch - state.best_epoch >= config.patience
            if checkpoint_dir is not None and context.is_main:
                if improved:
                    save_checkpoint(best_path, {"model": best_state, "epoch": epoch, "val_macro_f1": macro_f1})
                save_checkpoint(last_path, _last_payload(model, optimizer, scheduler, scaler, state, device, config))
            dist_utils.barrier(context)
            if progress and context.is_main:
                print(
                    f"{desc or config.model} epoch {epoch + 1}: loss {stats['loss']:.4f}"
                    + (f", val macro-F1 {row['val_macro_f1']:.3f}" if "val_macro_f1" in row else "")
                    + f", {stats['clips_per_second']:.1f} clips/s, {state.epoch_seconds[-1]:.1f} s",
                    flush=True,
                )
            if on_epoch_end is not None:
                on_epoch_end(epoch, state)
    dist_utils.unwrap(model).load_state_dict(best_state)
    validation = None
    if val_loader is not None:
        validation = predict_videos(model, val_loader, device, dtype, context).metrics(class_names)
    return TrainOutcome(
        best_state=best_state,
        state=state,
        validation=validation,
        fit_seconds=float(sum(state.epoch_seconds)),
        peak_memory_bytes=memory.peak_bytes,
        memory_kind=memory.kind,
        torch_peak_bytes=memory.torch_peak_bytes,
    )


def _last_payload(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    state: TrainState,
    device: torch.device,
    config: DeepConfig,
) -> dict[str, Any]:
    """What last.pt holds (models.deep.checkpoint.CHECKPOINT_PARTS): tensors and plain values only."""
    return {
        "model": cpu_state(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "train_state": asdict(state),
        "rng": rng_states(device),
        "config": config.to_dict(),
    }


def _restore(
    checkpoint: dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    device: torch.device,
) -> TrainState:
    """Load a last.pt payload into the training objects and the RNGs; its TrainState."""
    dist_utils.unwrap(model).load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    scaler.load_state_dict(checkpoint["scaler"])
    set_rng_states(checkpoint["rng"], device)
    return TrainState(**checkpoint["train_state"])


def _train_one_epoch(
    model: nn.Module,
    ddp_model: nn.Module,
    loader: ClipLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    criterion: nn.Module,
    config: DeepConfig,
    device: torch.device,
    dtype: torch.dtype | None,
    context: DistContext,
    *,
    progress: bool,
    desc: str,
) -> dict[str, float]:
    """One pass over the loader with gradient accumulation; returns mean loss, clips/s, dt_data, dt_net."""
    total_loss, total_clips, data_time, net_time, micro = 0.0, 0, 0.0, 0.0, 0
    n_batches = training_batches(loader)
    bar = progress_bar(total=n_batches, desc=desc, leave=False, enabled=progress and context.is_main, unit="batch")
    optimizer.zero_grad(set_to_none=True)
    t_data = time.perf_counter()
    for batch in dist_utils.in_lockstep(loader, context):
        # A batch of one clip (the last of an epoch, or one thinned by videos that failed to decode) is
        # dropped, not merged into the batch before it: merging would need to look a batch ahead and a
        # DALI pipeline larger than the batch size, for one clip per epoch, and the order is reshuffled
        # every epoch, so a different clip sits out each time. Under DDP all ranks skip the step together.
        if not dist_utils.on_every_rank(len(batch.labels) >= MIN_TRAIN_BATCH, context):
            t_data = time.perf_counter()
            continue
        inputs = batch.clips.to(device, non_blocking=True)
        labels = torch.as_tensor(batch.labels, dtype=torch.long).to(device, non_blocking=True)
        t_net = time.perf_counter()
        dt_data = t_net - t_data
        micro += 1
        last_micro = micro % config.grad_accum == 0 or micro == n_batches
        sync = ddp_model.no_sync() if context.enabled and not last_micro else nullcontext()  # type: ignore[operator]
        with sync:
            with autocast(device, dtype):
                loss = criterion(model(inputs).float(), labels)
            scaler.scale(loss / config.grad_accum).backward()
        if last_micro:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
        loss_value = float(loss.item())  # synchronises, so dt_net is the real compute time
        t_data = time.perf_counter()
        dt_net = t_data - t_net
        total_loss += loss_value * len(labels)
        total_clips += len(labels)
        data_time += dt_data
        net_time += dt_net
        bar.update(1)
        bar.set_postfix(
            loss=f"{loss_value:.3f}",
            clips_s=f"{len(labels) / max(dt_data + dt_net, 1e-9):.1f}",
            dt_data=f"{dt_data:.3f}",
            dt_net=f"{dt_net:.3f}",
        )
    bar.close()
    total_loss = dist_utils.all_reduce_sum(total_loss, context)  # whole-batch figures under DDP
    total_clips = int(dist_utils.all_reduce_sum(total_clips, context))
    if total_clips == 0:
        raise ValueError(
            f"no training batch of {MIN_TRAIN_BATCH} clips or more (BatchNorm needs {MIN_TRAIN_BATCH}): add training "
            "videos and rerun `python cli.py prepare` (rejected.csv lists the videos that failed to decode)"
        )
    return {
        "loss": total_loss / total_clips,
        "clips_per_second": total_clips / max(data_time + net_time, 1e-9),  # all ranks together
        "data_seconds": data_time,
        "compute_seconds": net_time,
    }


def train_from_state(
    initial_state: dict[str, torch.Tensor],
    train_records: Sequence[VideoRecord],
    val_loader: ClipLoader | None,
    config: DeepConfig,
    backend: Backend,
    context: DistContext,
    run_dir: Path,
    class_names: Sequence[str],
    *,
    checkpoint_dir: Path | None = None,
    resume: str = "no",
    progress: bool = True,
    desc: str = "",
) -> tuple[nn.Module, TrainOutcome]:
    """A fresh model from ``initial_state`` trained on ``train_records`` (the main run and every
    learning-curve point start from the same weights); returns it with the best weights loaded."""
    seed_everything(config.seed + context.rank)
    model = build_model(replace(config, weights="none"), len(class_names))
    model.load_state_dict(initial_state)
    model = prepare_model(model, config, context.device)
    train_loader = make_loaders(train_records, config, backend, context, run_dir)["train"]
    if train_loader is None:
        raise ValueError("no training videos; rerun `python cli.py prepare`")
    outcome = train_model(
        model,
        train_loader,
        val_loader,
        config,
        context.device,
        class_names,
        context,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        progress=progress,
        desc=desc,
    )
    outcome.rejected = list(train_loader.rejected)
    outcome.decode_stats = train_loader.decode_stats
    outcome.loader_counts = train_loader.decode_counts()
    return model, outcome
