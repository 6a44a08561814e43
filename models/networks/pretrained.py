"""Pretrained backbone weights without downloads: the torch hub cache or a local state_dict file.

Nothing is fetched at run time. When the default weights are not in the cache, :func:`load_state_dict`
raises :class:`WeightsUnavailableError` before any training starts, naming the exact file to place
and the URL to fetch it from on a connected machine, or ``--weights none``.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import WeightsEnum

NO_WEIGHTS = ("none", "", None)


class WeightsUnavailableError(FileNotFoundError):
    """Pretrained weights are neither in the torch hub cache nor at the given path."""


def cache_path(weights: WeightsEnum) -> Path:
    """Where torchvision's ``load_state_dict_from_url`` keeps (and looks for) this checkpoint."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def is_pretrained(weights: str | os.PathLike[str] | None) -> bool:
    return weights not in NO_WEIGHTS and str(weights).lower() != "none"


def describe(weights: str | os.PathLike[str] | None) -> str:
    return "none" if not is_pretrained(weights) else str(weights)


def resolve_file(weights: str | os.PathLike[str], enum_type: type[WeightsEnum], model_name: str) -> Path:
    """The checkpoint file for a weights name (an enum member of ``enum_type``) or a local path."""
    text = str(weights)
    if text in enum_type.__members__:
        member = enum_type[text]
        path = cache_path(member)
        if not path.is_file():
            raise WeightsUnavailableError(
                f"{model_name} weights {text} are not in the torch hub cache and cannot be downloaded here. "
                f"On a connected machine fetch {member.url} and place it at {path} "
                f"(or pass --weights /path/to/{os.path.basename(member.url)}), "
                "or train from scratch with --weights none."
            )
        return path
    path = Path(text).expanduser()
    if not path.is_file():
        known = ", ".join(enum_type.__members__)
        raise WeightsUnavailableError(
            f"{model_name} weights {text!r}: no such file and not a known weights name ({known}, none)."
        )
    return path


def load_state_dict(path: str | os.PathLike[str], model_name: str) -> dict[str, torch.Tensor]:
    """A state_dict from a torchvision checkpoint or from a checkpoint written by this project, read
    without running code (``weights_only``). A file that is not one (empty, truncated, another
    format, pickled objects) raises ValueError naming it and what ``model_name`` expects."""
    expects = (
        f"--weights for {model_name} expects a PyTorch state_dict of that architecture (torchvision's .pth, "
        "or RUN/models/MODEL.pt of a run), its default weights' name, or none"
    )
    try:
        loaded: Any = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ValueError(
            f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: {first_line}); {expects}"
        ) from exc
    for key in ("model", "state_dict"):
        if isinstance(loaded, Mapping) and key in loaded and isinstance(loaded[key], Mapping):
            loaded = loaded[key]
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{path}: not a state_dict (a {type(loaded).__name__}); {expects}")
    state = {}
    for key, value in loaded.items():
        for prefix in ("module.", "_orig_mod.", "backbone."):  # DDP, torch.compile, this project's wrappers
            if key.startswith(prefix):
                key = key[len(prefix) :]
        state[key] = value
    return state


def load_backbone(
    backbone: nn.Module,
    state: Mapping[str, torch.Tensor],
    head_prefixes: tuple[str, ...],
    path: str | os.PathLike[str],
    model_name: str,
) -> None:
    """Load every backbone tensor strictly; tensors of the (replaced) classification head are dropped.
    Weights of another architecture (``path``, e.g. the other model's checkpoint) raise ValueError
    saying what does not fit."""
    kept = {k: v for k, v in state.items() if not k.startswith(head_prefixes)}
    expected = backbone.state_dict()
    missing = [k for k in expected if k not in kept]
    unexpected = [k for k in kept if k not in expected]
    mismatched = [
        k for k in kept if k in expected and not (torch.is_tensor(kept[k]) and kept[k].shape == expected[k].shape)
    ]
    if missing or unexpected or mismatched:
        example = (missing or unexpected or mismatched)[0]
        raise ValueError(
            f"{path} does not hold {model_name} weights: {len(missing)} tensors missing, {len(unexpected)} unknown, "
            f"{len(mismatched)} of another shape (e.g. {example!r}); pass a checkpoint of that architecture, "
            "or --weights none"
        )
    backbone.load_state_dict(kept, strict=True)
