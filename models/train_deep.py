"""Train, evaluate and measure the deep models (``cnn2d``, ``cnn3d``) into the shared result schema.

One call of :func:`run_deep` does a whole model: build (failing early when pretrained weights are
missing), train with AdamW/SGD + warm-up + cosine, AMP and channels_last on CUDA, gradient
accumulation, early stopping on validation macro-F1 with best/last checkpoints (``--resume``
continues from last.pt), then test with "K clips x 1 crop", save embeddings, the final model and
the result JSON with measured costs. ``learning_curve=True`` RETRAINS from the same initial weights
on fractions of the training groups. Under ``torchrun`` it trains with DDP (see models/distributed.py).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from analysis.metrics import classification_metrics
from models import cnn2d, cnn3d
from models import distributed as dist_utils
from models.distributed import DistContext
from models.schema import Cost, LearningCurvePoint, Metrics, ModelResult, Prediction, load_result, save_result
from pipelines.records import VideoRecord, read_videos_csv, records_in_split
from pipelines.records import class_names as ordered_class_names
from pipelines.runfiles import RunPaths, atomic_path, to_json

MODELS = ("cnn2d", "cnn3d")
PROFILES = ("tiny", "cpu", "gpu")
OPTIMIZERS = ("adamw", "sgd")


@dataclass
class DeepConfig:
    """Every knob of one deep training run. ``None`` for amp/channels_last means "on with CUDA"."""

    model: str = "cnn3d"
    profile: str = "gpu"
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
    weights: str = cnn3d.DEFAULT_WEIGHTS
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
    learning_curve_fractions: tuple[float, ...] = (0.25, 0.5, 1.0)
    learning_curve_epochs: int | None = None  # None: the same epochs as the main run

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"unknown deep model {self.model!r}; use one of {MODELS}")
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; use one of {PROFILES}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; use one of {OPTIMIZERS}")
        if min(self.epochs, self.batch_size, self.frames, self.test_clips, self.val_clips, self.grad_accum) < 1:
            raise ValueError("epochs, batch_size, frames, test_clips, val_clips and grad_accum must be >= 1")
        if self.model == "cnn2d" and self.pooling not in cnn2d.POOLINGS:
            raise ValueError(f"unknown pooling {self.pooling!r}; use one of {cnn2d.POOLINGS}")
        if self.model == "cnn3d" and self.freeze not in cnn3d.FREEZE_CHOICES:
            raise ValueError(f"unknown freeze {self.freeze!r}; use one of {cnn3d.FREEZE_CHOICES}")
        if not all(0 < f <= 1 for f in self.learning_curve_fractions):
            raise ValueError("learning-curve fractions must be in (0, 1]")
        self.learning_curve_fractions = tuple(float(f) for f in self.learning_curve_fractions)

    @classmethod
    def for_profile(cls, model: str, profile: str = "gpu", **overrides: Any) -> DeepConfig:
        """Settings of a profile; ``overrides`` (``None`` values ignored) replace single fields.

        * ``tiny``: seconds on a CPU (tests, CI): 4 frames x 32 px, 2 epochs, no pretrained weights.
        * ``cpu``: the demo on 2 cores in minutes: 8 frames x 64 px (2D) / 48 px (3D), 2-3 epochs.
        * ``gpu``: the notebook study's settings: 16 frames, 224 px (2D) / 112 px (3D).
        """
        if model not in MODELS:
            raise ValueError(f"unknown deep model {model!r}; use one of {MODELS}")
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; use one of {PROFILES}")
        weights = cnn2d.DEFAULT_WEIGHTS if model == "cnn2d" else cnn3d.DEFAULT_WEIGHTS
        settings: dict[str, Any]
        if profile == "tiny":
            settings = dict(
                epochs=2,
                batch_size=4,
                lr=1e-3,
                warmup_epochs=0.0,
                frames=4,
                size=32,
                stride=1,
                weights="none",
                test_clips=2,
                patience=2,
                num_threads=1,
                learning_curve_fractions=(0.5, 1.0),
                learning_curve_epochs=1,
            )
        elif profile == "cpu":
            # R3D-18 trained at ~1-3 clips/s at 8x56 px on a busy 2-core CPU, hence fewer epochs and pixels.
            settings = dict(
                epochs=3 if model == "cnn2d" else 2,
                batch_size=8,
                lr=1e-3,
                warmup_epochs=0.5,
                frames=8,
                size=64 if model == "cnn2d" else 48,
                weights=weights,
                test_clips=2,
                patience=2,
                learning_curve_fractions=(0.25, 0.5, 1.0),
                learning_curve_epochs=1,
            )
        else:
            settings = dict(
                epochs=20,
                batch_size=16 if model == "cnn2d" else 32,
                lr=3e-4,
                warmup_epochs=2.0,
                frames=16,
                size=224 if model == "cnn2d" else 112,
                weights=weights,
                test_clips=5,
                patience=5,
                num_threads=4,
                learning_curve_fractions=(0.25, 0.5, 1.0),
                learning_curve_epochs=10,
            )
        settings.update({k: v for k, v in overrides.items() if v is not None})
        return cls(model=model, profile=profile, **settings)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["learning_curve_fractions"] = list(self.learning_curve_fractions)
        return data


# ----------------------------------------------------------------------------- models and clips


def build_model(config: DeepConfig, num_classes: int) -> nn.Module:
    """The configured model with its weights (raises WeightsUnavailableError before any training)."""
    if config.model == "cnn2d":
        return cnn2d.build_cnn2d(num_classes, weights=config.weights, pooling=config.pooling, dropout=config.dropout)
    return cnn3d.build_cnn3d(num_classes, weights=config.weights, freeze=config.freeze, dropout=config.dropout)


def normalization(config: DeepConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    module = cnn2d if config.model == "cnn2d" else cnn3d
    return module.normalization(config.weights)


def clip_specs(config: DeepConfig) -> dict[str, Any]:
    """ClipSpecs for "train", "val" and "test": TSN segments for 2D, windows for 3D, each model's
    normalisation constants from its weights metadata."""
    from pipelines.clips import ClipSpec

    mean, std = normalization(config)
    common = dict(
        frames=config.frames,
        size=config.size,
        stride=config.stride,
        sampling="segment" if config.model == "cnn2d" else "window",
        layout=cnn2d.INPUT_LAYOUT if config.model == "cnn2d" else cnn3d.INPUT_LAYOUT,
        mean=mean,
        std=std,
    )
    return {
        "train": ClipSpec(mode="train", **common),
        "val": ClipSpec(mode="eval", test_clips=config.val_clips, **common),
        "test": ClipSpec(mode="eval", test_clips=config.test_clips, **common),
    }


def example_input(config: DeepConfig, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """A random normalised batch in the model's layout (benchmarks, FLOP counting)."""
    if config.model == "cnn2d":
        shape = (batch, config.frames, 3, config.size, config.size)
    else:
        shape = (batch, 3, config.frames, config.size, config.size)
    return torch.randn(shape, device=device)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def flops_per_clip(model: nn.Module, config: DeepConfig, device: torch.device) -> float:
    """Forward FLOPs of one clip (torch.utils.flop_counter; a multiply-add counts as 2 FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(example_input(config, 1, device))
    model.train(was_training)
    return float(counter.get_total_flops())


# ----------------------------------------------------------------------------- devices, seeds, AMP


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_determinism(deterministic: bool, device: torch.device) -> None:
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = device.type == "cuda"


def amp_dtype(config: DeepConfig, device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU supports it, else fp16 (with a GradScaler); None = full fp32."""
    enabled = device.type == "cuda" if config.amp is None else config.amp
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16  # CPU autocast supports bf16 only


def use_channels_last(config: DeepConfig, device: torch.device) -> bool:
    return device.type == "cuda" if config.channels_last is None else config.channels_last


def prepare_model(model: nn.Module, config: DeepConfig, device: torch.device) -> nn.Module:
    model.to(device)
    if use_channels_last(config, device):
        model.to(memory_format=torch.channels_last_3d if config.model == "cnn3d" else torch.channels_last)
        model.channels_last = True  # type: ignore[assignment]
    return model


def autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


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


class DeviceMemory:
    """Peak memory of a block: ``torch.cuda.max_memory_allocated`` on CUDA, else the process RSS
    high-water mark above the baseline on entry (analysis.efficiency.PeakMemory)."""

    def __init__(self, device: torch.device) -> None:
        from analysis.efficiency import PeakMemory

        self.device = device
        self._sampler = PeakMemory(cuda=device.type == "cuda")

    def __enter__(self) -> DeviceMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self._sampler.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sampler.__exit__(*exc)

    @property
    def peak_bytes(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return int(self._sampler.rss_delta_bytes)

    @property
    def kind(self) -> str:
        return "cuda_max_allocated" if self.device.type == "cuda" else "process_rss_peak_delta"


def peak_memory(device: torch.device) -> DeviceMemory:
    return DeviceMemory(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- evaluation


@dataclass
class VideoScores:
    """Per-video class probabilities (clip probabilities averaged) and embeddings."""

    video_ids: list[str]
    labels: np.ndarray
    probabilities: np.ndarray
    embeddings: np.ndarray
    n_clips: int
    model_seconds: float
    wall_seconds: float

    def metrics(self, class_names: Sequence[str]) -> Metrics:
        return classification_metrics(self.labels, self.probabilities.argmax(1), self.probabilities, class_names)


def predict_videos(
    model: nn.Module,
    loader: Iterable[Any],
    device: torch.device,
    dtype: torch.dtype | None,
    context: DistContext,
    *,
    progress: bool = False,
    desc: str = "eval",
) -> VideoScores:
    """Softmax probabilities and embeddings for every (video, clip) of an eval loader, gathered across
    ranks (deduplicated by (video_id, clip_index)) and averaged per video. Every rank gets the result."""
    model = dist_utils.unwrap(model)
    model.eval()
    clips: dict[tuple[str, int], tuple[int, np.ndarray, np.ndarray]] = {}
    model_seconds = 0.0
    start = time.perf_counter()
    bar = tqdm(loader, desc=desc, leave=False, disable=not (progress and context.is_main), unit="batch")
    with torch.no_grad():
        for batch in bar:
            inputs = batch.clips.to(device, non_blocking=True)
            _sync(device)
            t0 = time.perf_counter()
            with autocast(device, dtype):
                embeddings = model.embed(inputs)  # type: ignore[operator]
                logits = model.head(embeddings)  # type: ignore[operator]
            probabilities = torch.softmax(logits.float(), dim=1).cpu().numpy()
            embeddings_np = embeddings.float().cpu().numpy()
            model_seconds += time.perf_counter() - t0
            for i, video_id in enumerate(batch.video_ids):
                key = (str(video_id), int(batch.clip_index[i]))
                clips[key] = (int(batch.labels[i]), probabilities[i], embeddings_np[i])
    wall_seconds = time.perf_counter() - start
    model.train()
    merged: dict[tuple[str, int], tuple[int, np.ndarray, np.ndarray]] = {}
    for part in dist_utils.gather_objects(clips, context):
        merged.update(part)
    model_seconds = dist_utils.all_reduce_sum(model_seconds, context)
    wall_seconds = dist_utils.all_reduce_sum(wall_seconds, context)
    per_video: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = {}
    for (video_id, _), row in sorted(merged.items()):
        per_video.setdefault(video_id, []).append(row)
    video_ids = sorted(per_video)
    if not video_ids:
        raise ValueError("no clip could be decoded for evaluation; see rejected.csv")
    labels = np.array([per_video[v][0][0] for v in video_ids], dtype=np.int64)
    probs = np.stack([np.mean([r[1] for r in per_video[v]], axis=0) for v in video_ids]).astype(np.float64)
    probs /= probs.sum(axis=1, keepdims=True)
    embeddings_all = np.stack([np.mean([r[2] for r in per_video[v]], axis=0) for v in video_ids]).astype(np.float32)
    return VideoScores(video_ids, labels, probs, embeddings_all, len(merged), model_seconds, wall_seconds)


# ----------------------------------------------------------------------------- training


@dataclass
class TrainState:
    """What survives an interruption: written to last.pt after every epoch."""

    epoch: int = -1  # last completed epoch
    best_epoch: int = -1
    best_macro_f1: float = -1.0
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


def _rng_states(device: torch.device) -> dict[str, Any]:
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def _set_rng_states(states: dict[str, Any], device: torch.device) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    # Our own file (it holds RNG states, which are not plain tensors), hence weights_only=False.
    return torch.load(path, map_location="cpu", weights_only=False)


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in dist_utils.unwrap(model).state_dict().items()}


RESUME_MAY_CHANGE = frozenset(
    {"epochs", "patience", "num_threads", "learning_curve_fractions", "learning_curve_epochs"}
)


def _check_resumable(saved: dict[str, Any], config: DeepConfig, path: Path) -> None:
    current = config.to_dict()
    changed = sorted(k for k in current if k not in RESUME_MAY_CHANGE and saved.get(k) != current[k])
    if changed:
        raise ValueError(
            f"{path} was written with other settings "
            f"({', '.join(f'{k}: {saved.get(k)!r} -> {current[k]!r}' for k in changed)}); "
            "resume with the same options, or start again with --force"
        )


def train_model(
    model: nn.Module,
    train_loader: Any,
    val_loader: Any | None,
    config: DeepConfig,
    device: torch.device,
    class_names: Sequence[str],
    context: DistContext | None = None,
    *,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    desc: str = "",
    on_epoch_end: Callable[[int, TrainState], None] | None = None,
) -> TrainOutcome:
    """Train ``model`` (already prepared on ``device``) and return the best weights by validation macro-F1.

    ``train_loader``/``val_loader`` are clip loaders (``__iter__`` of ClipBatch, ``__len__``, ``set_epoch``).
    With ``checkpoint_dir``, writes last.pt after every epoch and best.pt on improvement; ``resume``
    continues from last.pt (model, optimizer, scheduler, scaler, epoch, RNG states, history).
    """
    context = context or DistContext(device=device)
    dtype = amp_dtype(config, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    optimizer = make_optimizer(model, config)
    batches = min(dist_utils.gather_objects(len(train_loader), context))
    steps_per_epoch = max(1, math.ceil(batches / config.grad_accum))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        warmup_cosine(config.epochs * steps_per_epoch, int(round(config.warmup_epochs * steps_per_epoch))),
    )
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    state = TrainState()
    best_state = _cpu_state(model)
    last_path = checkpoint_dir / "last.pt" if checkpoint_dir else None
    best_path = checkpoint_dir / "best.pt" if checkpoint_dir else None
    if resume and last_path is not None and last_path.is_file():
        checkpoint = load_checkpoint(last_path)
        _check_resumable(checkpoint.get("config", {}), config, last_path)
        dist_utils.unwrap(model).load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        state = TrainState(**checkpoint["train_state"])
        _set_rng_states(checkpoint["rng"], device)
        if best_path is not None and best_path.is_file():
            best_state = load_checkpoint(best_path)["model"]
    ddp_model = dist_utils.wrap_model(model, context)
    train_model_ = torch.compile(ddp_model) if config.compile else ddp_model
    memory = peak_memory(device)
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
                best_state = _cpu_state(model)
            state.epoch = epoch
            state.epoch_seconds.append(time.perf_counter() - epoch_start)
            state.history.append(row)
            state.stopped_early = epoch - state.best_epoch >= config.patience
            if checkpoint_dir is not None and context.is_main:
                if improved:
                    save_checkpoint(best_path, {"model": best_state, "epoch": epoch, "val_macro_f1": macro_f1})
                save_checkpoint(
                    last_path,
                    {
                        "model": _cpu_state(model),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict(),
                        "train_state": asdict(state),
                        "rng": _rng_states(device),
                        "config": config.to_dict(),
                    },
                )
            dist_utils.barrier(context)
            if progress and context.is_main:
                tqdm.write(
                    f"{desc or config.model} epoch {epoch + 1}: loss {stats['loss']:.4f}"
                    + (f", val macro-F1 {row['val_macro_f1']:.3f}" if "val_macro_f1" in row else "")
                    + f", {stats['clips_per_second']:.1f} clips/s, {state.epoch_seconds[-1]:.1f} s"
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
    )


def _train_one_epoch(
    model: nn.Module,
    ddp_model: nn.Module,
    loader: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
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
    n_batches = len(loader)
    bar = tqdm(total=n_batches, desc=desc, leave=False, disable=not (progress and context.is_main), unit="batch")
    optimizer.zero_grad(set_to_none=True)
    t_data = time.perf_counter()
    for batch in dist_utils.in_lockstep(loader, context):
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
        raise ValueError("the training loader yielded no clips; see rejected.csv")
    return {
        "loss": total_loss / total_clips,
        "clips_per_second": total_clips / max(data_time + net_time, 1e-9),  # all ranks together
        "data_seconds": data_time,
        "compute_seconds": net_time,
    }


# ----------------------------------------------------------------------------- learning curve


def subsample_groups(records: Sequence[VideoRecord], fraction: float, seed: int) -> list[VideoRecord]:
    """Training videos of a random ``fraction`` of the groups of every class (at least one group each)."""
    groups_by_class: dict[str, list[str]] = {}
    for record in records:
        names = groups_by_class.setdefault(record.class_name, [])
        if record.group not in names:
            names.append(record.group)
    rng = np.random.default_rng([int(seed), int(round(fraction * 1_000_000))])
    kept: set[str] = set()
    for class_name in sorted(groups_by_class):
        groups = sorted(groups_by_class[class_name])
        count = max(1, int(round(fraction * len(groups))))
        kept.update(rng.permutation(groups)[:count].tolist())
    return [r for r in records if r.group in kept]


# ----------------------------------------------------------------------------- the whole run


def make_loaders(
    records: Sequence[VideoRecord], config: DeepConfig, backend: Any, context: DistContext, run_dir: Path
) -> dict[str, Any]:
    from pipelines.loader import make_clip_loader

    specs = clip_specs(config)
    shard = dict(num_shards=context.world_size, shard_id=context.rank)
    loaders = {}
    for split in ("train", "val", "test"):
        split_records = [r for r in records if r.split == split]
        if not split_records:
            loaders[split] = None
            continue
        loaders[split] = make_clip_loader(
            split_records,
            specs[split],
            backend,
            batch_size=config.batch_size,
            seed=config.seed,
            shuffle=split == "train",
            run_dir=run_dir,
            num_threads=config.num_threads,
            cache_dir=RunPaths(run_dir).cache_dir,
            stage=f"deep-{config.model}",
            **shard,
        )
    return loaders


def _train_fresh(
    initial_state: dict[str, torch.Tensor],
    train_records: Sequence[VideoRecord],
    val_loader: Any,
    config: DeepConfig,
    backend: Any,
    context: DistContext,
    run_dir: Path,
    class_names: Sequence[str],
    *,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    desc: str = "",
) -> tuple[nn.Module, TrainOutcome]:
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
    return model, outcome


def learning_curve_points(
    initial_state: dict[str, torch.Tensor],
    records: Sequence[VideoRecord],
    loaders: dict[str, Any],
    config: DeepConfig,
    backend: Any,
    context: DistContext,
    run_dir: Path,
    class_names: Sequence[str],
    progress: bool,
    on_trained: Callable[[float, nn.Module], None] | None = None,
) -> list[LearningCurvePoint]:
    """RETRAIN from ``initial_state`` on each fraction of the training groups; test each model.

    ``on_trained(fraction, model)`` sees every retrained model (tests check they differ)."""
    epochs = config.learning_curve_epochs or config.epochs
    lc_config = replace(config, epochs=epochs, patience=min(config.patience, epochs))
    train_records = [r for r in records if r.split == "train"]
    dtype = amp_dtype(config, context.device)
    points = []
    for fraction in config.learning_curve_fractions:
        subset = subsample_groups(train_records, fraction, config.seed)
        model, _ = _train_fresh(
            initial_state,
            subset,
            loaders["val"],
            lc_config,
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
        points.append(
            LearningCurvePoint(
                fraction=fraction,
                n_train_videos=len(subset),
                seeds=[config.seed],
                macro_f1_mean=metrics.macro_f1,
                macro_f1_std=0.0,
                accuracy_mean=metrics.accuracy,
                accuracy_std=0.0,
                epochs=epochs,
            )
        )
    return points


def run_deep(
    run_dir: str | os.PathLike[str],
    backend: Any,
    config: DeepConfig,
    *,
    learning_curve: bool = False,
    force: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> ModelResult:
    """Train, test and measure one deep model; write RUN_DIR/results/<model>.json (rank 0 only).

    A finished model is returned as is unless ``force`` (a missing learning curve is added when asked).
    """
    paths = RunPaths(run_dir)
    result_path = paths.result_json(config.model)
    if result_path.is_file() and not force:
        existing = load_result(result_path)
        if not learning_curve or existing.learning_curve is not None:
            return existing
    if not paths.videos_csv.is_file():
        raise FileNotFoundError(
            f"{paths.videos_csv} not found; run `python cli.py prepare DATA_ROOT --run {run_dir}` first"
        )
    records = read_videos_csv(paths.videos_csv)
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
        if result_path.is_file() and not force:  # only the learning curve is missing
            result = load_result(result_path)
            result.learning_curve = learning_curve_points(
                initial_state, records, loaders, config, backend, context, Path(run_dir), names, progress
            )
            if context.is_main:
                save_result(result, result_path)
            return result
        checkpoint_dir = paths.checkpoints_dir / config.model
        model, outcome = _train_fresh(
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
        with peak_memory(context.device) as predict_memory:
            test = predict_videos(
                model, loaders["test"], context.device, dtype, context, progress=progress, desc="test"
            )
        plain = dist_utils.unwrap(model)
        flops = flops_per_clip(plain, config, context.device)
        curve = None
        if learning_curve:
            curve = learning_curve_points(
                initial_state, records, loaders, config, backend, context, Path(run_dir), names, progress
            )
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
            curve,
            paths,
        )
        if context.is_main:
            _save_model(paths.models_dir / f"{config.model}.pt", plain, config, names)
            _save_embeddings(paths.embeddings_dir / f"{config.model}.npz", test, names)
            result.cost.model_bytes = (paths.models_dir / f"{config.model}.pt").stat().st_size
            save_result(result, result_path)
        dist_utils.barrier(context)
        return result
    finally:
        dist_utils.shutdown(context)


def _build_result(
    config: DeepConfig,
    backend: Any,
    context: DistContext,
    names: Sequence[str],
    test: VideoScores,
    outcome: TrainOutcome,
    parameters: int,
    flops: float,
    predict_peak: int | None,
    curve: list[LearningCurvePoint] | None,
    paths: RunPaths,
) -> ModelResult:
    from pipelines.backend import library_versions

    n_videos = len(test.video_ids)
    predictions = [
        Prediction(video_id, int(label), int(probs.argmax()), [float(p) for p in probs])
        for video_id, label, probs in zip(test.video_ids, test.labels, test.probabilities, strict=True)
    ]
    dtype = amp_dtype(config, context.device)
    sampling = (
        "TSN segments (one frame per segment)" if config.model == "cnn2d" else f"windows (stride {config.stride})"
    )
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
        learning_curve=curve,
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
    (architecture, class_names, config, mean, std, input_layout)."""
    payload = load_checkpoint(Path(path))
    known = {f.name for f in fields(DeepConfig)}
    config = DeepConfig(**{k: v for k, v in payload["config"].items() if k in known})
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


__all__ = [
    "DeepConfig",
    "MODELS",
    "PROFILES",
    "build_model",
    "clip_specs",
    "load_trained_model",
    "run_deep",
    "subsample_groups",
    "train_model",
]
