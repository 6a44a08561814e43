"""Device-side settings of a run: seeds and determinism, AMP dtype, channels_last, peak memory."""

from __future__ import annotations

import os
import random
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn

from core.cost import PeakMemory
from models.deep.config import DeepConfig


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


class DeviceMemory:
    """Peak memory of a block with :class:`core.cost.PeakMemory`'s definition (see
    :data:`core.cost.MEMORY_KINDS`): on CUDA the device memory in use above a clean baseline plus
    ``resident``'s weights, which were moved to the GPU before the block (so a CNN's figure holds
    all it needs on the device, like a classical model's fit); else the process RSS above the
    baseline. ``torch_peak_bytes``: PyTorch's ``max_memory_allocated`` during the block (CUDA)."""

    def __init__(self, device: torch.device, resident: nn.Module | None = None) -> None:
        self.device = device
        self.resident_bytes = 0
        if resident is not None and device.type == "cuda":
            tensors = [*resident.parameters(), *resident.buffers()]
            self.resident_bytes = sum(t.numel() * t.element_size() for t in tensors if t.is_cuda)
        self._sampler = PeakMemory(cuda=device.type == "cuda")

    def __enter__(self) -> DeviceMemory:
        self._sampler.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sampler.__exit__(*exc)

    @property
    def peak_bytes(self) -> int:
        if self._sampler.device_delta_bytes is not None:
            return int(self._sampler.device_delta_bytes) + self.resident_bytes
        return int(self._sampler.rss_delta_bytes)

    @property
    def kind(self) -> str:
        return self._sampler.kind

    @property
    def torch_peak_bytes(self) -> int | None:
        return self._sampler.torch_peak_bytes


def peak_memory(device: torch.device, resident: nn.Module | None = None) -> DeviceMemory:
    return DeviceMemory(device, resident)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
