#!/usr/bin/env python
"""The one-shot GPU check: every GPU path of actionbench exercised once, one JSON, one line per check.

    python scripts/gpu_check.py --out runs/gpu-check/gpu_check.json      # on a CUDA GPU (make gpu-check)
    python scripts/gpu_check.py --smoke --out /tmp/check.json            # CPU smoke run (CI)

Made for a machine with PyTorch (and CuPy) but perhaps no DALI, cuML, XGBoost or package index:
each check imports what it needs and a missing library makes it SKIP with the reason, never FAIL.
At most about 8 minutes on an H100/H200 (checks that would start after ``--budget`` seconds are
skipped). Checks:

* ``doctor``: the backend of every stage, library versions, duplicate installs, NVDEC per codec;
* ``pytest_gpu``: ``pytest -m gpu`` (test files whose imports are missing count as not collected);
* ``cnn_train_step``: ``train_model`` steps of ResNet-18 (TSN) and R3D-18 with the gpu profile's
  clips, bf16 autocast + channels_last: finite loss, peak memory, FLOPs per clip, clips/s (second epoch);
* ``ddp_step``: a single-rank NCCL process group (``device_id``) with a DDP backward, all_reduce,
  all_gather_object and barrier;
* ``r3d18_throughput``: scripts/gpu_check_deep.py's targets (bf16 + channels_last_3d >= 2x fp32
  and >= 1000 clips/s at 16x112);
* ``feature_kernel``: the CuPy kernel equals NumPy's on demo scenes (on noise the difference is
  reported, not judged), naming the columns furthest apart; its ms/video at several batch sizes;
* ``nvdec_decode``: H.264, MPEG-4 AVI, VP9 and MJPEG through the loader at 320x240 and 160x120,
  with the decode route that ran (NVDEC where its frame sizes allow);
* ``augmentation_gpu_vs_cpu``: the same training clips on the GPU and CPU pipelines, in grey levels;
* ``classical_gpu``: fit + predict_proba of the five classical models on cuML / XGBoost-CUDA;
* ``cache_vs_nvdec``: R3D-18 training clips/s with the decoded-clip cache vs NVDEC every epoch.

``--smoke`` runs the same code on the CPU at toy sizes (targets not judged), so CI keeps it working.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "scripts"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

NVDEC_CODECS = ("h264", "mpeg4", "vp9", "mjpeg")
KERNEL_BATCHES = (8, 16, 32, 64, 128, 256)
SAME_PIXELS_GREY_LEVELS = 3.0  # mean |GPU - CPU| allowed for the same training clips
# Largest CuPy-vs-NumPy feature difference allowed on demo scenes: a share of the column's range, or
# an absolute floor of about two pixels of a colour histogram (1/8192 each at the default spec), since
# a pixel on a histogram bin edge may land in the neighbouring bin (see kernel.FeatureSpec).
KERNEL_SHARE_OF_RANGE = 1e-3
KERNEL_ABSOLUTE = 2.5e-4


class Skip(Exception):
    """A check that cannot run on this machine, with the reason."""


@dataclass
class Settings:
    smoke: bool
    workdir: Path
    deadline: float

    @property
    def device(self) -> str:
        return "cpu" if self.smoke else "cuda"

    @property
    def backend_device(self) -> str:
        return "cpu" if self.smoke else "gpu"


def need(*modules: str) -> None:
    """Skip unless every module can be imported (found without importing it)."""
    missing = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a missing parent package of a dotted name
            found = False
        if not found:
            missing.append(module)
    if missing:
        raise Skip(f"{', '.join(missing)} not installed")


def need_gpu(settings: Settings) -> None:
    import torch

    if not settings.smoke and not torch.cuda.is_available():
        raise RuntimeError("no usable CUDA GPU (torch.cuda.is_available() is False); use --smoke on a CPU")


def backend_for(settings: Settings) -> Any:
    from core.backend import resolve_backend

    return resolve_backend(settings.backend_device)


# ----------------------------------------------------------------------------------------- checks
def check_doctor(settings: Settings) -> dict[str, Any]:
    from core.backend import doctor_report, duplicate_installs, library_versions, probe_nvdec_codecs

    backend = backend_for(settings)
    nvdec = probe_nvdec_codecs(backend.cuda_device or 0) if backend.decode.name == "dali-gpu" else {}
    stages = {name: f"{choice.name} [{choice.device}]" for name, choice in backend.stages().items()}
    duplicates = duplicate_installs()
    result = {
        "summary": ", ".join(f"{name} {choice.name}" for name, choice in backend.stages().items()),
        "stages": stages,
        "reasons": {name: choice.reason for name, choice in backend.stages().items()},
        "versions": library_versions(),
        "gpu": backend.gpu_name,
        "nvdec_codecs": nvdec,
        "duplicate_installs": duplicates,
        "report": doctor_report(backend, nvdec),
    }
    if duplicates:
        result.update(status="fail", summary="; ".join(duplicates))
    return result


def check_pytest_gpu(settings: Settings, paths: list[str]) -> dict[str, Any]:
    need("pytest")
    report = settings.workdir / "pytest_gpu.xml"
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider",
               "--continue-on-collection-errors", f"--junitxml={report}", *paths]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=420)
    counts = {"passed": 0, "failed": 0, "skipped": 0, "not_collected": 0}
    failed, not_collected = [], []
    for case in ElementTree.parse(report).getroot().iter("testcase") if report.exists() else []:
        name = f"{case.get('classname')}::{case.get('name')}"
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        if problem is not None and (problem.get("message") or "").startswith("collection failure"):
            counts["not_collected"] += 1  # a test file whose imports are missing here (e.g. DALI)
            not_collected.append(f"{case.get('name')}: {_last_line(problem.text)}")
        elif problem is not None:
            counts["failed"] += 1
            failed.append(f"{name}: {_last_line(problem.text)}")
        elif case.find("skipped") is not None:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    summary = ", ".join(f"{count} {name.replace('_', ' ')}" for name, count in counts.items())
    result = {"summary": summary, **counts, "failures": failed, "not_collected_files": not_collected,
              "exit_code": done.returncode, "output_tail": done.stdout[-3000:]}  # fmt: skip
    if failed or (done.returncode not in (0, 5) and not not_collected):
        result["status"] = "fail"
    return result


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


@dataclass
class _Batch:
    """What train_model reads from a loader batch (pipelines.video.loader.ClipBatch's fields)."""

    clips: Any
    labels: Any
    video_ids: list[str]
    clip_index: Any


class _OneClipPerVideo:
    clips_per_video = 1


class _SyntheticLoader:
    """A clip loader of random clips already on the device: the training step alone."""

    def __init__(self, shape: tuple[int, ...], batches: int, device: Any, classes: int) -> None:
        import numpy as np
        import torch

        self.clips = torch.randn(shape, device=device)
        self.labels = np.arange(shape[0]) % classes
        self.batches = batches
        # What the training loop reads of a ClipLoader to count its batches: one clip per video.
        self.batch_size = shape[0]
        self.n_videos = batches * shape[0]
        self.spec = _OneClipPerVideo()

    def __len__(self) -> int:
        return self.batches

    def set_epoch(self, epoch: int) -> None:
        pass

    def __iter__(self):  # type: ignore[no-untyped-def]
        import numpy as np

        for number in range(self.batches):
            ids = [f"v{number}_{i}" for i in range(len(self.labels))]
            yield _Batch(self.clips, self.labels, ids, np.zeros(len(self.labels), np.int64))


def check_cnn_train_step(settings: Settings) -> dict[str, Any]:
    need("torch", "torchvision", "sklearn", "tqdm")
    need_gpu(settings)
    import torch

    from models.deep.build import build_model, flops_per_clip
    from models.deep.runtime import amp_dtype, prepare_model, use_channels_last
    from models.deep.training import train_model
    from workflow.profiles import PROFILES

    device = torch.device(settings.device)
    results = {}
    for model_name in ("cnn2d", "cnn3d"):
        # Two epochs: the second one's clips/s is the steady state (the first autotunes cuDNN).
        overrides: dict[str, Any] = dict(weights="none", epochs=2, warmup_epochs=0.0, amp=True, channels_last=True)
        if settings.smoke:
            overrides.update(frames=4, size=32, batch_size=2)
        config = PROFILES["gpu"].deep_config(model_name, **overrides)
        model = prepare_model(build_model(config, 5), config, device)
        b, t, s = config.batch_size, config.frames, config.size
        shape = (b, 3, t, s, s) if model_name == "cnn3d" else (b, t, 3, s, s)
        loader = _SyntheticLoader(shape, 2 if settings.smoke else 8, device, 5)
        outcome = train_model(model, loader, None, config, device, list("abcde"), progress=False)
        loss = outcome.state.history[-1]["loss"]
        conv = next(p for p in model.parameters() if p.dim() >= 4)
        layout = torch.channels_last_3d if model_name == "cnn3d" else torch.channels_last
        dtype = amp_dtype(config, device)
        results[model_name] = {
            "clip": [t, s, s], "batch": b, "loss": loss, "amp_dtype": str(dtype).replace("torch.", ""),
            "channels_last": use_channels_last(config, device) and conv.is_contiguous(memory_format=layout),
            "clips_per_second": outcome.state.history[-1]["clips_per_second"],
            "peak_memory_bytes": outcome.peak_memory_bytes, "memory_kind": outcome.memory_kind,
            "max_memory_allocated_bytes": outcome.torch_peak_bytes,
            "gflops_per_clip": flops_per_clip(model, config, device) / 1e9,
        }  # fmt: skip
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    problems = [f"{name}: loss {r['loss']}" for name, r in results.items() if not math.isfinite(r["loss"])]
    problems += [f"{name}: {r['amp_dtype']}" for name, r in results.items() if r["amp_dtype"] != "bfloat16"]
    problems += [f"{name}: not channels_last" for name, r in results.items() if not r["channels_last"]]
    summary = "; ".join(
        f"{name} loss {r['loss']:.3f}, {r['clips_per_second']:.1f} clips/s, {r['gflops_per_clip']:.1f} GFLOP/clip, "
        f"peak {(r['peak_memory_bytes'] or 0) / 2**30:.2f} GiB"
        for name, r in results.items()
    )
    return {"summary": "; ".join(problems) or summary, "models": results, **({"status": "fail"} if problems else {})}


def check_ddp_step(settings: Settings) -> dict[str, Any]:
    need("torch", "torchvision")
    need_gpu(settings)
    import torch
    import torch.distributed as dist

    from models.deep.build import build_model
    from models.deep.config import DeepConfig

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    on_cuda = settings.device == "cuda"
    device = torch.device("cuda", torch.cuda.current_device()) if on_cuda else torch.device("cpu")
    options = {"device_id": device} if on_cuda else {}
    dist.init_process_group("nccl" if on_cuda else "gloo", rank=0, world_size=1, **options)
    try:
        values, gathered = torch.ones(4, device=device), [None]
        dist.all_reduce(values)
        dist.all_gather_object(gathered, {"rank": 0})
        dist.barrier()
        model = build_model(DeepConfig(model="cnn2d", weights="none"), 5).to(device)
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if on_cuda else None)
        size = 32 if settings.smoke else 112
        with torch.autocast(device.type, dtype=torch.bfloat16):
            ddp(torch.randn(2, 4, 3, size, size, device=device)).float().sum().backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        finite = all(bool(torch.isfinite(g).all()) for g in grads)
    finally:
        dist.destroy_process_group()
    backend = "nccl" if on_cuda else "gloo"
    summary = f"{backend}: all_reduce {values.tolist()}, all_gather_object, barrier, DDP backward ({len(grads)} grads)"
    return {"summary": summary, "backend": backend, **({} if finite else {"status": "fail"})}


def check_r3d18_throughput(settings: Settings) -> dict[str, Any]:
    need("torch", "torchvision")
    need_gpu(settings)
    import gpu_check_deep

    argv = ["--device", settings.device, "--steps", "10", "--warmup", "3"]
    if settings.smoke:
        argv = ["--device", "cpu", "--steps", "1", "--warmup", "1", "--batch", "2", "--frames", "4", "--size", "16"]
    out = settings.workdir / "r3d18_amp.json"
    with contextlib.redirect_stdout(open(os.devnull, "w")):  # it prints its JSON; ours holds it
        gpu_check_deep.main([*argv, "--out", str(out)])
    report = json.loads(out.read_text())
    amp = report["results"]["amp_bf16_channels_last_3d"]
    summary = (f"amp {amp['clips_per_second']:.1f} clips/s, {report.get('speedup_vs_fp32', 0):.2f}x fp32, "
               f"{report.get('speedup_vs_fp32_tf32', 0):.2f}x fp32+tf32")  # fmt: skip
    met = all(report.get("targets", {}).values())
    status = "pass" if settings.smoke or met else "fail"
    return {"summary": summary + ("" if settings.smoke else f"; targets {'met' if met else 'MISSED'}"),
            "status": status, "report": report}  # fmt: skip


def _demo_clips(spec: Any, count: int) -> Any:
    """``count`` feature clips (T, size, size, 3) of the demo's rendered scenes: actors, texture and
    camera shake, as the kernel sees real videos (every 2nd frame, as at 25 fps)."""
    import numpy as np

    from pipelines.demo import DEFAULT_CLASSES, DemoConfig, render_clip

    config = DemoConfig(size=(spec.size, spec.size), seconds=(2.6, 2.6))
    clips = [render_clip(DEFAULT_CLASSES[i % len(DEFAULT_CLASSES)], i // len(DEFAULT_CLASSES), 0, config)
             for i in range(count)]  # fmt: skip
    return np.stack([clip[: 2 * spec.frames : 2] for clip in clips])


def _compare_kernels(clips: Any, spec: Any) -> dict[str, Any]:
    """The CuPy kernel against NumPy's on the same clips: the largest difference of each column
    as a share of that column's range over the clips, and the five columns furthest apart."""
    import cupy
    import numpy as np

    from pipelines.features.kernel import compute_features, feature_names

    rates = np.full(len(clips), 12.5, np.float32)
    on_cpu = compute_features(clips, np, spec, sample_rate=rates)
    on_gpu = cupy.asnumpy(compute_features(cupy.asarray(clips), cupy, spec, sample_rate=cupy.asarray(rates)))
    difference = np.abs(on_gpu.astype(np.float64) - on_cpu)
    span = np.maximum(on_cpu.max(axis=0) - on_cpu.min(axis=0), 1e-3)  # nearly constant columns: absolute
    share = difference.max(axis=0) / span
    names = feature_names(spec)
    worst = []
    for column in np.argsort(share)[::-1][:5]:
        clip = int(difference[:, column].argmax())
        worst.append({"column": names[column], "share_of_range": float(share[column]), "clip": clip,
                      "numpy": float(on_cpu[clip, column]), "cupy": float(on_gpu[clip, column])})  # fmt: skip
    beyond_rounding = ~np.isclose(on_gpu, on_cpu, rtol=1e-4, atol=1e-6)
    allowed = np.maximum(KERNEL_SHARE_OF_RANGE * span, KERNEL_ABSOLUTE)
    return {"clips": len(clips), "max_share_of_range": float(share.max()), "worst_columns": worst,
            "columns_beyond_float32_rounding": int(beyond_rounding.any(axis=0).sum()),
            "columns_beyond_allowed": [names[c] for c in np.flatnonzero(difference.max(axis=0) > allowed)]}  # fmt: skip


def check_feature_kernel(settings: Settings) -> dict[str, Any]:
    need("cupy")
    if settings.smoke:
        raise Skip("the CuPy kernel needs a CUDA GPU")
    need_gpu(settings)
    import cupy
    import numpy as np

    from pipelines.features.kernel import FeatureSpec, compute_features

    spec = FeatureSpec()
    rng = np.random.default_rng(0)
    # Judged on scenes like real videos. Noise is reported only: on it many gradients sit on a
    # histogram bin edge and many spectra have near-equal peaks, so float32 rounding (cuBLAS and
    # NumPy sum in different orders) moves whole bins and peak frequencies.
    scenes = _compare_kernels(_demo_clips(spec, 24), spec)
    noise = _compare_kernels(rng.integers(0, 256, size=(16, spec.frames, spec.size, spec.size, 3), dtype=np.uint8),
                             spec)  # fmt: skip
    equal = not scenes["columns_beyond_allowed"]
    clips = rng.integers(0, 256, size=(max(KERNEL_BATCHES), spec.frames, spec.size, spec.size, 3), dtype=np.uint8)
    rates = np.full(len(clips), 12.5, np.float32)
    timings = {}
    for batch in KERNEL_BATCHES:
        device_clips, device_rates = cupy.asarray(clips[:batch]), cupy.asarray(rates[:batch])
        compute_features(device_clips, cupy, spec, sample_rate=device_rates)  # warm-up
        cupy.cuda.Device().synchronize()
        start = time.perf_counter()
        for _ in range(3):
            compute_features(device_clips, cupy, spec, sample_rate=device_rates)
        cupy.cuda.Device().synchronize()
        timings[batch] = 1000 * (time.perf_counter() - start) / (3 * batch)
    start = time.perf_counter()
    compute_features(clips[:8], np, spec, sample_rate=rates[:8])
    numpy_ms = 1000 * (time.perf_counter() - start) / 8
    best = min(timings, key=timings.get)
    worst = scenes["worst_columns"][0]
    summary = (f"CuPy {'equals' if equal else 'DIFFERS FROM'} NumPy on {scenes['clips']} demo scenes (largest "
               f"difference {scenes['max_share_of_range']:.1e} of a column's range, {worst['column']}; on noise "
               f"{noise['max_share_of_range']:.1e}, {noise['worst_columns'][0]['column']}); ms/video by batch "
               + ", ".join(f"{b}: {ms:.3f}" for b, ms in timings.items())
               + f" (NumPy {numpy_ms:.2f}); fastest batch {best}")  # fmt: skip
    return {"summary": summary, "equal": equal, "demo_scenes": scenes, "noise": noise,
            "cupy_ms_per_video": timings, "numpy_ms_per_video": numpy_ms, "fastest_batch": best,
            **({} if equal else {"status": "fail"})}  # fmt: skip


def _video(settings: Settings, codec: str, width: int, height: int, name: str, frames: int = 40) -> Any:
    """A real video of a moving bar written with the project's writer, and its index record."""
    import numpy as np

    from pipelines.data.records import VideoRecord
    from pipelines.video.codecs import codec_extension, write_video

    yy, xx = np.mgrid[0:height, 0:width]
    video = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        video[t, ..., 0] = (xx * 0.7 + 9 * t) % 255
        video[t, ..., 1] = (yy * 0.9) % 255
        video[t, ..., 2] = (xx + yy + 5 * t) % 255
    path = settings.workdir / f"{name}{codec_extension(codec)}"
    write_video(path, video, 25, codec)
    return VideoRecord(f"c/{name}", str(path), "c", 0, name, "test", codec, frames, 25.0, width, height)


def check_nvdec_decode(settings: Settings) -> dict[str, Any]:
    need("nvidia.dali", "av", "cv2")
    need_gpu(settings)
    from pipelines.video.clips import ClipSpec
    from pipelines.video.loader import DALI_CPU_CODECS, make_clip_loader

    backend = backend_for(settings)
    frames, size = (4, 32) if settings.smoke else (16, 112)
    spec = ClipSpec(frames=frames, size=size, stride=2, mode="eval", layout="BCTHW", mean=(0.43, 0.39, 0.38),
                    std=(0.23, 0.22, 0.22))  # fmt: skip
    cases, wrong = {}, []
    for codec in NVDEC_CODECS:
        for width, height in ((320, 240), (160, 120)):
            record = _video(settings, codec, width, height, f"nvdec_{codec}_{width}")
            loader = make_clip_loader([record], spec, backend, batch_size=1)
            batches = list(loader)
            expected = ("nvdec" if backend.nvdec_accepts(codec, width, height)
                        else "dali-cpu" if codec in DALI_CPU_CODECS else "pyav")  # fmt: skip
            routes = loader.decode_stats.to_dict()
            ok = len(batches) == 1 and routes["routes"] == {expected: 1}
            if batches and backend.decode.device == "gpu":
                ok = ok and batches[0].clips.is_cuda
            cases[f"{codec} {width}x{height}"] = {"expected_route": expected, **routes, "ok": ok}
            if not ok:
                wrong.append(f"{codec} {width}x{height}: {routes} (expected {expected})")
    summary = "; ".join(wrong) or ", ".join(f"{case} {c['expected_route']}" for case, c in cases.items())
    return {"summary": summary, "decode_backend": backend.decode.name, "cases": cases,
            **({"status": "fail"} if wrong else {})}  # fmt: skip


def check_augmentation_gpu_vs_cpu(settings: Settings) -> dict[str, Any]:
    need("nvidia.dali", "av", "cv2")
    if settings.smoke:
        raise Skip("compares the GPU pipeline with the CPU one: needs a CUDA GPU")
    need_gpu(settings)
    import torch

    from core.backend import resolve_backend
    from pipelines.video.clips import ClipSpec
    from pipelines.video.loader import make_clip_loader

    record = _video(settings, "h264", 320, 240, "augment")
    std = (0.229, 0.224, 0.225)
    spec = ClipSpec(frames=16, size=112, mode="train", layout="BCTHW", mean=(0.485, 0.456, 0.406), std=std)
    gpu_loader = make_clip_loader([record], spec, resolve_backend("gpu"), batch_size=1, seed=3)
    (on_gpu,) = list(gpu_loader)
    (on_cpu,) = list(make_clip_loader([record], spec, resolve_backend("cpu"), batch_size=1, seed=3))
    grey = (on_gpu.clips.float().cpu() - on_cpu.clips).abs() * 255 * torch.tensor(std).view(1, 3, 1, 1, 1)
    mean, high = float(grey.mean()), float(grey.max())
    summary = f"|GPU - CPU| mean {mean:.2f}, max {high:.1f} grey levels (route {dict(gpu_loader.decode_stats.routes)})"
    return {"summary": summary, "mean_grey_levels": mean, "max_grey_levels": high,
            **({} if mean <= SAME_PIXELS_GREY_LEVELS else {"status": "fail"})}  # fmt: skip


def check_classical_gpu(settings: Settings) -> dict[str, Any]:
    need("sklearn")
    import numpy as np

    from models.classical.estimators import MODEL_NAMES, ClassicalModel, library_for

    backend = backend_for(settings)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    x = rng.normal(size=(300, 203)).astype(np.float32)
    x[:, :5] += y[:, None]
    models, skipped, wrong = {}, {}, []
    for name in MODEL_NAMES:
        library = library_for(name, backend)
        if not settings.smoke and library in ("sklearn", "xgboost-cpu"):
            stage = backend.boosting if name == "gb" else backend.classical
            skipped[name] = f"{library}: no GPU library usable ({stage.reason})"
            continue
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:  # a GPU library's warning is a finding
            warnings.simplefilter("always")
            model = ClassicalModel(name, library).fit(x[:240], y[:240], groups=np.arange(240) // 6)
            proba = np.asarray(model.predict_proba(x[240:]))
        ok = proba.shape == (60, 3) and bool(np.allclose(proba.sum(axis=1), 1, atol=1e-4))
        accuracy = float((proba.argmax(axis=1) == y[240:]).mean())
        said = sorted({_last_line(str(warning.message)) for warning in caught})
        models[name] = {"library": library, "ok": ok, "accuracy": accuracy, "seconds": time.perf_counter() - start,
                        "warnings": said}  # fmt: skip
        if not ok:
            wrong.append(f"{name}: predict_proba shape {proba.shape}")
        if said and not settings.smoke:
            wrong.append(f"{name} warned: {said[0]}")
    if not models:
        raise Skip("; ".join(sorted(set(skipped.values()))))
    summary = "; ".join(wrong) or ", ".join(f"{n} {m['library']} acc {m['accuracy']:.2f}" for n, m in models.items())
    if skipped:
        summary += f" (skipped: {', '.join(skipped)})"
    return {"summary": summary, "models": models, "skipped": skipped, **({"status": "fail"} if wrong else {})}


def check_cache_vs_nvdec(settings: Settings) -> dict[str, Any]:
    need("nvidia.dali", "av", "cv2", "torchvision", "sklearn", "tqdm")
    need_gpu(settings)
    import torch

    from models.deep.build import build_model, clip_specs
    from models.deep.runtime import prepare_model
    from models.deep.training import train_model
    from pipelines.video.loader import make_clip_loader
    from workflow.profiles import PROFILES

    backend = backend_for(settings)
    device = backend.torch_device()
    overrides: dict[str, Any] = dict(weights="none", epochs=3, warmup_epochs=0.0)
    count, size, codec = 64, (320, 240), "h264"
    if settings.smoke:
        overrides.update(frames=4, size=16, batch_size=2, epochs=2)
        count, size, codec = 4, (64, 48), "mjpeg"
    config = PROFILES["gpu"].deep_config("cnn3d", **overrides)
    records = [_video(settings, codec, *size, f"train_{i}", frames=50) for i in range(count)]
    results = {}
    for cache in (True, False):
        cache_dir = settings.workdir / "clip-cache" if cache else None
        loader = make_clip_loader(records, clip_specs(config)["train"], backend, batch_size=config.batch_size,
                                  cache_dir=cache_dir, num_threads=config.num_threads)  # fmt: skip
        model = prepare_model(build_model(config, 2), config, device)
        outcome = train_model(model, loader, None, config, device, ["a", "b"], progress=False)
        later = [row["clips_per_second"] for row in outcome.state.history[1:]]  # the first epoch fills the cache
        results["cache" if cache else "no_cache"] = {
            "clips_per_second_after_first_epoch": sum(later) / len(later),
            "decode_routes": dict(loader.decode_stats.routes),
        }
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    cached, fresh = results["cache"], results["no_cache"]
    summary = (f"R3D-18 {config.frames}x{config.size}: cache {cached['clips_per_second_after_first_epoch']:.1f} "
               f"clips/s {cached['decode_routes']}, no cache {fresh['clips_per_second_after_first_epoch']:.1f} "
               f"clips/s {fresh['decode_routes']}")  # fmt: skip
    return {"summary": summary, "videos": f"{count} {codec} {size[0]}x{size[1]}", **results}


# ----------------------------------------------------------------------------------------- runner
def checks(pytest_paths: list[str]) -> list[tuple[str, Callable[[Settings], dict[str, Any]]]]:
    return [
        ("doctor", check_doctor),
        ("pytest_gpu", lambda settings: check_pytest_gpu(settings, pytest_paths)),
        ("cnn_train_step", check_cnn_train_step),
        ("ddp_step", check_ddp_step),
        ("r3d18_throughput", check_r3d18_throughput),
        ("feature_kernel", check_feature_kernel),
        ("nvdec_decode", check_nvdec_decode),
        ("augmentation_gpu_vs_cpu", check_augmentation_gpu_vs_cpu),
        ("classical_gpu", check_classical_gpu),
        ("cache_vs_nvdec", check_cache_vs_nvdec),
    ]


def run_check(function: Callable[[Settings], dict[str, Any]], settings: Settings) -> dict[str, Any]:
    start = time.perf_counter()
    if time.perf_counter() > settings.deadline:
        result: dict[str, Any] = {"status": "skip", "reason": "out of time (--budget)"}
    else:
        try:
            result = function(settings)
            result.setdefault("status", "pass")
        except Skip as exc:
            result = {"status": "skip", "reason": str(exc)}
        except Exception as exc:  # a failing check is reported; the others still run
            result = {"status": "fail", "reason": f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}",
                      "traceback": traceback.format_exc()[-3000:]}  # fmt: skip
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/gpu-check/gpu_check.json", help="the JSON report")
    parser.add_argument("--smoke", action="store_true", help="run on the CPU at toy sizes (CI)")
    parser.add_argument("--only", default=None, help="comma-separated check names (default: all)")
    parser.add_argument("--budget", type=float, default=480, help="seconds; later checks are skipped")
    parser.add_argument("--pytest-paths", default="tests", help="comma-separated paths for pytest -m gpu")
    args = parser.parse_args(argv)
    if args.smoke:
        os.environ.setdefault("ACTIONBENCH_DEVICE", "cpu")
    selected = checks(args.pytest_paths.split(","))
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {name for name, _ in selected}
        if unknown:
            parser.error(f"unknown checks {sorted(unknown)}")
        selected = [(name, function) for name, function in selected if name in wanted]
    started = time.perf_counter()
    report: dict[str, Any] = {"mode": "smoke" if args.smoke else "gpu", "checks": {}}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as workdir:
        settings = Settings(smoke=args.smoke, workdir=Path(workdir), deadline=started + args.budget)
        for name, function in selected:
            result = run_check(function, settings)
            report["checks"][name] = result
            text = result.get("summary") or result.get("reason", "")
            print(f"{result['status'].upper():<4} {name:<24} {text} ({result['seconds']} s)", flush=True)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["counts"] = {s: sum(r["status"] == s for r in report["checks"].values()) for s in ("pass", "fail", "skip")}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    counts = report["counts"]
    tally = ", ".join(f"{count} {status}" for status, count in counts.items())
    print(f"gpu check: {tally} in {report['seconds']} s -> {out}")
    return 1 if counts["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
