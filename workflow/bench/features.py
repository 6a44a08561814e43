"""Feature benchmark: videos/s for decoding alone and for decoding + the feature kernel.

Both passes read the same videos through the same evaluation loader the ``features`` stage uses
(with the probe's keyframe index, as after ``prepare``); the decode pass reports the loader's
counters (seeks, sequential fallbacks, frames decoded per clip).
The kernel is also timed alone (synchronised on a GPU) on the clips of the decode pass, so
decode threads do not compete with it; that gives its cost relative to decoding the same clips.
On a CUDA backend the same batch is also timed with NumPy and CuPy, with their largest difference.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.backend import Backend
from core.runfiles import atomic_write_json
from pipelines.data.keyframes import KeyframeIndexes
from pipelines.features.kernel import FeatureSpec, compute_features
from pipelines.features.store import iter_feature_batches, synchronize, to_numpy
from pipelines.video.routes import add_decode_counts
from workflow.bench.loader import scan_videos

KERNEL_TO_DECODE_TARGET = 0.25  # on the CPU: kernel time at most this fraction of decode time
MAX_KEPT_VIDEOS = 512  # decoded clips kept in memory for the kernel-alone timing


@dataclass
class NumpyVsCupy:
    batch: int
    numpy_ms: float
    cupy_ms: float
    speedup: float
    max_abs_diff: float
    max_rel_diff: float  # over entries with |value| > 1e-3


@dataclass
class FeatureBenchResult:
    data_root: str
    n_videos: int
    rejected: int
    spec: dict[str, Any]
    batch_size: int
    decode_device: str
    features_device: str
    cpu_count: int | None
    load_average: list[float]
    decode_seconds: float
    decode_videos_per_s: float
    decode_features_seconds: float
    decode_features_videos_per_s: float
    kernel_ms_per_video: float  # the kernel alone, on the clips of the decode pass
    decode_ms_per_video: float
    kernel_share: float  # kernel / (decode + kernel), per video
    kernel_to_decode: float  # kernel time / decode time for the same clips
    target_kernel_to_decode: float
    target_met: bool | None  # None on a GPU (the target is for the CPU)
    numpy_vs_cupy: NumpyVsCupy | None = None
    frames_decoded_per_clip: float | None = None  # PyAV route of the decode pass (None: all by DALI)
    decode_counts: dict[str, float | None] | None = None  # the decode pass's loader counters, added up

    def table(self) -> str:
        lines = [
            f"{self.n_videos} videos ({self.rejected} rejected), clips {self.spec['frames']}x{self.spec['size']}px, "
            f"batch {self.batch_size}, decode {self.decode_device}, kernel {self.features_device}, "
            f"load avg {self.load_average}",
            f"decode only          {self.decode_videos_per_s:8.1f} videos/s  ({self.decode_seconds:.2f} s)",
            f"decode + features    {self.decode_features_videos_per_s:8.1f} videos/s  "
            f"({self.decode_features_seconds:.2f} s)",
            f"kernel alone         {self.kernel_ms_per_video:8.2f} ms/video vs decode "
            f"{self.decode_ms_per_video:.2f} ms/video: "
            f"{100 * self.kernel_share:.1f}% of the work, "
            f"{self.kernel_to_decode:.3f}x decode time (target <= {self.target_kernel_to_decode}x on the CPU"
            + ("" if self.target_met is None else f": {'met' if self.target_met else 'NOT met'}")
            + ")",
        ]
        if self.frames_decoded_per_clip is not None:
            lines.append(f"frames decoded per clip (PyAV route): {self.frames_decoded_per_clip:.1f}")
        if self.numpy_vs_cupy is not None:
            c = self.numpy_vs_cupy
            lines.append(
                f"same batch of {c.batch}: NumPy {c.numpy_ms:.1f} ms, CuPy {c.cupy_ms:.2f} ms ({c.speedup:.1f}x), "
                f"max rel diff {c.max_rel_diff:.1e}"
            )
        return "\n".join(lines)


def _best_ms(run: Any, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return 1000 * best


def compare_numpy_cupy(clips: Any, spec: FeatureSpec, sample_rate: list[float] | None = None) -> NumpyVsCupy:
    """Time the kernel on one batch with NumPy (host copy) and CuPy (device array)."""
    import cupy

    on_device = cupy.asarray(clips)
    on_host = to_numpy(on_device)

    def gpu_run() -> Any:
        out = compute_features(on_device, cupy, spec, sample_rate)
        cupy.cuda.get_current_stream().synchronize()
        return out

    cpu = compute_features(on_host, np, spec, sample_rate)
    gpu = to_numpy(gpu_run())  # also the warm-up (kernel compilation)
    numpy_ms = _best_ms(lambda: compute_features(on_host, np, spec, sample_rate))
    cupy_ms = _best_ms(gpu_run)
    diff = np.abs(gpu - cpu)
    large = np.abs(cpu) > 1e-3
    return NumpyVsCupy(
        batch=int(on_host.shape[0]),
        numpy_ms=round(numpy_ms, 3),
        cupy_ms=round(cupy_ms, 3),
        speedup=round(numpy_ms / max(cupy_ms, 1e-9), 2),
        max_abs_diff=float(diff.max()),
        max_rel_diff=float((diff[large] / np.abs(cpu[large])).max()) if large.any() else 0.0,
    )


def bench_features(
    data_root: str | os.PathLike[str],
    backend: Backend,
    *,
    videos: int | None = None,
    out: str | os.PathLike[str] | None = None,
    spec: FeatureSpec | None = None,
    batch_size: int | None = None,
) -> FeatureBenchResult:
    """Time decode alone and decode + features over ``videos`` videos of ``data_root`` (evenly
    spread; default all) and write JSON to ``out`` (a ``.json`` file or a folder; default
    ``./bench/features.json``)."""

    spec = spec or FeatureSpec()
    out_path = Path(out) if out is not None else Path("bench") / "features.json"
    if out_path.suffix != ".json":
        out_path = out_path / "features.json"
    keyframes = KeyframeIndexes()
    records = scan_videos(data_root, videos, keyframes)

    # Warm-up: imports, DALI pipeline set-up and first kernel call are not per-video cost.
    for _ in iter_feature_batches(records[:1], backend, spec, batch_size=1, keyframes=keyframes):
        pass
    counts: list[dict[str, float]] = []

    def timed_pass(compute: bool, keep: bool) -> tuple[float, int, int, list[tuple[Any, list[float]]]]:
        rejected: list[Any] = []
        kept: list[tuple[Any, list[float]]] = []
        count = 0
        start = time.perf_counter()
        for batch in iter_feature_batches(
            records,
            backend,
            spec,
            batch_size=batch_size,
            compute=compute,
            rejected=rejected,
            keyframes=keyframes,
            decode_counts=counts if keep else None,
        ):
            count += len(batch.video_ids)
            if keep and count <= MAX_KEPT_VIDEOS:
                kept.append((batch.clips, batch.sample_rate))
        return time.perf_counter() - start, count, len(rejected), kept

    # 1. decode alone (the loader, clips kept); 2. the kernel alone on those clips, so decode
    # threads do not compete with it; 3. decode + features as the `features` stage runs them.
    decode_seconds, decoded, rejected, kept = timed_pass(compute=False, keep=True)
    xp = backend.xp()
    kernel_seconds = 0.0
    kernel_videos = 0
    for clips, rates in kept:
        start = time.perf_counter()
        compute_features(clips, xp, spec, sample_rate=rates)
        synchronize(xp)
        kernel_seconds += time.perf_counter() - start
        kernel_videos += len(rates)
    total_seconds, processed, _, _ = timed_pass(compute=True, keep=False)
    if processed == 0 or kernel_videos == 0:
        raise ValueError(f"no video under {data_root} could be decoded")
    first_clips = kept[0][0]
    kernel_ms = 1000 * kernel_seconds / kernel_videos
    decode_ms = 1000 * decode_seconds / decoded
    on_cpu = backend.features.device == "cpu"
    ratio = kernel_ms / decode_ms
    result = FeatureBenchResult(
        data_root=str(data_root),
        n_videos=len(records),
        rejected=rejected,
        spec=spec.to_dict(),
        batch_size=batch_size or backend.feature_batch_size,
        decode_device=backend.decode.device,
        features_device=backend.features.device,
        cpu_count=os.cpu_count(),
        load_average=[round(v, 2) for v in os.getloadavg()],
        decode_seconds=round(decode_seconds, 4),
        decode_videos_per_s=round(decoded / decode_seconds, 2),
        decode_features_seconds=round(total_seconds, 4),
        decode_features_videos_per_s=round(processed / total_seconds, 2),
        kernel_ms_per_video=round(kernel_ms, 3),
        decode_ms_per_video=round(decode_ms, 3),
        kernel_share=round(kernel_ms / (kernel_ms + decode_ms), 4),
        kernel_to_decode=round(ratio, 4),
        target_kernel_to_decode=KERNEL_TO_DECODE_TARGET,
        target_met=bool(ratio <= KERNEL_TO_DECODE_TARGET) if on_cpu else None,
    )
    result.decode_counts = add_decode_counts(counts)
    result.frames_decoded_per_clip = result.decode_counts["frames_decoded_per_clip"]
    if not on_cpu:
        result.numpy_vs_cupy = compare_numpy_cupy(first_clips, spec, kept[0][1])
    atomic_write_json(out_path, asdict(result))
    return result
