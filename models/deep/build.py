"""Everything built from a :class:`DeepConfig`: the model, its clip specs and loaders, example
inputs, parameter and FLOP counts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from core.backend import Backend
from core.distributed import DistContext
from core.runfiles import RunPaths
from models.deep.config import DeepConfig
from models.networks import cnn2d, cnn3d
from pipelines.data.records import VideoRecord
from pipelines.video.clips import ClipSpec

if TYPE_CHECKING:
    from pipelines.video.loader import ClipLoader


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

    mean, std = normalization(config)
    common = dict(
        frames=config.frames,
        size=config.size,
        stride=config.stride,
        stride_fps=config.stride_fps,
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


def uses_clip_cache(config: DeepConfig, backend: Backend) -> bool:
    """Whether the loaders read the decoded-clip cache: the config's choice, else the backend's default."""
    return backend.clip_cache_default if config.cache is None else config.cache


def clip_cache_max_bytes(config: DeepConfig) -> int | None:
    """The decoded-clip cache's size limit in bytes (None: the cache's default)."""
    return None if config.cache_max_gb is None else int(config.cache_max_gb * 1e9)


def make_loaders(
    records: Sequence[VideoRecord], config: DeepConfig, backend: Backend, context: DistContext, run_dir: Path
) -> dict[str, ClipLoader | None]:

    # Imported here, not at the top: the video stack (PyAV, OpenCV, DALI) loads only when loaders
    # are made, so models and the training loop work on a machine without it (scripts/gpu_check.py).
    from pipelines.data.keyframes import KeyframeIndexes
    from pipelines.video.loader import make_clip_loader

    specs = clip_specs(config)
    cache_dir = RunPaths(run_dir).cache_dir if uses_clip_cache(config, backend) else None
    shard = dict(num_shards=context.world_size, shard_id=context.rank)
    keyframes = KeyframeIndexes(RunPaths(run_dir).keyframes_npz)  # read once for the three splits
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
            cache_dir=cache_dir,
            cache_max_bytes=clip_cache_max_bytes(config),
            keyframes=keyframes,
            stage=f"deep-{config.model}",
            **shard,
        )
    return loaders
