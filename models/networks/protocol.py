"""What the training recipe, the evaluation and the explanations need of a clip network."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class ClipClassifier(Protocol):
    """A network that classifies a batch of clips: ``embed`` gives the pooled features the report
    projects and the head classifies; calling it gives the logits."""

    input_layout: str  # "BTCHW" (2D CNN, one image per frame) or "BCTHW" (3D CNN)
    channels_last: bool
    head: nn.Linear

    def embed(self, clips: torch.Tensor) -> torch.Tensor: ...

    def __call__(self, clips: torch.Tensor) -> torch.Tensor: ...
