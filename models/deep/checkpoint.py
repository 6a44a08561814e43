"""Checkpoint files (atomic torch.save) and the RNG states and settings check behind ``--resume``."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core import distributed as dist_utils
from core.runfiles import atomic_path
from models.deep.config import DeepConfig


def rng_states(device: torch.device) -> dict[str, Any]:
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def set_rng_states(states: dict[str, Any], device: torch.device) -> None:
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


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in dist_utils.unwrap(model).state_dict().items()}


# Settings that do not change what the next epochs train (the clip cache only changes speed).
RESUME_MAY_CHANGE = frozenset(
    {"epochs", "patience", "num_threads", "cache", "cache_max_gb", "learning_curve_fractions", "learning_curve_epochs"}
)


def check_resumable(saved: dict[str, Any], config: DeepConfig, path: Path) -> None:
    current = config.to_dict()
    changed = sorted(k for k in current if k not in RESUME_MAY_CHANGE and saved.get(k) != current[k])
    if changed:
        raise ValueError(
            f"{path} was written with other settings "
            f"({', '.join(f'{k}: {saved.get(k)!r} -> {current[k]!r}' for k in changed)}); "
            "resume with the same options, or start again with --force"
        )
