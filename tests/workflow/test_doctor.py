from __future__ import annotations

from pathlib import Path

from workflow.doctor import WeightsFile, default_weight_files, weights_report


def test_weights_report_says_which_default_weights_are_in_the_cache(tmp_path: Path):
    present = tmp_path / "resnet18-f37072fd.pth"
    present.write_bytes(b"weights")
    files = [
        WeightsFile("cnn2d", "IMAGENET1K_V1", "https://example.org/resnet18.pth", present),
        WeightsFile("cnn3d", "KINETICS400_V1", "https://example.org/r3d_18.pth", tmp_path / "r3d_18-b3b3357e.pth"),
    ]
    lines = weights_report(files).splitlines()
    assert "ResNet-18 + temporal pooling (2D CNN)" in lines[1] and "present" in lines[1]
    assert "R3D-18 (3D CNN)" in lines[2] and "MISSING" in lines[2]
    assert any("https://example.org/r3d_18.pth" in line and "r3d_18-b3b3357e.pth" in line for line in lines)
    assert not any("resnet18.pth ->" in line for line in lines)  # present: no fix to suggest


def test_default_weight_files_are_the_torch_hub_cache_paths():
    files = {f.model: f for f in default_weight_files()}
    assert files["cnn2d"].name == "IMAGENET1K_V1" and files["cnn3d"].name == "KINETICS400_V1"
    assert files["cnn3d"].path.parent.name == "checkpoints" and files["cnn3d"].path.name.startswith("r3d_18")
