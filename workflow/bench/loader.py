"""Loader benchmark: the project's clip loader against a notebook-style reference loader and,
with ``peers``, the libraries a PyTorch user would pick instead (:mod:`workflow.bench.peers`:
torchcodec, decord, each in a DataLoader with 2 workers and torchvision transforms).

The reference is what many video notebooks do: ``cv2.VideoCapture`` decodes every frame,
the clip's frames are picked, each goes through torchvision transforms via PIL, and
``torch.stack`` builds the clip. All loaders produce the same clips (frames, sampling,
size, normalisation, layout) from the same videos; the reference applies its random
training transforms per frame (the usual notebook bug the project's loader avoids).

The project's loader uses the keyframe index of the pre-flight probe, as after ``prepare``;
its timings carry the decode counters (seeks, sequential fallbacks, frames decoded per clip).

Every loader is timed ``repeat`` times, in rounds (reference, project, each peer, then the cache
passes, round after round), and its median pass is reported with all of them: on a shared
machine a pass of under a second can take half again as long as the next one, and alternating
the loaders spreads slow spells over all of them instead of one. Each pass runs in a fresh
interpreter (:func:`in_fresh_interpreter`), as a user runs one loader: no loader inherits the
thread pools or allocator state another one left behind.
Long videos: render them with ``demo-data --seconds 30-30`` (see the command's help).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import resource
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from core.backend import Backend
from core.runfiles import atomic_write_json
from models.networks import cnn2d, cnn3d
from pipelines.data.dataset import scan_dataset
from pipelines.data.keyframes import KeyframeIndexes
from pipelines.data.preflight import probe_video
from pipelines.data.records import VideoRecord
from pipelines.video.cache import ClipCache
from pipelines.video.clips import ClipSpec, clip_rng, eval_indices, train_indices
from pipelines.video.loader import ClipLoader, make_clip_loader
from workflow.bench.peers import check_peers, peer_pass

_Result = TypeVar("_Result")


@dataclass
class LoaderTiming:
    """A loader's median pass over the benchmark videos (of ``pass_seconds``, one per round)."""

    loader: str  # "reference" | "project" | a peer ("torchcodec", "decord")
    cache: str  # "off" | "cold" (first pass, writes the cache) | "warm"
    clips: int
    frames: int
    seconds: float
    clips_per_s: float
    frames_per_s: float
    data_ms_per_clip: float
    cpu_ms_per_clip: float  # CPU time (all threads, and worker processes) per clip: stable on a shared machine
    speedup: float | None = None  # wall-clock, vs the reference
    cpu_speedup: float | None = None  # CPU time, vs the reference
    frames_decoded_per_clip: float | None = None  # the project's PyAV route (None: every clip came from elsewhere)
    decode_counts: dict[str, float] | None = None  # the project loader's counters (ClipLoader.decode_counts)
    pass_seconds: list[float] = field(default_factory=list)  # every pass, in round order


def median_pass(passes: Sequence[LoaderTiming]) -> LoaderTiming:
    """The median of one loader's passes (the lower middle one of an even count), with every
    pass's seconds in ``pass_seconds``."""
    ranked = sorted(passes, key=lambda timing: timing.seconds)
    chosen = ranked[(len(ranked) - 1) // 2]
    chosen.pass_seconds = [timing.seconds for timing in passes]
    return chosen


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
    peers: list[str] = field(default_factory=list)
    repeat: int = 1
    vs_fastest_peer: float | None = None  # project (cache off) clips/s over the fastest peer's, medians
    vs_fastest_peer_per_round: list[float] = field(default_factory=list)  # the same within each round
    notes: str = ""

    def table(self) -> str:
        lines = [
            f"{self.mode} clips {self.spec['frames']}x{self.spec['size']}x{self.spec['size']} {self.spec['layout']}, "
            f"{self.n_videos} videos, batch {self.batch_size}, {self.device}, load avg {self.load_average}, "
            f"median of {self.repeat} pass{'es' if self.repeat > 1 else ''}",
            f"{'loader':<10} {'cache':<6} {'clips':>6} {'clips/s':>9} {'frames/s':>10} {'ms/clip':>8} {'speedup':>8}"
            f" {'cpu ms/clip':>12} {'cpu speedup':>12} {'decoded/clip':>13}",
        ]
        for t in self.timings:
            speedup = f"{t.speedup:.1f}x" if t.speedup is not None else "-"
            cpu_speedup = f"{t.cpu_speedup:.1f}x" if t.cpu_speedup is not None else "-"
            decoded = f"{t.frames_decoded_per_clip:.1f}" if t.frames_decoded_per_clip is not None else "-"
            lines.append(
                f"{t.loader:<10} {t.cache:<6} {t.clips:>6} {t.clips_per_s:>9.1f} {t.frames_per_s:>10.0f} "
                f"{t.data_ms_per_clip:>8.1f} {speedup:>8} {t.cpu_ms_per_clip:>12.1f} {cpu_speedup:>12} {decoded:>13}"
            )
        if self.vs_fastest_peer is not None:
            rounds = ", ".join(f"{ratio:.2f}" for ratio in self.vs_fastest_peer_per_round)
            lines.append(f"project (cache off) / fastest peer: {self.vs_fastest_peer:.2f}x clips/s (rounds: {rounds})")
        if self.cache_size_bytes:
            lines.append(f"cache size on disk: {self.cache_size_bytes / 2**20:.1f} MiB")
        return "\n".join(lines)


def scan_videos(
    data_root: str | os.PathLike[str], limit: int | None = None, keyframes: KeyframeIndexes | None = None
) -> list[VideoRecord]:
    """Usable videos of a UCF101-layout folder (``pipelines.data.dataset`` scan, ``pipelines.data.preflight``
    probe), evenly thinned to ``limit``. Files the probe rejects are left out. The probes' keyframe
    indexes go to ``keyframes``, as ``prepare`` stores them with a run."""

    files = scan_dataset(data_root)
    if limit is not None and limit < len(files):
        files = [files[int(i)] for i in np.linspace(0, len(files) - 1, limit).round()]
    classes = sorted({f.class_name for f in files})
    records = []
    for file in files:
        probe = probe_video(file.path)
        if probe.ok and keyframes is not None:
            keyframes.add(str(file.path), probe.keyframes)
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
            indices = train_indices(len(frames), spec, clip_rng(seed, 0, video), fps=record.fps)
        else:
            indices = eval_indices(len(frames), spec, fps=record.fps)
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


def _children_cpu_seconds() -> float:
    """CPU time of this process's finished child processes (DataLoader workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(name: str, cache: str, run_pass: Callable[[], int], frames_per_clip: int) -> LoaderTiming:
    start, cpu_start = time.perf_counter(), time.process_time() + _children_cpu_seconds()
    clips = run_pass()
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() + _children_cpu_seconds() - cpu_start
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


@dataclass
class _ProjectLoader:
    """The project's loaders of one benchmark, and their timed passes."""

    records: list[VideoRecord]
    spec: ClipSpec
    backend: Backend
    batch_size: int
    num_threads: int
    cache_max_bytes: int | None
    keyframes: KeyframeIndexes
    rejected: set[str] = field(default_factory=set)  # paths any pass rejected

    def loader(self, cache_path: Path | None) -> ClipLoader:
        return make_clip_loader(
            self.records,
            self.spec,
            self.backend,
            batch_size=self.batch_size,
            cache_dir=cache_path,
            num_threads=self.num_threads,
            cache_max_bytes=self.cache_max_bytes,
            keyframes=self.keyframes,
        )

    def timed(self, cache_name: str, loader: ClipLoader) -> LoaderTiming:
        """One pass (an epoch) of ``loader``, with what its counters added during it."""

        def run_pass() -> int:
            count = sum(len(batch.video_ids) for batch in loader)
            self.rejected.update(item.path for item in loader.rejected)
            return count

        before = loader.decode_counts()
        timing = _timed("project", cache_name, run_pass, self.spec.frames)
        after = loader.decode_counts()
        counts = {key: after[key] - before[key] for key in after if key != "frames_decoded_per_clip"}
        if counts["clips_decoded"]:
            timing.frames_decoded_per_clip = round(counts["frames_decoded"] / counts["clips_decoded"], 2)
        timing.decode_counts = counts
        return timing


def _reference_timing(records: list[VideoRecord], spec: ClipSpec, batch_size: int) -> LoaderTiming:
    reference_loader(records[:1], spec, batch_size)()  # warm-up: imports and first calls are not data time
    return _timed("reference", "off", reference_loader(records, spec, batch_size), spec.frames)


def _project_timings(project: _ProjectLoader, cache_path: Path | None) -> tuple[list[LoaderTiming], set[str]]:
    """The project loader's pass with the cache off, or (``cache_path``) its cold and warm passes,
    and the paths it rejected."""
    first = project.records[:1]  # warm-up: imports and first calls are not data time
    list(make_clip_loader(first, project.spec, project.backend, batch_size=1, keyframes=project.keyframes))
    loader = project.loader(cache_path)
    if cache_path is None:
        return [project.timed("off", loader)], project.rejected
    return [project.timed("cold", loader), project.timed("warm", loader)], project.rejected  # two epochs


def _peer_timing(peer: str, records: list[VideoRecord], spec: ClipSpec, batch_size: int) -> LoaderTiming:
    peer_pass(peer, records[:1], spec, 1)()  # warm-up: imports and first calls are not data time
    return _timed(peer, "off", peer_pass(peer, records, spec, batch_size), spec.frames)


def in_fresh_interpreter(function: Callable[..., _Result], *args: object) -> _Result:
    """``function(*args)`` in a new Python process, as a user would run one loader: nothing another
    loader left behind (thread pools of torch, OpenCV or DALI, allocator state) affects its timing,
    and a peer's DataLoader forks its workers from a process without DALI's threads (forking those
    can hang the workers)."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


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
    peers: Sequence[str] = (),
    cache_max_bytes: int | None = None,
    repeat: int = 3,
) -> LoaderBenchResult:
    """Time the reference loader, the project loader (cache off, and cold then warm when
    ``cache``: two passes of one loader, as two epochs) and each of ``peers`` over the same videos,
    ``repeat`` rounds (see the module docstring); write the result as JSON to ``out`` (a ``.json``
    file or a folder; default ``./bench/loader.json``).
    The cache passes use a new temporary folder each round, created beside the JSON (the same disk
    as before) and removed afterwards: "cold" is cold, and no folder the benchmark did not create is
    ever emptied. The cache is limited to ``cache_max_bytes`` (default: the cache's own default).
    """
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    check_peers(peers)
    out_path = Path(out) if out is not None else Path("bench") / "loader.json"
    if out_path.suffix != ".json":
        out_path = out_path / "loader.json"
    keyframes = KeyframeIndexes()
    records = scan_videos(data_root, clips, keyframes)
    spec = bench_spec(frames, size, mode)

    project = _ProjectLoader(records, spec, backend, batch_size, num_threads, cache_max_bytes, keyframes)
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
        repeat=repeat,
    )
    rejected: set[str] = set()
    passes: dict[tuple[str, str], list[LoaderTiming]] = {}
    for _ in range(repeat):
        timings = [in_fresh_interpreter(_reference_timing, records, spec, batch_size)]
        uncached, rejected_now = in_fresh_interpreter(_project_timings, project, None)
        timings += uncached
        timings += [in_fresh_interpreter(_peer_timing, peer, records, spec, batch_size) for peer in peers]
        rejected |= rejected_now
        if cache:
            out_path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=".loader-cache-", dir=out_path.parent) as cache_path:
                cached, rejected_now = in_fresh_interpreter(_project_timings, project, Path(cache_path))
                timings += cached
                rejected |= rejected_now
                result.cache_size_bytes = ClipCache(cache_path).cache_size_bytes()
        for timing in timings:
            passes.setdefault((timing.loader, timing.cache), []).append(timing)
    result.timings = [median_pass(runs) for runs in passes.values()]
    reference, uncached = result.timings[0], result.timings[1]
    result.peers = list(peers)
    if peers:
        fastest = max((result.timings[2 + i] for i in range(len(peers))), key=lambda timing: timing.clips_per_s)
        result.vs_fastest_peer = round(uncached.clips_per_s / fastest.clips_per_s, 3)
        result.vs_fastest_peer_per_round = [
            round(min(passes[(peer, "off")][r].seconds for peer in peers) / passes[("project", "off")][r].seconds, 3)
            for r in range(repeat)
        ]
    for timing in result.timings[1:]:
        timing.speedup = round(reference.seconds / timing.seconds, 2) if timing.seconds > 0 else math.inf
        timing.cpu_speedup = round(reference.cpu_ms_per_clip / max(timing.cpu_ms_per_clip, 1e-6), 2)
    result.rejected = len(rejected)
    result.notes = (
        f"Median wall-clock of {repeat} full passes each (in rounds), each loader in a fresh interpreter after a "
        "one-video warm-up; reference = "
        "cv2.VideoCapture decoding every frame + per-frame torchvision/PIL transforms + torch.stack, single-threaded "
        "(torch intra-op threads 1); cpu_ms_per_clip = process CPU time of all threads per clip; "
        f"project = PyAV decode on {num_threads + 1} threads, DALI decode and augmentation on {num_threads}, with "
        "the probe's keyframe "
        "index (as after prepare); peers = their decoder in a torch DataLoader with 2 worker processes + "
        "torchvision transforms.v2 on the whole clip (cpu time includes the workers). load_average is "
        "the 1/5/15-minute load when the benchmark started (other processes share the CPU)."
    )
    atomic_write_json(out_path, asdict(result))
    return result
