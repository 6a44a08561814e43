"""The one place that decides what runs where.

Every stage asks the :class:`Backend` returned by :func:`resolve_backend`; no other module
probes hardware. "Importable" is not "usable": cuML imports on a CPU-only machine and only
fails when it fits, so each GPU library is probed with a tiny real operation.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

DEVICE_ENV_VAR = "ACTIONBENCH_DEVICE"
DEVICE_CHOICES = ("auto", "cpu", "gpu")


@dataclass(frozen=True)
class StageChoice:
    """Which implementation a stage uses, on which device, and why."""

    name: str
    device: str
    reason: str


@dataclass(frozen=True)
class Probe:
    """Result of probing one capability: usable or not, with a version and a reason."""

    usable: bool
    version: str | None
    reason: str


@dataclass(frozen=True)
class Backend:
    requested: str
    cuda: Probe
    gpu_name: str | None
    dali_gpu: Probe
    cupy: Probe
    cuml: Probe
    xgboost_cuda: Probe
    decode: StageChoice
    features: StageChoice
    classical: StageChoice
    boosting: StageChoice
    deep: StageChoice

    @property
    def on_gpu(self) -> bool:
        return self.deep.device == "gpu"

    def xp(self) -> ModuleType:
        """Array module for the feature kernel: CuPy on a usable GPU, NumPy otherwise."""
        if self.features.name == "cupy":
            return importlib.import_module("cupy")
        return importlib.import_module("numpy")

    def torch_device(self) -> torch.device:
        import torch

        return torch.device("cuda" if self.deep.device == "gpu" else "cpu")

    def device_description(self) -> str:
        return f"cuda ({self.gpu_name})" if self.on_gpu and self.gpu_name else "cpu"

    def stages(self) -> dict[str, StageChoice]:
        return {
            "decode": self.decode,
            "features": self.features,
            "classical": self.classical,
            "boosting": self.boosting,
            "deep": self.deep,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _version(module_name: str) -> str | None:
    try:
        module = importlib.import_module(module_name)
    except Exception:
        return None
    return str(getattr(module, "__version__", "unknown"))


def _probe_cuda() -> tuple[Probe, str | None]:
    try:
        import torch
    except Exception as exc:  # torch is a hard dependency, but doctor must still print
        return Probe(False, None, f"torch not importable: {exc}"), None
    if not torch.cuda.is_available():
        return Probe(False, torch.version.cuda, "torch.cuda.is_available() is False"), None
    try:
        torch.zeros(1, device="cuda").add_(1)
    except Exception as exc:
        return Probe(False, torch.version.cuda, f"CUDA tensor op failed: {exc}"), None
    return Probe(True, torch.version.cuda, "CUDA tensor op succeeded"), torch.cuda.get_device_name(0)


def _probe_dali_gpu(cuda: Probe) -> Probe:
    version = _version("nvidia.dali")
    if version is None:
        return Probe(False, None, "nvidia-dali not installed")
    if not cuda.usable:
        return Probe(False, version, "no usable CUDA GPU")
    try:
        from nvidia.dali import fn, pipeline_def

        @pipeline_def(batch_size=1, num_threads=1, device_id=0)
        def probe_pipeline():  # type: ignore[no-untyped-def]
            return fn.random.uniform(range=[0.0, 1.0], shape=[2]).gpu()

        pipe = probe_pipeline()
        pipe.build()
        pipe.run()
    except Exception as exc:
        return Probe(False, version, f"DALI GPU pipeline failed: {exc}")
    return Probe(True, version, "DALI GPU pipeline ran")


def _probe_cupy(cuda: Probe) -> Probe:
    version = _version("cupy")
    if version is None:
        return Probe(False, None, "cupy not installed")
    if not cuda.usable:
        return Probe(False, version, "no usable CUDA GPU")
    try:
        import cupy

        float((cupy.arange(4, dtype=cupy.float32) ** 2).sum())
    except Exception as exc:
        return Probe(False, version, f"CuPy kernel failed: {exc}")
    return Probe(True, version, "CuPy kernel ran")


def _probe_cuml(cuda: Probe) -> Probe:
    version = _version("cuml")
    if version is None:
        return Probe(False, None, "cuml not installed")
    if not cuda.usable:
        return Probe(False, version, "cuml imports but needs a usable CUDA GPU to fit")
    try:
        import numpy as np
        from cuml.linear_model import LogisticRegression

        x = np.array([[0.0], [1.0], [2.0], [3.0]], dtype=np.float32)
        y = np.array([0, 0, 1, 1], dtype=np.int32)
        LogisticRegression().fit(x, y)
    except Exception as exc:
        return Probe(False, version, f"cuML fit failed: {exc}")
    return Probe(True, version, "cuML LogisticRegression fit succeeded")


def _probe_xgboost_cuda(cuda: Probe) -> Probe:
    version = _version("xgboost")
    if version is None:
        return Probe(False, None, "xgboost not installed")
    if not cuda.usable:
        return Probe(False, version, "no usable CUDA GPU")
    try:
        import numpy as np
        import xgboost

        x = np.array([[0.0], [1.0], [2.0], [3.0]], dtype=np.float32)
        y = np.array([0, 0, 1, 1])
        xgboost.XGBClassifier(n_estimators=2, tree_method="hist", device="cuda").fit(x, y)
    except Exception as exc:
        return Probe(False, version, f"XGBoost CUDA fit failed: {exc}")
    return Probe(True, version, "XGBoost CUDA fit succeeded")


def requested_device(device: str | None = None) -> str:
    """The device the user asked for: the argument, else the environment variable, else auto."""
    value = (device or os.environ.get(DEVICE_ENV_VAR) or "auto").strip().lower()
    if value not in DEVICE_CHOICES:
        raise ValueError(
            f"unknown device {value!r} (from --device or ${DEVICE_ENV_VAR}); use one of {', '.join(DEVICE_CHOICES)}"
        )
    return value


def resolve_backend(device: str | None = None) -> Backend:
    """Probe once and decide the implementation of every stage.

    ``device``: ``"auto"`` (GPU where usable), ``"cpu"`` (never touch the GPU) or ``"gpu"``
    (fail clearly if no usable GPU). ``None`` reads ``$ACTIONBENCH_DEVICE``, default ``auto``.
    """
    requested = requested_device(device)
    if requested == "cpu":
        off = Probe(False, None, "CPU forced by --device cpu")
        cuda, gpu_name = off, None
        dali_gpu = cupy = cuml = xgb_cuda = off
    else:
        cuda, gpu_name = _probe_cuda()
        dali_gpu = _probe_dali_gpu(cuda)
        cupy = _probe_cupy(cuda)
        cuml = _probe_cuml(cuda)
        xgb_cuda = _probe_xgboost_cuda(cuda)
        if requested == "gpu" and not cuda.usable:
            raise RuntimeError(f"--device gpu requested but no usable CUDA GPU: {cuda.reason}")

    def choose(probe: Probe, gpu_name_: str, cpu_name: str, cpu_reason: str) -> StageChoice:
        if probe.usable:
            return StageChoice(gpu_name_, "gpu", probe.reason)
        return StageChoice(cpu_name, "cpu", f"{cpu_reason} ({probe.reason})")

    return Backend(
        requested=requested,
        cuda=cuda,
        gpu_name=gpu_name,
        dali_gpu=dali_gpu,
        cupy=cupy,
        cuml=cuml,
        xgboost_cuda=xgb_cuda,
        decode=choose(dali_gpu, "dali-gpu", "dali-cpu", "DALI CPU reader for VP8/VP9/MJPEG, PyAV for other codecs"),
        features=choose(cupy, "cupy", "numpy", "NumPy kernel"),
        classical=choose(cuml, "cuml", "sklearn", "scikit-learn"),
        boosting=choose(
            xgb_cuda, "xgboost-cuda", "xgboost-cpu", "XGBoost hist on the CPU, the same model as on the GPU"
        ),
        deep=choose(cuda, "torch-cuda", "torch-cpu", "PyTorch on the CPU"),
    )


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries that matter for results (None when not installed).

    Read from package metadata, not by importing, so it costs milliseconds, not seconds.
    """
    import platform
    from importlib.metadata import distributions

    installed = {str(dist.metadata["Name"]).lower(): dist.version for dist in distributions()}

    def find(*prefixes: str) -> str | None:
        for prefix in prefixes:
            for name in sorted(installed):
                if name == prefix or name.startswith(prefix + "-"):
                    return installed[name]
        return None

    return {
        "python": platform.python_version(),
        "torch": find("torch"),
        "torchvision": find("torchvision"),
        "nvidia-dali": find("nvidia-dali"),
        "av": find("av"),
        "numpy": find("numpy"),
        "scikit-learn": find("scikit-learn"),
        "xgboost": find("xgboost"),
        "cupy": find("cupy"),
        "cuml": find("cuml"),
    }


def doctor_report(backend: Backend) -> str:
    """What ``doctor`` prints: library versions, GPU usability and each stage's choice with its reason."""
    lines = ["Libraries:"]
    lines += [f"  {name:<13} {version or 'not installed'}" for name, version in library_versions().items()]
    usable = f"yes, {backend.gpu_name}" if backend.cuda.usable else "no"
    lines += ["", f"Requested device: {backend.requested}", f"CUDA GPU usable:  {usable} ({backend.cuda.reason})"]
    lines += ["", "Stages:"]
    for name, choice in backend.stages().items():
        lines.append(f"  {name:<10} {choice.name:<13} [{choice.device}] {choice.reason}")
    return "\n".join(lines)
