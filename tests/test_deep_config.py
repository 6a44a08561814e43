from __future__ import annotations

import pytest

from models.deep_config import DeepConfig


def test_profiles_record_their_settings():
    assert (DeepConfig.for_profile("cnn2d", "gpu").frames, DeepConfig.for_profile("cnn2d", "gpu").size) == (16, 224)
    cpu = DeepConfig.for_profile("cnn3d", "cpu", epochs=7, lr=None)
    assert (cpu.profile, cpu.epochs, cpu.lr) == ("cpu", 7, DeepConfig.for_profile("cnn3d", "cpu").lr)
    with pytest.raises(ValueError, match="unknown deep model"):
        DeepConfig.for_profile("vit", "cpu")


def test_invalid_settings_are_rejected():
    with pytest.raises(ValueError, match="fractions"):
        DeepConfig.for_profile("cnn2d", "tiny", learning_curve_fractions=(0.0, 1.0))
    with pytest.raises(ValueError, match="unknown optimizer"):
        DeepConfig(model="cnn2d", optimizer="lamb")


def test_label_smoothing_must_be_below_one():
    assert DeepConfig.for_profile("cnn3d", "tiny", label_smoothing=0.0).label_smoothing == 0.0
    with pytest.raises(ValueError, match="label_smoothing"):
        DeepConfig.for_profile("cnn3d", "tiny", label_smoothing=1.0)


def test_switching_the_clip_cache_keeps_checkpoints_resumable(tmp_path):
    from dataclasses import replace

    from models.deep_checkpoint import check_resumable

    config = DeepConfig.for_profile("cnn2d", "tiny")
    saved = config.to_dict()
    check_resumable(saved, replace(config, cache=False), tmp_path / "last.pt")
    check_resumable({k: v for k, v in saved.items() if k != "cache"}, config, tmp_path / "last.pt")  # older file
    with pytest.raises(ValueError, match="label_smoothing"):
        check_resumable(saved, replace(config, label_smoothing=0.3), tmp_path / "last.pt")
