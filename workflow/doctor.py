"""The model part of ``doctor``: whether each CNN's default pretrained weights are in the torch
hub cache (core/backend.py's doctor_report cannot look: the models sit above core)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torchvision.models import ResNet18_Weights, WeightsEnum
from torchvision.models.video import R3D_18_Weights

from analysis.names import human_name
from models.networks import cnn2d, cnn3d, pretrained


@dataclass(frozen=True)
class WeightsFile:
    model: str
    name: str  # the torchvision weights name, e.g. IMAGENET1K_V1
    url: str
    path: Path  # where torchvision looks for it

    @property
    def present(self) -> bool:
        return self.path.is_file()


def default_weight_files() -> list[WeightsFile]:
    defaults: list[tuple[str, WeightsEnum]] = [
        ("cnn2d", ResNet18_Weights[cnn2d.DEFAULT_WEIGHTS]),
        ("cnn3d", R3D_18_Weights[cnn3d.DEFAULT_WEIGHTS]),
    ]
    return [WeightsFile(model, member.name, member.url, pretrained.cache_path(member)) for model, member in defaults]


def weights_report(files: list[WeightsFile] | None = None) -> str:
    """What ``doctor`` prints about pretrained weights: one line per CNN, and the fix when missing."""
    files = default_weight_files() if files is None else files
    lines = ["Pretrained weights (torch hub cache; nothing is downloaded at run time):"]
    for f in files:
        state = "present" if f.present else "MISSING"
        lines.append(f"  {human_name(f.model):<38} {f.name:<15} {state:<8} {f.path}")
    missing = [f for f in files if not f.present]
    if missing:
        lines.append("  Missing weights mean training from scratch. On a connected machine fetch")
        lines += [f"    {f.url} -> {f.path}" for f in missing]
        lines.append("  or pass --weights /path/to/file.pth to `deep`.")
    return "\n".join(lines)
