"""``cnn2d``: torchvision ResNet-18 applied to every frame, temporal pooling over T, dropout, linear head.

Input layout ``BTCHW`` (float32, normalised with the ImageNet constants of the weights' metadata).
"""

from __future__ import annotations

import os

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

from models.networks import pretrained

DEFAULT_WEIGHTS = "IMAGENET1K_V1"
POOLINGS = ("avg", "max", "attention")
EMBEDDING_DIM = 512
INPUT_LAYOUT = "BTCHW"


class AttentionPooling(nn.Module):
    """Softmax-weighted mean over time with one learned score per frame embedding."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, D)
        weights = torch.softmax(self.score(x).squeeze(-1), dim=1)
        return torch.einsum("bt,btd->bd", weights, x)


class TemporalPooling(nn.Module):
    def __init__(self, kind: str, dim: int) -> None:
        super().__init__()
        if kind not in POOLINGS:
            raise ValueError(f"unknown pooling {kind!r}; use one of {POOLINGS}")
        self.kind = kind
        self.attention = AttentionPooling(dim) if kind == "attention" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.attention is not None:
            return self.attention(x)
        return x.amax(dim=1) if self.kind == "max" else x.mean(dim=1)


class FrameResNet(nn.Module):
    """Per-frame ResNet-18 + temporal pooling. ``embed`` gives the penultimate (pooled) features."""

    input_layout = INPUT_LAYOUT

    def __init__(self, num_classes: int, pooling: str = "avg", dropout: float = 0.5) -> None:
        super().__init__()
        self.backbone = resnet18(weights=None)
        self.backbone.fc = nn.Identity()
        self.pool = TemporalPooling(pooling, EMBEDDING_DIM)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(EMBEDDING_DIM, num_classes)
        self.channels_last = False

    def embed(self, clips: torch.Tensor) -> torch.Tensor:
        b, t = clips.shape[:2]
        frames = clips.reshape(b * t, *clips.shape[2:])
        if self.channels_last:
            frames = frames.contiguous(memory_format=torch.channels_last)
        features = self.backbone(frames).reshape(b, t, -1)
        return self.pool(features)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(clips)))


def normalization(
    weights: str | os.PathLike[str] | None = DEFAULT_WEIGHTS,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) in 0..1 units from torchvision's ImageNet weight metadata.

    ``none`` and local checkpoints use the same constants: training from scratch then sees inputs on
    the scale the architecture is usually trained at, and local files are expected to be ImageNet ResNet-18s.
    """
    transforms = ResNet18_Weights.IMAGENET1K_V1.transforms()
    return tuple(float(v) for v in transforms.mean), tuple(float(v) for v in transforms.std)


def build_cnn2d(
    num_classes: int,
    weights: str | os.PathLike[str] | None = DEFAULT_WEIGHTS,
    pooling: str = "avg",
    dropout: float = 0.5,
) -> FrameResNet:
    """ResNet-18 per frame with ``weights`` = ``IMAGENET1K_V1`` (from the hub cache), ``none`` or a local path."""
    model = FrameResNet(num_classes, pooling=pooling, dropout=dropout)
    if pretrained.is_pretrained(weights):
        path = pretrained.resolve_file(weights, ResNet18_Weights, "cnn2d (ResNet-18)")  # type: ignore[arg-type]
        name = "cnn2d (ResNet-18)"
        state = pretrained.load_state_dict(path, name)
        pretrained.load_backbone(model.backbone, state, ("fc.", "head.", "pool.", "dropout."), path, name)
    return model
