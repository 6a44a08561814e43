from __future__ import annotations

from dataclasses import replace

import pytest

from core.backend import (
    DEVICE_ENV_VAR,
    NVDEC_PROBED_CODECS,
    StageChoice,
    decode_probe_clip,
    doctor_report,
    nvdec_accepts,
    probe_clip,
    probe_nvdec_codecs,
    requested_device,
    resolve_backend,
)


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


def _spy_on_probes(monkeypatch: pytest.MonkeyPatch, calls: list[tuple]) -> None:
    """Record the order of CUDA device selection and of every backend probe (probes say "unusable")."""
    import torch

    import core.backend as backend_module

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))
    off = backend_module.Probe(False, None, "spied")

    def probe(name):  # type: ignore[no-untyped-def]
        def record(*args):  # type: ignore[no-untyped-def]
            calls.append((name, *args))
            return (off, None) if name == "_probe_cuda" else off

        return record

    for name in ("_probe_cuda", "_probe_dali_gpu", "_probe_cupy", "_probe_cuml", "_probe_xgboost_cuda"):
        monkeypatch.setattr(backend_module, name, probe(name))


def test_local_rank_picks_the_cuda_device_before_any_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under torchrun every rank must make its own GPU current before the first CUDA call (the
    probes create contexts and pools), else all ranks land on GPU 0."""
    calls: list[tuple] = []
    _spy_on_probes(monkeypatch, calls)
    monkeypatch.setenv("LOCAL_RANK", "1")
    resolve_backend("auto")
    assert calls[0] == ("set_device", 1)
    assert [call[0] for call in calls[1:]] == [
        "_probe_cuda", "_probe_dali_gpu", "_probe_cupy", "_probe_cuml", "_probe_xgboost_cuda"
    ]  # fmt: skip
    assert ("_probe_xgboost_cuda", calls[-1][1], 1) == calls[-1]  # XGBoost is told the device too


def test_local_rank_beyond_the_visible_gpus_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple] = []
    _spy_on_probes(monkeypatch, calls)
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(RuntimeError, match=r"LOCAL_RANK=2 but only 2 CUDA device\(s\).*--nproc_per_node 2"):
        resolve_backend("auto")
    assert calls == []


def test_cpu_forced_never_selects_a_cuda_device(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple] = []
    _spy_on_probes(monkeypatch, calls)
    monkeypatch.setenv("LOCAL_RANK", "1")
    backend = resolve_backend("cpu")
    assert calls == [] and backend.cuda_device is None


def test_defaults_chosen_per_backend() -> None:
    """The decoded-clip cache and the feature batch are decided by the backend, in one place."""
    backend = resolve_backend("cpu")
    assert backend.clip_cache_default is True
    assert backend.feature_batch_size == 8
    gpu = StageChoice("test", "gpu", "test")
    gpu_decode = replace(backend, decode=replace(gpu, name="dali-gpu"), features=replace(gpu, name="cupy"))
    assert gpu_decode.clip_cache_default is False
    assert gpu_decode.feature_batch_size == 64


@pytest.mark.parametrize(
    "codec, width, height, accepted",
    [("h264", 160, 120, True), ("h264", 32, 32, False), ("vp9", 160, 120, False), ("vp9", 320, 240, True),
     ("hevc", 160, 120, False), ("mpeg4", 320, 240, True), ("mjpeg", 64, 48, False), ("av1", 640, 480, False),
     ("mpeg4", 4096, 2160, False)],
)  # fmt: skip
def test_nvdec_size_limits(codec: str, width: int, height: int, accepted: bool) -> None:
    assert nvdec_accepts(codec, width, height) is accepted
    backend = resolve_backend("cpu")
    assert backend.nvdec_accepts(codec, width, height) is False  # no NVDEC on a CPU backend


@pytest.mark.parametrize("codec", ["vp9", "mjpeg"])
def test_probe_clip_decodes_with_dali_on_the_cpu(codec: str) -> None:
    """The NVDEC probe's clip and decode check, run on DALI's CPU decoder (VP9 and MJPEG decode
    there): a real clip of the asked size whose grey level is checked."""
    assert decode_probe_clip(codec, 64, 48, "cpu").startswith("4 frames of 64x48, mean grey 1")


def test_probe_clip_is_a_real_video_for_every_probed_codec(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import av

    for codec in NVDEC_PROBED_CODECS:
        path = tmp_path / f"probe_{codec}"
        path.write_bytes(probe_clip(codec, 48, 16))
        with av.open(str(path)) as container:
            frames = list(container.decode(video=0))
        assert len(frames) == 4 and (frames[0].width, frames[0].height) == (48, 16), codec


def test_doctor_names_nvdec_sizes_and_the_defaults() -> None:
    text = doctor_report(resolve_backend("cpu"))
    assert "vp9    128x128 to 8192x8192" in text and "h264   48x16 to 4096x4096" in text
    assert "Decoded-clip cache for the CNNs: on" in text and "Feature kernel batch: 8" in text
    probed = doctor_report(resolve_backend("cpu"), {"h264": "ok: 4 frames"})
    assert "h264   48x16 to 4096x4096  ok: 4 frames" in probed


@pytest.mark.gpu
@pytest.mark.nvdec
def test_gpu_backend_decodes_a_real_clip_on_nvdec() -> None:
    """The DALI GPU probe decodes a clip on NVDEC (a GPU op alone would pass without libnvcuvid)."""
    backend = resolve_backend("gpu")
    assert backend.decode.name == "dali-gpu", backend.dali_gpu.reason
    assert "NVDEC decoded an H.264 probe clip" in backend.dali_gpu.reason
    found = probe_nvdec_codecs(backend.cuda_device or 0)
    assert found["h264"].startswith("ok") and found["vp9"].startswith("ok"), found


def test_two_builds_of_one_library_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import core.backend as backend_module

    installed = {"nvidia-dali-cuda120": "2.4.0", "nvidia-dali-cuda130": "2.4.0", "xgboost-cpu": "3.2.0",
                 "cupy-cuda13x": "14.2.0", "nvidia-dali-tf-plugin-cuda130": "2.4.0"}  # fmt: skip
    monkeypatch.setattr(backend_module, "_installed_distributions", lambda: installed)
    (line,) = backend_module.duplicate_installs()
    assert line.startswith("nvidia-dali-cuda120 and nvidia-dali-cuda130 all provide `import nvidia.dali`: keep one")
    installed["xgboost"] = "3.2.0"
    assert any(line.startswith("xgboost and xgboost-cpu") for line in backend_module.duplicate_installs())
