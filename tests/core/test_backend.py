from __future__ import annotations

import pytest

from core.backend import DEVICE_ENV_VAR, requested_device, resolve_backend


def test_cpu_forced_uses_cpu_for_every_stage():
    backend = resolve_backend("cpu")
    assert backend.requested == "cpu"
    assert all(choice.device == "cpu" for choice in backend.stages().values())
    assert backend.features.name == "numpy"
    assert backend.xp().__name__ == "numpy"
    assert str(backend.torch_device()) == "cpu"
    assert "forced" in backend.deep.reason


def test_auto_reports_a_reason_for_every_stage():
    backend = resolve_backend("auto")
    for stage, choice in backend.stages().items():
        assert choice.reason, stage
        assert choice.device in {"cpu", "gpu"}
    # "importable" is not "usable": without a CUDA GPU no stage may claim the GPU
    if not backend.cuda.usable:
        assert not backend.on_gpu
        assert backend.classical.name == "sklearn"


def test_environment_variable_is_the_default(monkeypatch):
    monkeypatch.setenv(DEVICE_ENV_VAR, "cpu")
    assert requested_device(None) == "cpu"
    assert requested_device("auto") == "auto"


def test_unknown_device_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(DEVICE_ENV_VAR, "tpu")
    with pytest.raises(ValueError, match="ACTIONBENCH_DEVICE"):
        requested_device(None)


def test_gpu_requested_without_gpu_fails_clearly():
    if resolve_backend("auto").cuda.usable:
        pytest.skip("a CUDA GPU is usable here; the failure path needs a machine without one")
    with pytest.raises(RuntimeError, match="no usable CUDA GPU"):
        resolve_backend("gpu")


@pytest.mark.gpu
def test_gpu_backend_uses_cuda_for_deep_models():
    backend = resolve_backend("gpu")
    assert backend.deep.device == "gpu"
    assert backend.torch_device().type == "cuda"
