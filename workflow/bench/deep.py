"""Throughput of the deep models: training and inference clips/s, model only (synthetic input) and,
when a run directory is given, with the real clip loader (decode + augmentation + model)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.backend import Backend, library_versions
from core.distributed import DistContext
from core.runfiles import RunPaths, atomic_write_json
from models.deep.build import build_model, count_parameters, example_input, make_loaders
from models.deep.config import DeepConfig
from models.deep.runtime import amp_dtype, autocast, prepare_model, use_channels_last
from models.deep.training import make_optimizer
from pipelines.data.records import class_names, read_videos_csv
from workflow.profiles import get_profile


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    clips: torch.Tensor,
    labels: torch.Tensor,
    device: torch.device,
    dtype: torch.dtype | None,
) -> None:
    with autocast(device, dtype):
        loss = nn.functional.cross_entropy(model(clips).float(), labels)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


def _timed_clips_per_second(step: Any, clips_per_step: int, steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return clips_per_step * steps / (time.perf_counter() - start)


def bench_model_only(
    model: nn.Module, config: DeepConfig, device: torch.device, *, steps: int, warmup: int
) -> dict[str, float]:
    """Training and inference clips/s on a fixed synthetic batch already on the device (no data loading)."""
    dtype = amp_dtype(config, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    optimizer = make_optimizer(model, config)
    clips = example_input(config, config.batch_size, device)
    labels = torch.zeros(config.batch_size, dtype=torch.long, device=device)
    model.train()
    train = _timed_clips_per_second(
        lambda: _train_step(model, optimizer, scaler, clips, labels, device, dtype),
        config.batch_size,
        steps,
        warmup,
        device,
    )
    model.eval()

    def infer() -> None:
        with torch.no_grad(), autocast(device, dtype):
            model(clips)

    inference = _timed_clips_per_second(infer, config.batch_size, steps, warmup, device)
    return {"train_clips_per_second": train, "inference_clips_per_second": inference}


def bench_with_loader(
    model: nn.Module, config: DeepConfig, backend: Backend, run_dir: Path, *, steps: int
) -> dict[str, float]:
    """End-to-end clips/s with the real loader: training steps on train-split batches, inference on test
    batches, and the loader alone (decode + augmentation, no model). The first batch is a warm-up."""
    device = backend.torch_device()
    records = read_videos_csv(RunPaths(run_dir).videos_csv)
    loaders = make_loaders(records, config, backend, DistContext(device=device), run_dir)
    dtype = amp_dtype(config, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    optimizer = make_optimizer(model, config)

    def run(loader: Any, work: Any) -> float:
        clips, start = 0, None
        for number, batch in enumerate(loader):
            if number > steps:
                break
            work(batch)
            _sync(device)
            if start is None:  # after the warm-up batch
                start = time.perf_counter()
            else:
                clips += len(batch.labels)
        elapsed = time.perf_counter() - start if start is not None else 0.0
        return clips / elapsed if clips and elapsed > 0 else float("nan")

    def train(batch: Any) -> None:
        labels = torch.as_tensor(batch.labels, dtype=torch.long, device=device)
        _train_step(model, optimizer, scaler, batch.clips.to(device), labels, device, dtype)

    def infer(batch: Any) -> None:
        with torch.no_grad(), autocast(device, dtype):
            model(batch.clips.to(device))

    model.train()
    results = {"loader_only_clips_per_second": run(loaders["train"], lambda batch: None)}
    results["train_clips_per_second"] = run(loaders["train"], train)
    model.eval()
    if loaders["test"] is not None:
        results["inference_clips_per_second"] = run(loaders["test"], infer)
    return results


def bench_deep(
    model_name: str,
    backend: Backend,
    *,
    run_dir: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    profile: str | None = None,
    steps: int = 10,
    warmup: int = 3,
    **overrides: object,
) -> dict[str, Any]:
    """Benchmark ``model_name`` with a profile's settings (default: gpu on CUDA, cpu otherwise; random
    weights, speed does not depend on them). Writes JSON to ``out`` (default RUN_DIR/bench/deep_<model>.json
    when a run is given) and returns it."""

    device = backend.torch_device()
    chosen = get_profile(profile, backend)
    config = chosen.deep_config(model_name, **{**overrides, "weights": "none"})
    num_classes = 3
    if run_dir is not None:
        num_classes = len(class_names(read_videos_csv(RunPaths(run_dir).videos_csv)))
    torch.backends.cudnn.benchmark = device.type == "cuda"
    model = prepare_model(build_model(config, num_classes), config, device)
    dtype = amp_dtype(config, device)
    report: dict[str, Any] = {
        "model": model_name,
        "device": backend.device_description(),
        "backend": backend.deep.name,
        "profile": chosen.name,
        "batch_size": config.batch_size,
        "frames": config.frames,
        "size": config.size,
        "amp_dtype": str(dtype).replace("torch.", "") if dtype else None,
        "channels_last": use_channels_last(config, device),
        "parameters": count_parameters(model),
        "steps": steps,
        "warmup_steps": warmup,
        "model_only": bench_model_only(model, config, device, steps=steps, warmup=warmup),
        "with_loader": None,
        "versions": library_versions(),
    }
    if run_dir is not None:
        report["with_loader"] = bench_with_loader(model, config, backend, Path(run_dir), steps=steps)
        out = out or RunPaths(run_dir).bench_dir / f"deep_{model_name}.json"
    if out is not None:
        atomic_write_json(out, report)
    return report


def summarize(report: dict[str, Any]) -> str:
    model_only = report["model_only"]
    text = (
        f"{report['model']} on {report['device']} "
        f"({report['frames']}x{report['size']} px, batch {report['batch_size']}): "
        f"model only {model_only['train_clips_per_second']:.1f} train / {model_only['inference_clips_per_second']:.1f} "
        "inference clips/s"
    )
    loader = report.get("with_loader")
    if loader:
        text += (
            f"; with the loader {loader['train_clips_per_second']:.1f} train / "
            f"{loader.get('inference_clips_per_second', float('nan')):.1f} inference clips/s "
            f"(loader alone {loader['loader_only_clips_per_second']:.1f})"
        )
    return text
