from __future__ import annotations

import pytest

from models.deep.config import DeepConfig
from workflow.profiles import PROFILES


def test_profiles_record_their_settings():
    assert (PROFILES["gpu"].deep_config("cnn2d").frames, PROFILES["gpu"].deep_config("cnn2d").size) == (16, 224)
    cpu = PROFILES["cpu"].deep_config("cnn3d", epochs=7, lr=None)
    assert (cpu.profile, cpu.epochs, cpu.lr) == ("cpu", 7, PROFILES["cpu"].deep_config("cnn3d").lr)
    with pytest.raises(ValueError, match="unknown deep model"):
        PROFILES["cpu"].deep_config("vit")


def test_invalid_settings_are_rejected():
    with pytest.raises(ValueError, match="fractions"):
        PROFILES["tiny"].deep_config("cnn2d", learning_curve_fractions=(0.0, 1.0))
    with pytest.raises(ValueError, match="unknown optimizer"):
        DeepConfig(model="cnn2d", optimizer="lamb")


def test_label_smoothing_must_be_below_one():
    assert PROFILES["tiny"].deep_config("cnn3d", label_smoothing=0.0).label_smoothing == 0.0
    with pytest.raises(ValueError, match="label_smoothing"):
        PROFILES["tiny"].deep_config("cnn3d", label_smoothing=1.0)


def test_switching_the_clip_cache_keeps_checkpoints_resumable(tmp_path):
    from dataclasses import replace

    from models.deep.checkpoint import check_resumable

    config = PROFILES["tiny"].deep_config("cnn2d")
    saved = config.to_dict()
    check_resumable(saved, replace(config, cache=False), tmp_path / "last.pt")
    check_resumable({k: v for k, v in saved.items() if k != "cache"}, config, tmp_path / "last.pt")  # older file
    with pytest.raises(ValueError, match="label_smoothing"):
        check_resumable(saved, replace(config, label_smoothing=0.3), tmp_path / "last.pt")
