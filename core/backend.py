"""The one place that decides what runs where.

Every stage asks the :class:`Backend` returned by :func:`resolve_backend`; no other module
probes hardware. "Importable" is not "usable": cuML imports on a CPU-only machine and only
fails when it fits, so each GPU library is probed with a tiny real operation.
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

DEVICE_ENV_VAR = "ACTIONBENCH_DEVICE"
DEVICE_CHOICES = ("auto", "cpu", "gpu")

# What NVDEC decodes, from the NVDEC programming guide of NVIDIA's Video Codec SDK (table "Hardware
# Video Decoder Capabilities", Turing/GA100/Hopper column): (min width, min height), (max width,
# max height). MJPEG is NVDEC's hybrid (CUDA + CPU) JPEG. AV1 is absent: Hopper and GA100 have no
# AV1 decoder. A file outside these sizes is routed to another decoder by the loader (counted).
NVDEC_LIMITS: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "h264": ((48, 16), (4096, 4096)),
    "hevc": ((144, 144), (8192, 8192)),
    "vp8": ((48, 16), (4096, 4096)),
    "vp9": ((128, 128), (8192, 8192)),
    "mpeg4": ((48, 16), (2032, 2032)),
    "mjpeg": ((64, 64), (32768, 16384)),
}
# Codecs the NVDEC probe of ``doctor`` encodes and decodes (the ones PyAV's wheels can encode).
NVDEC_PROBED_CODECS = ("h264", "mpeg4", "vp9", "mjpeg")
_PROBE_ENCODERS = {  # codec: (container, encoder, pixel format) of the probe clip
    "h264": ("mp4", "libx264", "yuv420p"),
    "mpeg4": ("avi", "mpeg4", "yuv420p"),
    "vp9": ("webm", "libvpx-vp9", "yuv420p"),
    "mjpeg": ("avi", "mjpeg", "yuvj420p"),
}
# Whether the CNNs use the decoded-clip cache unless told, by decode device. CPU: on. Measured
# (`bench loader --mode train`, 2-core CPU, README): a warm read costs a third of the CPU of decoding
# (4.3 vs 13.6 ms per 16x112 clip; the first, filling pass 25.5 ms), so it pays from the third epoch;
# with the size limit (``--cache-max-gb``) it holds what fits and the rest is decoded each time.
# GPU: off unless asked for (``deep --cache on``): the cache is filled by PyAV on the CPU and would
# keep the CNNs away from NVDEC. Which of the two trains faster on a GPU has not been measured yet
# (scripts/gpu_check.py measures both).
CLIP_CACHE_DEFAULT = {"cpu": True, "gpu": False}
# Videos per batch of the feature kernel. NumPy: 8 (measured, bench features). CuPy: 64, NOT
# measured yet; scripts/gpu_check.py times the CuPy kernel at several batch sizes.
FEATURE_BATCH_SIZE = {"numpy": 8, "cupy": 64}


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
    cuda_device: int | None = None  # the CUDA device this process uses (LOCAL_RANK's under torchrun)

    @property
    def on_gpu(self) -> bool:
        return self.deep.device == "gpu"

    @property
    def clip_cache_default(self) -> bool:
        """Whether the CNNs use the decoded-clip cache unless told (see :data:`CLIP_CACHE_DEFAULT`)."""
        return CLIP_CACHE_DEFAULT[self.decode.device]

    @property
    def feature_batch_size(self) -> int:
        """Videos per batch of the feature kernel on this backend (see :data:`FEATURE_BATCH_SIZE`)."""
        return FEATURE_BATCH_SIZE[self.features.name]

    def nvdec_accepts(self, codec: str, width: int, height: int) -> bool:
        """Whether this backend decodes a ``codec`` video of ``width`` x ``height`` with NVDEC."""
        return self.decode.name == "dali-gpu" and nvdec_accepts(codec, width, height)

    def xp(self) -> ModuleType:
        """Array module for the feature kernel: CuPy on a usable GPU, NumPy otherwise."""
        if self.features.name == "cupy":
            return importlib.import_module("cupy")
        return importlib.import_module("numpy")

    def torch_device(self) -> torch.device:
        import torch

        if self.deep.device != "gpu":
            return torch.device("cpu")
        return torch.device("cuda", self.cuda_device or 0)

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


def local_rank() -> int | None:
    """``LOCAL_RANK`` as torchrun sets it (None outside torchrun)."""
    value = os.environ.get("LOCAL_RANK", "").strip()
    return int(value) if value else None


def bind_local_cuda_device() -> int | None:
    """Make ``LOCAL_RANK``'s GPU this process's current CUDA device, before anything touches CUDA.

    Every CUDA user of the process then lands there: torch's ``"cuda"``, CuPy and cuML (the
    runtime's current device), DALI pipelines (built with that ``device_id``), NCCL. Without it,
    every torchrun rank would create its context and memory pools on GPU 0. Returns the device
    index, or None outside torchrun or without CUDA (``torch.cuda.is_available`` creates no context).
    """
    rank = local_rank()
    if rank is None:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    count = torch.cuda.device_count()
    if rank >= count:
        raise RuntimeError(
            f"LOCAL_RANK={rank} but only {count} CUDA device(s) are visible; "
            f"start at most {count} processes per node (torchrun --nproc_per_node {count})"
        )
    torch.cuda.set_device(rank)
    return rank


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
    return Probe(True, torch.version.cuda, "CUDA tensor op succeeded"), torch.cuda.get_device_name()


def nvdec_accepts(codec: str, width: int, height: int) -> bool:
    """Whether NVDEC decodes ``codec`` at ``width`` x ``height`` (:data:`NVDEC_LIMITS`)."""
    limits = NVDEC_LIMITS.get(codec)
    if limits is None:
        return False
    (min_w, min_h), (max_w, max_h) = limits
    return min_w <= width <= max_w and min_h <= height <= max_h


def probe_clip(codec: str, width: int, height: int, frames: int = 4) -> bytes:
    """A tiny encoded clip (a bar moving over grey, ``frames`` frames) made in memory with PyAV."""
    import io

    import av
    import numpy as np

    container_format, encoder, pix_fmt = _PROBE_ENCODERS[codec]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_format) as container:
        stream = container.add_stream(encoder, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        for index in range(frames):
            rgb = np.full((height, width, 3), 128, np.uint8)
            rgb[:, (index * 4) % width : (index * 4) % width + 4] = 230
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def decode_probe_clip(codec: str, width: int, height: int, device: str, device_id: int | None = None) -> str:
    """Decode a :func:`probe_clip` with DALI's ``fn.decoders.video`` on ``device`` ("mixed": NVDEC,
    or "cpu"); return what came out ("4 frames of 64x64, mean grey 134") or raise on failure."""
    import numpy as np
    from nvidia.dali import fn, pipeline_def, types

    encoded = np.frombuffer(probe_clip(codec, width, height), np.uint8)

    @pipeline_def(batch_size=1, num_threads=1, device_id=device_id, prefetch_queue_depth=1)
    def decode():  # type: ignore[no-untyped-def]
        data = fn.external_source(name="encoded", dtype=types.UINT8)
        return fn.decoders.video(data, device=device)

    pipe = decode()
    pipe.build()
    pipe.feed_input("encoded", [encoded])
    (output,) = pipe.run()
    batch = output.as_cpu() if device == "mixed" else output
    decoded = np.asarray(batch.as_tensor())[0]
    if decoded.shape[1:] != (height, width, 3) or len(decoded) == 0:
        raise RuntimeError(f"{codec} probe: decoded shape {decoded.shape}, expected (F, {height}, {width}, 3)")
    mean = float(decoded.mean())
    if not 100 <= mean <= 180:  # grey 128 with a brighter bar: anything else is garbage
        raise RuntimeError(f"{codec} probe: decoded mean grey {mean:.0f}, expected about 136")
    return f"{len(decoded)} frames of {width}x{height}, mean grey {mean:.0f}"


def _probe_dali_gpu(cuda: Probe, device_id: int) -> Probe:
    """DALI's GPU decoder on a real clip: the smallest H.264 clip NVDEC takes, decoded on
    ``device="mixed"``. A GPU op alone would pass in a container without ``libnvcuvid``."""
    version = _version("nvidia.dali")
    if version is None:
        return Probe(False, None, "nvidia-dali not installed")
    if not cuda.usable:
        return Probe(False, version, "no usable CUDA GPU")
    (width, height), _ = NVDEC_LIMITS["h264"]
    try:
        decoded = decode_probe_clip("h264", width, height, "mixed", device_id)
    except Exception as exc:
        reason = " ".join(str(exc).split())[:300]
        return Probe(False, version, f"NVDEC could not decode an H.264 probe clip: {reason}")
    return Probe(True, version, f"NVDEC decoded an H.264 probe clip ({decoded})")


def probe_nvdec_codecs(device_id: int) -> dict[str, str]:
    """For ``doctor``: each codec of :data:`NVDEC_PROBED_CODECS` decoded on NVDEC at its minimum
    size (even sides); codec -> "ok: ..." or "failed: reason"."""
    found = {}
    for codec in NVDEC_PROBED_CODECS:
        (width, height), _ = NVDEC_LIMITS[codec]
        width, height = width + width % 2, height + height % 2
        try:
            found[codec] = "ok: " + decode_probe_clip(codec, width, height, "mixed", device_id)
        except Exception as exc:
            found[codec] = "failed: " + " ".join(str(exc).split())[:200]
    return found


def _probe_cupy(cuda: Probe, device_id: int) -> Probe:
    version = _version("cupy")
    if version is None:
        return Probe(False, None, "cupy not installed")
    if not cuda.usable:
        return Probe(False, version, "no usable CUDA GPU")
    try:
        import cupy

        cupy.cuda.Device(device_id).use()  # the process's GPU (LOCAL_RANK's under torchrun), as torch's
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


def _probe_xgboost_cuda(cuda: Probe, device_id: int) -> Probe:
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
        xgboost.XGBClassifier(n_estimators=2, tree_method="hist", device=f"cuda:{device_id}").fit(x, y)
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
    device_id = None
    if requested == "cpu":
        off = Probe(False, None, "CPU forced by --device cpu")
        cuda, gpu_name = off, None
        dali_gpu = cupy = cuml = xgb_cuda = off
    else:
        device_id = bind_local_cuda_device()  # first: every probe below then runs on this GPU
        cuda, gpu_name = _probe_cuda()
        if cuda.usable and device_id is None:
            import torch

            device_id = torch.cuda.current_device()
        dali_gpu = _probe_dali_gpu(cuda, device_id or 0)
        cupy = _probe_cupy(cuda, device_id or 0)
        cuml = _probe_cuml(cuda)
        xgb_cuda = _probe_xgboost_cuda(cuda, device_id or 0)
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
            xgb_cuda,
            "xgboost-cuda",
            "xgboost-cpu",
            "XGBoost hist on the CPU (the GPU runs the same algorithm; its trees differ)",
        ),
        deep=choose(cuda, "torch-cuda", "torch-cpu", "PyTorch on the CPU"),
        cuda_device=device_id if cuda.usable else None,
    )


def _installed_distributions() -> dict[str, str]:
    """Installed distribution name (lower case) -> version, from package metadata (no imports)."""
    from importlib.metadata import distributions

    return {str(dist.metadata["Name"]).lower(): dist.version for dist in distributions()}


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries that matter for results (None when not installed).

    Read from package metadata, not by importing, so it costs milliseconds, not seconds.
    """
    import platform

    installed = _installed_distributions()

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


def duplicate_installs() -> list[str]:
    """Lines naming builds of one library installed side by side (two DALI, CuPy or XGBoost wheels
    share one import name and overwrite each other's files)."""
    installed = _installed_distributions()
    patterns = {
        "nvidia.dali": r"nvidia-dali-(nightly-|weekly-)?cuda\d+",
        "cupy": r"cupy-cuda\w+",
        "xgboost": r"xgboost(-cpu|-cu\d+)?",
    }
    lines = []
    for module, pattern in patterns.items():
        names = sorted(name for name in installed if re.fullmatch(pattern, name))
        if len(names) > 1:
            lines.append(f"{' and '.join(names)} all provide `import {module}`: keep one (pip uninstall the others)")
    return lines


def doctor_report(backend: Backend, nvdec_codecs: dict[str, str] | None = None) -> str:
    """What ``doctor`` prints: library versions, GPU usability, each stage's choice with its reason,
    and which codecs and frame sizes decode on NVDEC (``nvdec_codecs``: :func:`probe_nvdec_codecs`)."""
    lines = ["Libraries:"]
    lines += [f"  {name:<13} {version or 'not installed'}" for name, version in library_versions().items()]
    lines += [f"  WARNING: {line}" for line in duplicate_installs()]
    usable = f"yes, {backend.gpu_name}" if backend.cuda.usable else "no"
    lines += ["", f"Requested device: {backend.requested}", f"CUDA GPU usable:  {usable} ({backend.cuda.reason})"]
    if backend.cuda_device is not None:
        lines.append(f"CUDA device:      {backend.cuda_device} (LOCAL_RANK under torchrun, else the current device)")
    lines += ["", "Stages:"]
    for name, choice in backend.stages().items():
        lines.append(f"  {name:<10} {choice.name:<13} [{choice.device}] {choice.reason}")
    on_nvdec = backend.decode.name == "dali-gpu"
    lines += ["", "GPU decoding (NVDEC through DALI, frame sizes it takes):" if on_nvdec else
              "GPU decoding: not used here; NVDEC would take these frame sizes:"]  # fmt: skip
    for codec, ((min_w, min_h), (max_w, max_h)) in NVDEC_LIMITS.items():
        probed = (nvdec_codecs or {}).get(codec, "not probed" if on_nvdec else "")
        lines.append(f"  {codec:<6} {min_w}x{min_h} to {max_w}x{max_h}  {probed}".rstrip())
    lines.append(
        "  Other codecs and sizes: DALI's CPU decoder (VP8/VP9/MJPEG) or PyAV; the routes taken are counted in "
        "results/<model>.json (config.decode.routes) and printed by `features`."
    )
    cache = "on" if backend.clip_cache_default else "off (NVDEC decodes every epoch; --cache on to use it)"
    lines += [f"Decoded-clip cache for the CNNs: {cache}", f"Feature kernel batch: {backend.feature_batch_size}"]
    return "\n".join(lines)
