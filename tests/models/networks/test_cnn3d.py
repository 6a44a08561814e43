from __future__ import annotations

import pytest
import torch
from torchvision.models.video import r3d_18

from models.deep.build import clip_specs
from models.networks import pretrained
from models.networks.cnn3d import build_cnn3d, normalization
from workflow.profiles import PROFILES


def test_forward_shapes_and_embedding():
    model = build_cnn3d(3, weights="none").eval()
    clips = torch.randn(2, 3, 4, 32, 32)  # B, C, T, H, W
    with torch.no_grad():
        assert model(clips).shape == (2, 3)
        assert model.embed(clips).shape == (2, 512)


def test_parameter_count_matches_torchvision():
    model = build_cnn3d(3, weights="none")
    assert sum(p.numel() for p in model.parameters()) == 33_167_811


def test_kinetics_normalisation_reaches_the_clip_specs():
    mean, std = normalization("KINETICS400_V1")
    assert mean == pytest.approx((0.43216, 0.394666, 0.37645))
    assert std == pytest.approx((0.22803, 0.22145, 0.216989))
    assert mean != pytest.approx((0.485, 0.456, 0.406))  # not ImageNet's
    specs = clip_specs(PROFILES["tiny"].deep_config("cnn3d"))
    for spec in specs.values():
        assert spec.mean == pytest.approx(mean) and spec.std == pytest.approx(std)
        assert spec.layout == "BCTHW" and spec.sampling == "window"


def test_gpu_profile_uses_112_px_and_fine_tunes():
    config = PROFILES["gpu"].deep_config("cnn3d")
    assert (config.frames, config.size, config.freeze, config.weights) == (16, 112, "none", "KINETICS400_V1")
    assert all(p.requires_grad for p in build_cnn3d(3, weights="none").parameters())


@pytest.mark.parametrize(
    "freeze, trainable", [("stem", 33_167_811 - (3 * 64 * 3 * 7 * 7 + 2 * 64)), ("all-but-head", 512 * 3 + 3)]
)
def test_freeze_options(freeze, trainable):
    model = build_cnn3d(3, weights="none", freeze=freeze).train()
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == trainable
    assert not model.backbone.stem[1].training  # frozen BatchNorm keeps its statistics


def test_missing_default_weights_fail_with_the_place_to_put_them(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(pretrained.WeightsUnavailableError) as info:
        build_cnn3d(3)
    assert str(tmp_path / "checkpoints" / "r3d_18-b3b3357e.pth") in str(info.value)
    assert "https://download.pytorch.org/models/r3d_18-b3b3357e.pth" in str(info.value)


def test_local_weights_load_the_backbone_and_replace_the_head(tmp_path):
    source = r3d_18(weights=None)  # 400-class head, like the Kinetics checkpoint
    torch.save(source.state_dict(), tmp_path / "r3d.pth")
    model = build_cnn3d(3, weights=tmp_path / "r3d.pth")
    assert torch.equal(model.backbone.stem[0].weight, source.stem[0].weight)
    assert model.head.out_features == 3
