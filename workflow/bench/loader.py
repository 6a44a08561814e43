"""Loader benchmark: the project's clip loader against a notebook-style reference loader.

The reference is what many video notebooks do: ``cv2.VideoCapture`` decodes every frame,
the clip's frames are picked, each goes through torchvision transforms via PIL, and
``torch.stack`` builds the clip. Both loaders produce the same clips (frames, sampling,
size, normalisation, layout) from the same videos; the reference applies its random
training transforms per frame (the usual notebook bug the project's loader avoids).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.backend import Backend
from core.runfiles import atomic_write_json
from models.networks import cnn2d, cnn3d
from pipelines.data.dataset import scan_dataset
from pipelines.data.preflight import probe_video
from pipelines.data.records import VideoRecord
from pipelines.video.cache import ClipCache
from pipelines.video.clips import ClipSpec, clip_rng, eval_indices, train_indices
from pipelines.video.loader import make_clip_loader


@dataclass
class LoaderTiming:
    """One timed pass over the benchmark videos."""

    loader: str  # "reference" | "project"
    cache: str  # "off" | "cold" (first pass, writes the cache) | "warm"
    clips: int
    frames: int
    seconds: float
    clips_per_s: float
    frames_per_s: float
    data_ms_per_clip: float
    cpu_ms_per_clip: float  # process CPU time (all threads) per clip: stable on a shared machine
    speedup: float | None = None  # wall-clock, vs the reference
    cpu_speedup: float | None = None  # CPU time, vs the reference


@dataclass
class LoaderBenchResult:
    data_root: str
    n_videos: int
    mode: str
    spec: dict[str, Any]
    batch_size: int
    num_threads: int
    device: str
    cpu_count: int | None
    load_average: list[float]
    timings: list[LoaderTiming] = field(default_factory=list)
    cache_size_bytes: int = 0
    rejected: int = 0
    notes: str = ""

    def table(self) -> str:
        lines = [
            f"{self.mode} clips {self.spec['frames']}x{self.spec['size']}x{self.spec['size']} {self.spec['layout']}, "
            f"{self.n_videos} videos, batch {self.batch_size}, {self.device}, load avg {self.load_average}",
            f"{'loader':<10} {'cache':<6} {'clips':>6} {'clips/s':>9} {'frames/s':>10} {'ms/clip':>8} {'speedup':>8}"
            f" {'cpu ms/clip':>12} {'cpu speedup':>12}",
        ]
        for t in self.timings:
            speedup = f"{t.speedup:.1f}x" if t.speedup is not None else "-"
            cpu_speedup = f"{t.cpu_speedup:.1f}x" if t.cpu_speedup is not None else "-"
            lines.append(
                f"{t.loader:<10} {t.cache:<6} {t.clips:>6} {t.clips_per_s:>9.1f} {t.frames_per_s:>10.0f} "
                f"{t.data_ms_per_clip:>8.1f} {speedup:>8} {t.cpu_ms_per_clip:>12.1f} {cpu_speedup:>12}"
            )
        if self.cache_size_bytes:
            lines.append(f"cache size on disk: {self.cache_size_bytes / 2**20:.1f} MiB")
        return "\n".join(lines)


def scan_videos(data_root: str | os.PathLike[str], limit: int | None = None) -> list[VideoRecord]:
    """Usable videos of a UCF101-layout folder (``pipelines.data.dataset`` scan, ``pipelines.data.preflight``
    probe), evenly thinned to ``limit``. Files the probe rejects are left out."""

    files = scan_dataset(data_root)
    if limit is not None and limit < len(files):
        files = [files[int(i)] for i in np.linspace(0, len(files) - 1, limit).round()]
    classes = sorted({f.class_name for f in files})
    records = []
    for file in files:
        probe = probe_video(file.path)
        if probe.ok:
            records.append(
                VideoRecord(
                    file.video_id,
                    str(file.path),
                    file.class_name,
                    classes.index(file.class_name),
                    file.group,
                    "test",
                    probe.codec,
                    probe.frames,
                    probe.fps,
                    probe.width,
                    probe.height,
                )
            )
    if not records:
        raise ValueError(f"no usable video under {data_root}; run `python cli.py prepare` to see why")
    return records


def bench_spec(frames: int, size: int, mode: str) -> ClipSpec:
    """The clips of the model that uses ``size``: 112 -> R3D-18 (BCTHW, Kinetics-400 mean/std,
    stride-2 windows); otherwise ResNet-18 (BTCHW, ImageNet mean/std, TSN segments)."""
    if size == 112:
        mean, std = cnn3d.normalization("none")
        return ClipSpec(
            frames=frames, size=size, sampling="window", stride=2, mode=mode, layout="BCTHW", mean=mean, std=std
        )
    mean, std = cnn2d.normalization("none")
    return ClipSpec(frames=frames, size=size, sampling="segment", mode=mode, layout="BTCHW", mean=mean, std=std)


def reference_loader(records: list[VideoRecord], spec: ClipSpec, batch_size: int, seed: int = 0) -> Callable[[], int]:
    """A notebook-style loader pass: returns a function that loads every clip once, returns clip count."""
    import cv2
    from PIL import Image
    from torchvision import transforms

    assert spec.mean is not None and spec.std is not None
    if spec.mode == "train":
        per_frame = transforms.Compose(
            [
                transforms.RandomResizedCrop(spec.size, scale=(0.35, 1.0)),
                transforms.RandomHorizontalFlip(),
                transforms.RandomRotation(10),
                transforms.ColorJitter(0.25, 0.25, 0.25),
                transforms.ToTensor(),
                transforms.Normalize(spec.mean, spec.std),
            ]
        )
    else:
        per_frame = transforms.Compose(
            [
                transforms.Resize(spec.short_side),
                transforms.CenterCrop(spec.size),
                transforms.ToTensor(),
                transforms.Normalize(spec.mean, spec.std),
            ]
        )

    def load_clip(video: int, record: VideoRecord) -> torch.Tensor:
        capture = cv2.VideoCapture(record.path)
        frames = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        capture.release()
        if spec.mode == "train":
            indices = train_indices(len(frames), spec, clip_rng(seed, 0, video))
        else:
            indices = eval_indices(len(frames), spec)
        clip = torch.stack([per_frame(Image.fromarray(frames[i])) for i in indices])  # T, C, H, W
        return clip.permute(1, 0, 2, 3) if spec.layout == "BCTHW" else clip

    def run_pass() -> int:
        # One intra-op thread: per-frame tensors are tiny, and on a shared CPU more threads only
        # make the reference slower (conservative for the speedups reported).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            count = 0
            for start in range(0, len(records), batch_size):
                batch = torch.stack(
                    [load_clip(start + i, r) for i, r in enumerate(records[start : start + batch_size])]
                )
                count += batch.shape[0]
        finally:
            torch.set_num_threads(threads)
        return count

    return run_pass


def _timed(name: str, cache: str, run_pass: Callable[[], int], frames_per_clip: int) -> LoaderTiming:
    start, cpu_start = time.perf_counter(), time.process_time()
    clips = run_pass()
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    return LoaderTiming(
        loader=name,
        cache=cache,
        clips=clips,
        frames=clips * frames_per_clip,
        seconds=round(seconds, 4),
        clips_per_s=round(clips / seconds, 2),
        frames_per_s=round(clips * frames_per_clip / seconds, 1),
        data_ms_per_clip=round(1000 * seconds / max(clips, 1), 2),
        cpu_ms_per_clip=round(1000 * cpu_seconds / max(clips, 1), 2),
    )


def bench_loader(
    data_root: str | os.PathLike[str],
    backend: Backend,
    *,
    frames: int = 16,
    size: int = 112,
    mode: str = "eval",
    cache: bool = True,
    clips: int | None = None,
    batch_size: int = 8,
    num_threads: int = 2,
    out: str | os.PathLike[str] | None = None,
) -> LoaderBenchResult:
    """Time the reference loader and the project loader (cache off, and cold then warm when
    ``cache``) over the same videos; write the result as JSON to ``out`` (a ``.json`` file or a
    folder; default ``./bench/loader.json``). The cache passes use a new temporary folder of their
    own, created beside the JSON (the same disk as before) and removed afterwards: "cold" is cold,
    and no folder the benchmark did not create is ever emptied.
    """
    out_path = Path(out) if out is not None else Path("bench") / "loader.json"
    if out_path.suffix != ".json":
        out_path = out_path / "loader.json"
    records = scan_videos(data_root, clips)
    spec = bench_spec(frames, size, mode)

    rejected: set[str] = set()

    def project_pass(cache_path: Path | None) -> Callable[[], int]:
        loader = make_clip_loader(
            records, spec, backend, batch_size=batch_size, cache_dir=cache_path, num_threads=num_threads
        )

        def run_pass() -> int:
            count = 0
            for batch in loader:
                count += len(batch.video_ids)
            rejected.update(item.path for item in loader.rejected)
            return count

        return run_pass

    # Warm-up on one video: library imports and first-call set-up are not data time.
    reference_loader(records[:1], spec, batch_size)()
    list(make_clip_loader(records[:1], spec, backend, batch_size=1))

    result = LoaderBenchResult(
        data_root=str(data_root),
        n_videos=len(records),
        mode=mode,
        spec=asdict(spec),
        batch_size=batch_size,
        num_threads=num_threads,
        device=backend.decode.device,
        cpu_count=os.cpu_count(),
        load_average=[round(v, 2) for v in os.getloadavg()],
    )
    reference = _timed("reference", "off", reference_loader(records, spec, batch_size), frames)
    result.timings.append(reference)
    result.timings.append(_timed("project", "off", project_pass(None), frames))
    if cache:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".loader-cache-", dir=out_path.parent) as cache_path:
            result.timings.append(_timed("project", "cold", project_pass(Path(cache_path)), frames))
            result.timings.append(_timed("project", "warm", project_pass(Path(cache_path)), frames))
            result.cache_size_bytes = ClipCache(cache_path).cache_size_bytes()
    for timing in result.timings[1:]:
        timing.speedup = round(reference.seconds / timing.seconds, 2) if timing.seconds > 0 else math.inf
        timing.cpu_speedup = round(reference.cpu_ms_per_clip / max(timing.cpu_ms_per_clip, 1e-6), 2)
    result.rejected = len(rejected)
    result.notes = (
        "Wall-clock of one full pass each, after a one-video warm-up; reference = cv2.VideoCapture "
        "decoding every frame + per-frame torchvision/PIL transforms + torch.stack, single-threaded "
        "(torch intra-op threads 1); cpu_ms_per_clip = process CPU time of all threads per clip; "
        f"project = PyAV/DALI decode on {num_threads} threads + DALI augmentation. load_average is "
        "the 1/5/15-minute load when the benchmark started (other processes share the CPU)."
    )
    atomic_write_json(out_path, asdict(result))
    return result
