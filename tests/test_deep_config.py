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
