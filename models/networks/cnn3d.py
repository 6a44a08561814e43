"""``cnn3d``: torchvision R3D-18 with a new head, fine-tuned (optionally with a frozen stem or backbone).

Input layout ``BCTHW`` (float32, normalised with the Kinetics-400 constants of the weights' metadata;
the weights were trained on 112 px crops).
"""

from __future__ import annotations

import os

import torch
from torch import nn
from torchvision.models.video import R3D_18_Weights, r3d_18

from models.networks import pretrained

DEFAULT_WEIGHTS = "KINETICS400_V1"
FREEZE_CHOICES = ("none", "stem", "all-but-head")
EMBEDDING_DIM = 512
INPUT_LAYOUT = "BCTHW"


class ClipR3D(nn.Module):
    """R3D-18 backbone + dropout + linear head. ``embed`` gives the penultimate (pooled) features."""

    input_layout = INPUT_LAYOUT

    def __init__(self, num_classes: int, dropout: float = 0.5, freeze: str = "none") -> None:
        super().__init__()
        if freeze not in FREEZE_CHOICES:
            raise ValueError(f"unknown freeze {freeze!r}; use one of {FREEZE_CHOICES}")
        self.backbone = r3d_18(weights=None)
        self.backbone.fc = nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(EMBEDDING_DIM, num_classes)
        self.freeze = freeze
        self.channels_last = False
        for param in self._frozen().parameters():
            param.requires_grad_(False)

    def _frozen(self) -> nn.Module:
        if self.freeze == "stem":
            return self.backbone.stem
        if self.freeze == "all-but-head":
            return self.backbone
        return nn.Identity()

    def train(self, mode: bool = True) -> ClipR3D:
        super().train(mode)
        self._frozen().eval()  # frozen layers keep their BatchNorm statistics too
        return self

    def embed(self, clips: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            clips = clips.contiguous(memory_format=torch.channels_last_3d)
        return self.backbone(clips)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(clips)))


def normalization(
    weights: str | os.PathLike[str] | None = DEFAULT_WEIGHTS,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) in 0..1 units from torchvision's Kinetics-400 R3D-18 metadata (not ImageNet's).

    ``none`` and local checkpoints use the same constants (local files are expected to be Kinetics R3D-18s).
    """
    transforms = R3D_18_Weights.KINETICS400_V1.transforms()
    return tuple(float(v) for v in transforms.mean), tuple(float(v) for v in transforms.std)


def build_cnn3d(
    num_classes: int,
    weights: str | os.PathLike[str] | None = DEFAULT_WEIGHTS,
    freeze: str = "none",
    dropout: float = 0.5,
) -> ClipR3D:
    """R3D-18 with ``weights`` = ``KINETICS400_V1`` (from the hub cache), ``none`` or a local path; fine-tuned
    by default (``freeze="none"``)."""
    model = ClipR3D(num_classes, dropout=dropout, freeze=freeze)
    if pretrained.is_pretrained(weights):
        path = pretrained.resolve_file(weights, R3D_18_Weights, "cnn3d (R3D-18)")  # type: ignore[arg-type]
        state = pretrained.load_state_dict(path, "cnn3d (R3D-18)")
        pretrained.load_backbone(model.backbone, state, ("fc.", "head.", "dropout."), path, "cnn3d (R3D-18)")
    return model
