"""Checkpoint files (atomic torch.save, read with ``weights_only=True``) and the RNG states and
settings check behind resuming.

Every file written here holds tensors, numbers, strings, lists and dicts only, so it is read back
with ``torch.load(..., weights_only=True)``: a checkpoint from someone else's run folder cannot run
code on ``deep --resume``, ``run`` or ``analyze``. That is why the RNG states are stored as tensors
and lists, not as the tuples and arrays ``random`` and NumPy hand out.
"""

from __future__ import annotations

import pickle
import random
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core import distributed as dist_utils
from core.console import notice
from core.runfiles import UnreadableFileError, atomic_path, set_aside
from models.deep.config import NOT_IN_MODEL, DeepConfig

# What ``deep --resume`` may change on top of NOT_IN_MODEL: train longer, or with other patience.
RESUME_MAY_CHANGE = NOT_IN_MODEL | {"epochs", "patience"}
# How a training treats RUN_DIR/checkpoints/<model>/last.pt:
#   "no": train afresh; "yes" (deep --resume): continue, failing on settings outside RESUME_MAY_CHANGE;
#   "auto" (run): continue only from a checkpoint of these very settings, else train afresh, saying why.
RESUME_MODES = ("no", "yes", "auto")
CHECKPOINT_PARTS = ("model", "optimizer", "scheduler", "scaler", "train_state", "rng", "config")  # of last.pt


def rng_states(device: torch.device) -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) RNG states in forms ``weights_only`` loading accepts."""
    version, python_state, gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=False)
    states: dict[str, Any] = {
        "python": [version, list(python_state), gauss],
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def set_rng_states(states: Mapping[str, Any], device: torch.device) -> None:
    version, python_state, gauss = states["python"]
    random.setstate((version, tuple(python_state), gauss))
    numpy_state = states["numpy"]
    np.random.set_state(
        {
            "bit_generator": numpy_state["bit_generator"],
            "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]},
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        }
    )
    torch.set_rng_state(states["torch"])
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A file written by :func:`save_checkpoint`, loaded without running code (``weights_only``);
    :class:`~core.runfiles.UnreadableFileError` naming it when it is empty, truncated, not a
    checkpoint, or needs more than tensors and plain values (such as pickled objects)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0]
        raise UnreadableFileError(path, f"{type(exc).__name__}: {first_line}") from exc
    if not isinstance(payload, dict):
        raise UnreadableFileError(path, f"a {type(payload).__name__}, not a checkpoint")
    return payload


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in dist_utils.unwrap(model).state_dict().items()}


@dataclass
class ResumePoint:
    """What training continues from: last.pt's payload and the best weights so far (best.pt)."""

    last: dict[str, Any]
    best_model: dict[str, torch.Tensor] | None


def load_resume_point(last_path: Path, best_path: Path) -> ResumePoint | None:
    """last.pt with the best.pt of the same training, or None (train afresh) when there is no
    last.pt, or when either file cannot be read (set aside, named) or best.pt belongs to another
    epoch than last.pt records (killed between the two writes)."""
    if not last_path.is_file():
        return None
    try:
        last = load_checkpoint(last_path)
        missing = [key for key in CHECKPOINT_PARTS if key not in last]
        if missing:
            raise UnreadableFileError(last_path, f"no {', '.join(missing)} in it")
        best_epoch = int(last["train_state"]["best_epoch"])
    except (UnreadableFileError, KeyError, TypeError, ValueError) as exc:
        set_aside(last_path, exc, redo="training afresh")
        return None
    if best_epoch < 0:
        return ResumePoint(last, None)
    try:
        best = load_checkpoint(best_path) if best_path.is_file() else None
    except UnreadableFileError as exc:
        set_aside(best_path, exc, redo="training afresh (the best weights so far are lost with it)")
        return None
    if best is None or best.get("epoch") != best_epoch or "model" not in best:
        notice(f"{best_path} does not hold the best epoch that {last_path.name} records: training afresh")
        return None
    return ResumePoint(last, best["model"])


def resume_problem(point: ResumePoint, config: DeepConfig, path: Path, mode: str) -> str | None:
    """Why ``point`` cannot be continued with ``config`` in ``mode`` ("yes" or "auto"), or None."""
    may_change = RESUME_MAY_CHANGE if mode == "yes" else NOT_IN_MODEL
    changed = config.changes_from(point.last.get("config", {}), ignore=may_change)
    if not changed:
        return None
    return f"{path} was written with other settings ({', '.join(changed)})"


def check_resumable(point: ResumePoint, config: DeepConfig, path: Path, mode: str) -> bool:
    """Whether to continue from ``point``: "yes" stops with one line on other settings, "auto"
    says why it trains afresh instead."""
    problem = resume_problem(point, config, path, mode)
    if problem is None:
        return True
    if mode == "yes":
        raise ValueError(f"{problem}; resume with the same options, or leave out --resume to train afresh")
    notice(f"{problem}: training afresh")
    return False
