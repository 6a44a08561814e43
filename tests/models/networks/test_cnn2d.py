from __future__ import annotations

import pytest
import torch
from torchvision.models import resnet18

from models.deep.build import clip_specs
from models.networks import pretrained
from models.networks.cnn2d import FrameResNet, build_cnn2d, normalization
from workflow.profiles import PROFILES


def test_forward_shapes_and_embedding():
    model = build_cnn2d(3, weights="none").eval()
    clips = torch.randn(2, 4, 3, 32, 32)  # B, T, C, H, W
    with torch.no_grad():
        assert model(clips).shape == (2, 3)
        assert model.embed(clips).shape == (2, 512)


def test_parameter_count_matches_torchvision():
    model = build_cnn2d(3, weights="none")
    assert sum(p.numel() for p in model.parameters()) == 11_178_051


@pytest.mark.parametrize("pooling", ["avg", "max", "attention"])
def test_poolings_run(pooling):
    model = build_cnn2d(5, weights="none", pooling=pooling, dropout=0.0).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 3, 32, 32)).shape == (1, 5)


def test_max_pooling_takes_the_frame_maximum():
    model = FrameResNet(2, pooling="max").eval()
    features = torch.tensor([[[1.0, 5.0], [3.0, 2.0]]])
    assert model.pool(features).tolist() == [[3.0, 5.0]]


def test_imagenet_normalisation_reaches_the_clip_specs():
    mean, std = normalization("IMAGENET1K_V1")
    assert mean == pytest.approx((0.485, 0.456, 0.406))
    assert std == pytest.approx((0.229, 0.224, 0.225))
    specs = clip_specs(PROFILES["tiny"].deep_config("cnn2d"))
    for spec in specs.values():
        assert spec.mean == pytest.approx(mean) and spec.std == pytest.approx(std)
        assert spec.layout == "BTCHW" and spec.sampling == "segment"


def test_missing_default_weights_fail_with_the_place_to_put_them(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(pretrained.WeightsUnavailableError) as info:
        build_cnn2d(3)
    message = str(info.value)
    assert str(tmp_path / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert "--weights none" in message


def test_cached_and_local_weights_load_the_backbone_and_replace_the_head(monkeypatch, tmp_path):
    source = resnet18(weights=None)  # stands in for the ImageNet checkpoint (1000-class head)
    (tmp_path / "checkpoints").mkdir()
    torch.save(source.state_dict(), tmp_path / "checkpoints" / "resnet18-f37072fd.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    for weights in ("IMAGENET1K_V1", tmp_path / "checkpoints" / "resnet18-f37072fd.pth"):
        model = build_cnn2d(3, weights=weights)
        assert torch.equal(model.backbone.conv1.weight, source.conv1.weight)
        assert model.head.out_features == 3


def test_a_local_checkpoint_of_another_architecture_is_rejected(tmp_path):
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=f"{tmp_path / 'bad.pth'} does not hold cnn2d \\(ResNet-18\\) weights"):
        build_cnn2d(3, weights=tmp_path / "bad.pth")
