"""The clip loader: records in, model-ready :class:`ClipBatch` out, on the backend's device.

Per video, frames come from (first that applies):

1. the decoded-clip cache (``cache_dir``, at most ``cache_max_bytes``): only the sampled frames
   are read; a miss decodes with PyAV (3.) and stores what :func:`~pipelines.video.cache.frames_to_store`
   says;
2. DALI's video decoder fed with the file's bytes: NVDEC on a GPU backend (H.264, HEVC,
   MPEG-4, AV1, VP8/9, MJPEG), libavcodec on the CPU for VP8/VP9/MJPEG;
3. PyAV (other codecs on the CPU, and the fallback when DALI rejects a file): seek to the keyframe
   before the clip and decode only up to its last frame, straight to the clip's short side
   (:func:`pipelines.video.decode.decode_at`, with the run's keyframe index, ``RUN_DIR/keyframes.npz``).
   :attr:`ClipLoader.seeks`, ``sequential_fallbacks`` and ``frames_decoded`` count what it did.

Videos are prepared on a thread pool one batch ahead while DALI augments the current batch.
DALI reads the prepared arrays in place and its CPU outputs become the batch tensors without a
copy (see :func:`_to_torch`).
Evaluation yields every (video, clip) of the shard exactly once, in order, including a smaller
last batch. A video that fails to decode is skipped, listed in :attr:`ClipLoader.rejected` and
appended to ``RUN_DIR/rejected.csv``; the loader carries on.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from core.backend import Backend
from core.runfiles import RunPaths, append_rejected
from pipelines.data.keyframes import KeyframeIndexes
from pipelines.data.records import VideoRecord
from pipelines.video.cache import CachedVideo, ClipCache, default_max_bytes, frames_to_store
from pipelines.video.clips import (
    ClipSpec,
    augmentation_matrix,
    centre_crop_window,
    clip_rng,
    draw_augmentation,
    epoch_order,
    eval_indices,
    jitter_normalization,
    shard_indices,
    train_indices,
    window_matrix,
)
from pipelines.video.decode import DecodedFrames, DecodeError, decode_at

DALI_CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})
DALI_GPU_CODECS = DALI_CPU_CODECS | {"h264", "hevc", "mpeg4", "av1", "libdav1d", "libaom-av1"}


@dataclass
class ClipBatch:
    """One batch: ``clips`` (float32 torch tensor on the deep device for BTCHW/BCTHW; a
    ``backend.xp()`` array for BTHWC), and for each clip its label, video id and clip index."""

    clips: Any
    labels: np.ndarray
    video_ids: list[str]
    clip_index: np.ndarray


_Sample = tuple[np.ndarray, np.random.Generator | None]  # a clip's frame numbers and its augmentation draw


def _wanted(sampled: dict[int, _Sample]) -> np.ndarray:
    """Every frame number the sampled clips use, sorted, once."""
    return np.unique(np.concatenate([indices for indices, _ in sampled.values()]))


@dataclass(frozen=True)
class RejectedVideo:
    video_id: str
    path: str
    reason: str


@dataclass
class _ClipInput:
    """What DALI needs for one clip: decoded frames, or encoded bytes plus frame indices."""

    frames: np.ndarray | None = None
    encoded: np.ndarray | None = None
    indices: np.ndarray | None = None
    arguments: dict[str, np.ndarray] = field(default_factory=dict)  # per-sample DALI arguments
    resized: bool = False  # frames already have the clip's short side (from the cache)

    @property
    def source(self) -> str:
        """The pipeline route: "encoded", "frames" or "cached"; "+warp" for evaluation windows
        that are only enlarged (fed as a warp ``affine`` instead of a crop window)."""
        route = "encoded" if self.frames is None else ("cached" if self.resized else "frames")
        return route + "+warp" if self.arguments.keys() == {"affine"} else route


class ClipLoader:
    """Iterable of :class:`ClipBatch` over one shard of ``records``; see :func:`make_clip_loader`."""

    def __init__(
        self,
        records: Sequence[VideoRecord],
        spec: ClipSpec,
        backend: Backend,
        *,
        batch_size: int,
        seed: int = 0,
        shuffle: bool | None = None,
        num_shards: int = 1,
        shard_id: int = 0,
        cache_dir: str | os.PathLike[str] | None = None,
        run_dir: str | os.PathLike[str] | None = None,
        num_threads: int = 2,
        stage: str = "loader",
        cache_max_bytes: int | None = None,
        keyframes: KeyframeIndexes | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.records = list(records)
        self.spec = spec
        self.backend = backend
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = spec.mode == "train" if shuffle is None else shuffle
        self.num_shards = num_shards
        self.shard_id = shard_id
        self.cache = None
        if cache_dir is not None:
            limit = default_max_bytes(cache_dir) if cache_max_bytes is None else cache_max_bytes
            self.cache = ClipCache(cache_dir, max_bytes=limit)
        if keyframes is None:
            keyframes = KeyframeIndexes(RunPaths(run_dir).keyframes_npz if run_dir is not None else None)
        self.keyframes = keyframes
        self.run_dir = run_dir
        self.num_threads = max(1, num_threads)
        self.stage = stage
        self.epoch = 0
        self.rejected: list[RejectedVideo] = []
        self.cache_hits = 0
        self.cache_misses = 0
        # The PyAV route (see decode_at): videos decoded after a seek, from the start (the clip
        # starts before the second keyframe), sequentially (no usable index: counted, never
        # silent); frames the decoder produced and clips they served.
        self.seeks = 0
        self.from_start = 0
        self.sequential_fallbacks = 0
        self.frames_decoded = 0
        self.clips_decoded = 0
        self._counts = threading.Lock()  # the decode threads update the counters
        self._pipes: dict[str, Any] = {}
        shard_indices(np.arange(0), num_shards, shard_id, equal=False)  # validates the shard

    # ----------------------------------------------------------------------------- public
    @property
    def device(self) -> str:
        """Where DALI runs: "gpu" when the backend decodes on the GPU, else "cpu"."""
        return "gpu" if self.backend.decode.device == "gpu" else "cpu"

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def video_indices(self) -> np.ndarray:
        """Indices into ``records`` of this shard's videos for the current epoch, in order."""
        order = epoch_order(len(self.records), self.seed, self.epoch, self.shuffle)
        return shard_indices(order, self.num_shards, self.shard_id, equal=self.spec.mode == "train")

    @property
    def n_videos(self) -> int:
        return len(self.video_indices())

    def __len__(self) -> int:
        return math.ceil(self.n_videos * self.spec.clips_per_video / self.batch_size)

    def __iter__(self) -> Iterator[ClipBatch]:
        clips = list(range(self.spec.clips_per_video))
        items = [(int(v), k) for v in self.video_indices() for k in clips]
        batches = [items[i : i + self.batch_size] for i in range(0, len(items), self.batch_size)]
        if not batches:
            return
        last_use = {video: number for number, batch in enumerate(batches) for video, _ in batch}
        # One task per video prepares all its clips, even when they straddle two batches.
        futures: dict[int, Future] = {}
        with ThreadPoolExecutor(self.num_threads, thread_name_prefix="clip-decode") as pool:

            def submit(batch_items: list[tuple[int, int]]) -> None:
                for video, _ in batch_items:
                    if video not in futures:
                        futures[video] = pool.submit(self._prepare_video, video, clips)

            submit(batches[0])
            for number, batch_items in enumerate(batches):
                if number + 1 < len(batches):
                    submit(batches[number + 1])  # decode ahead while DALI runs this batch
                prepared = {video: futures[video] for video in dict.fromkeys(v for v, _ in batch_items)}
                batch = self._assemble(batch_items, prepared)
                for video in prepared:
                    if last_use[video] == number:
                        del futures[video]
                if batch is not None:
                    yield batch

    @property
    def _codec_threads(self) -> int:
        """PyAV decoder threads per pool worker: the pool already runs ``num_threads`` videos at
        once, so each gets its share of the cores this process may use (1 on a 2-core machine)."""
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, cores // self.num_threads)

    def _sample(self, video: int, clip: int, n_frames: int) -> _Sample:
        if self.spec.mode == "eval":
            return eval_indices(n_frames, self.spec, clip), None
        rng = clip_rng(self.seed, self.epoch, video)
        return train_indices(n_frames, self.spec, rng), rng

    def _arguments(
        self, rng: np.random.Generator | None, video: int, frame_size: tuple[int, int], resized: bool = False
    ) -> dict[str, np.ndarray]:
        """Per-sample DALI arguments of one clip: the training augmentation draw, or the
        evaluation crop window (none for frames already resized by the cache).

        The training draw is made on the source's size from the index (so the cache, PyAV and
        DALI routes draw the same crop) and mapped onto the frame actually fed.
        """
        if rng is None:
            if resized:
                return {}
            start, end = centre_crop_window(frame_size[0], frame_size[1], self.spec)
            window = (end - start) * np.array(frame_size)
            if window.max() <= self.spec.size:  # only enlarged: a warp samples the same pixels, faster
                return {"affine": window_matrix(start, end, frame_size, self.spec.size)}
            return {"crop_start": start, "crop_end": end}
        record = self.records[video]
        drawn_size = (record.height, record.width) if record.height > 0 and record.width > 0 else frame_size
        aug = draw_augmentation(rng, *drawn_size)
        mean, std = jitter_normalization(aug, self.spec.mean, self.spec.std)
        return {
            "affine": augmentation_matrix(aug, drawn_size, frame_size, self.spec.size),
            "saturation": np.array(aug.saturation, np.float32),
            "mean": mean,
            "std": std,
        }

    def _prepare_video(self, video: int, clips: list[int]) -> dict[int, _ClipInput]:
        """Inputs for the given clips of one video (runs on the decode thread pool)."""
        record = self.records[video]
        sampled = {clip: self._sample(video, clip, record.frames) for clip in clips}
        if self.cache is not None:
            return self._through_cache(video, sampled)
        height, width = record.height, record.width
        codecs = DALI_GPU_CODECS if self.device == "gpu" else DALI_CPU_CODECS
        if record.codec in codecs and height > 0 and width > 0:
            encoded = np.fromfile(record.path, dtype=np.uint8)
            return {
                clip: _ClipInput(
                    encoded=encoded,
                    indices=indices.astype(np.int32),
                    arguments=self._arguments(rng, video, (height, width)),
                )
                for clip, (indices, rng) in sampled.items()
            }
        return self._decode_with_pyav(video, sampled)

    def _through_cache(self, video: int, sampled: dict[int, _Sample]) -> dict[int, _ClipInput]:
        """Inputs from the cache entry when it holds every sampled frame (a hit), else decoded
        with PyAV and stored (a miss)."""
        assert self.cache is not None
        record = self.records[video]
        wanted = _wanted(sampled)
        entry = self.cache.entry(record.path, self.spec.short_side)
        if entry is not None and entry.covers(wanted):
            try:
                inputs = self._clips_from(entry, video, sampled)
            except OSError:  # damaged outside the cache's atomic writes: decode it again
                pass
            else:
                self.cache.touch(entry)
                with self._counts:
                    self.cache_hits += 1
                return inputs
        with self._counts:
            self.cache_misses += 1
        decoded = self._decode(video, frames_to_store(wanted, record.frames, self.spec.mode), len(sampled))
        self.cache.store(record.path, self.spec.short_side, decoded)
        return self._clips_from(decoded, video, sampled)

    def _clips_from(
        self, stored: CachedVideo | DecodedFrames, video: int, sampled: dict[int, _Sample]
    ) -> dict[int, _ClipInput]:
        """Inputs for the sampled clips from a cache entry or just-decoded frames."""
        _, height, width, _ = stored.shape
        resized = min(height, width) == self.spec.short_side
        return {
            clip: _ClipInput(
                frames=stored.read(indices),
                arguments=self._arguments(rng, video, (height, width), resized=resized),
                resized=resized,
            )
            for clip, (indices, rng) in sampled.items()
        }

    def _decode_with_pyav(self, video: int, sampled: dict[int, _Sample]) -> dict[int, _ClipInput]:
        return self._clips_from(self._decode(video, _wanted(sampled), len(sampled)), video, sampled)

    def _decode(self, video: int, frames: np.ndarray, clips: int) -> DecodedFrames:
        """``frames`` of a video at the clip's short side (PyAV, seeking; see decode_at)."""
        path = self.records[video].path
        decoded = decode_at(
            path, frames, self.spec.short_side, index=self.keyframes.get(path), codec_threads=self._codec_threads
        )
        with self._counts:
            self.seeks += decoded.route == "seek"
            self.from_start += decoded.route == "start"
            self.sequential_fallbacks += decoded.route == "sequential"
            self.frames_decoded += decoded.frames_decoded
            self.clips_decoded += clips
        return decoded

    def decode_counts(self) -> dict[str, float]:
        """The PyAV route's and the cache's counters (see __init__), with frames decoded per clip."""
        with self._counts:
            counts: dict[str, float] = {
                "seeks": self.seeks,
                "from_start": self.from_start,
                "sequential_fallbacks": self.sequential_fallbacks,
                "frames_decoded": self.frames_decoded,
                "clips_decoded": self.clips_decoded,
                "cache_hits": self.cache_hits,
                "cache_misses": self.cache_misses,
            }
        counts["frames_decoded_per_clip"] = round(self.frames_decoded / max(self.clips_decoded, 1), 2)
        counts["keyframe_scans"] = self.keyframes.scanned
        counts["cache_evictions"] = self.cache.evictions if self.cache is not None else 0
        counts["cache_not_stored"] = self.cache.not_stored if self.cache is not None else 0
        return counts

    # --------------------------------------------------------------------------- assembly
    def _reject(self, video: int, reason: str) -> None:
        record = self.records[video]
        if any(item.path == record.path for item in self.rejected):
            return
        self.rejected.append(RejectedVideo(record.video_id, record.path, reason))
        if self.run_dir is not None:
            append_rejected(self.run_dir, record.path, reason, self.stage)

    def _pipeline(self, route: str):  # type: ignore[no-untyped-def]
        """The DALI pipeline of one input route (see :attr:`_ClipInput.source`)."""
        if route not in self._pipes:
            from pipelines.video.dali import build_clip_pipeline

            source, _, geometry = route.partition("+")
            self._pipes[route] = build_clip_pipeline(
                self.spec,
                self.device,
                "encoded" if source == "encoded" else "frames",
                resized=source == "cached",
                geometry=geometry or "resize",
                batch_size=self.batch_size,
                num_threads=self.num_threads,
                seed=self.seed,
            )
        return self._pipes[route]

    def _run_pipeline(self, route: str, inputs: list[_ClipInput]) -> Any:
        pipe = self._pipeline(route)
        # The frame/byte sources are no_copy (see dali_pipelines): ``inputs`` keeps the arrays
        # alive and unchanged until run() has returned.
        if route.startswith("encoded"):
            pipe.feed_input("encoded", [item.encoded for item in inputs])
            pipe.feed_input("indices", [item.indices for item in inputs])
        else:
            pipe.feed_input("frames", [item.frames for item in inputs], layout="FHWC")
        for name in inputs[0].arguments:
            pipe.feed_input(name, [item.arguments[name] for item in inputs])
        (output,) = pipe.run()
        return output

    def _assemble(self, batch_items: list[tuple[int, int]], prepared: dict[int, Future]) -> ClipBatch | None:
        inputs: dict[tuple[int, int], _ClipInput] = {}
        for video, future in prepared.items():
            try:
                for clip, item in future.result().items():
                    inputs[(video, clip)] = item
            except DecodeError as exc:
                self._reject(video, str(exc))
        by_route: dict[str, list[tuple[int, int]]] = {}
        for item in batch_items:
            if item in inputs:
                by_route.setdefault(inputs[item].source, []).append(item)
        outputs: list[tuple[list[tuple[int, int]], Any]] = []
        for route in [route for route in by_route if route.startswith("encoded")]:
            encoded_items = by_route.pop(route)
            try:
                outputs.append((encoded_items, self._run_pipeline(route, [inputs[i] for i in encoded_items])))
            except RuntimeError:
                # DALI fails the whole batch on one bad file: decode these with PyAV instead.
                for video in dict.fromkeys(v for v, _ in encoded_items):
                    clips = [c for v, c in encoded_items if v == video]
                    sampled = {c: self._sample(video, c, self.records[video].frames) for c in clips}
                    try:
                        for clip, item in self._decode_with_pyav(video, sampled).items():
                            inputs[(video, clip)] = item
                            by_route.setdefault(item.source, []).append((video, clip))
                    except DecodeError as exc:
                        self._reject(video, str(exc))
        for route, items in by_route.items():
            outputs.append((items, self._run_pipeline(route, [inputs[i] for i in items])))
        produced = {item for items, _ in outputs for item in items}
        kept = [item for item in batch_items if item in produced]
        if not kept:
            return None
        clips = self._gather(kept, outputs)
        return ClipBatch(
            clips=clips,
            labels=np.array([self.records[v].label for v, _ in kept], dtype=np.int64),
            video_ids=[self.records[v].video_id for v, _ in kept],
            clip_index=np.array([c for _, c in kept], dtype=np.int64),
        )

    def _gather(self, kept: list[tuple[int, int]], outputs: list[tuple[list[tuple[int, int]], Any]]) -> Any:
        """One tensor in ``kept`` order from the per-source DALI outputs (one copy each)."""
        parts = []
        for items, tensor_list in outputs:
            parts.append((items, _to_torch(tensor_list)))
        if len(parts) == 1 and parts[0][0] == kept:
            clips = parts[0][1]
        else:
            position = {item: row for row, item in enumerate(kept)}
            first = parts[0][1]
            clips = torch.empty((len(kept), *first.shape[1:]), dtype=first.dtype, device=first.device)
            for items, tensor in parts:
                rows = torch.tensor([position[item] for item in items], device=first.device)
                clips.index_copy_(0, rows, tensor)
        if self.spec.layout == "BTHWC":
            xp = self.backend.xp()
            if xp.__name__ == "cupy":
                return xp.from_dlpack(clips.cuda() if not clips.is_cuda else clips)
            return clips.cpu().numpy()
        return clips.to(self.backend.torch_device())


def _to_torch(tensor_list: Any) -> torch.Tensor:
    """A DALI batch of equal-shape samples as one torch tensor on the same device. CPU outputs
    are shared without a copy where DALI's dynamic executor does not reuse an output buffer while
    the tensor holds it (DALI >= 1.44), else copied once; GPU outputs are copied once, on the GPU."""
    from nvidia.dali.backend import TensorGPU

    from pipelines.video.dali import outputs_outlive_next_run

    dense = tensor_list.as_tensor()
    if isinstance(dense, TensorGPU):
        from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type

        out = torch.empty(
            dense.shape(), dtype=to_torch_type[dense.dtype], device=torch.device("cuda", torch.cuda.current_device())
        )
        feed_ndarray(dense, out, cuda_stream=torch.cuda.current_stream())
        return out
    return torch.from_numpy(np.asarray(dense) if outputs_outlive_next_run() else np.array(dense))


def add_decode_counts(counts: Iterable[dict[str, float]]) -> dict[str, float | None]:
    """Several loaders' :meth:`ClipLoader.decode_counts` added up, with frames decoded per clip and
    the cache's hit rate (None when no video was looked up) recomputed from the totals."""
    total: dict[str, float | None] = {}
    for item in counts:
        for key, value in item.items():
            if key != "frames_decoded_per_clip":
                total[key] = (total.get(key) or 0) + value
    frames, clips = total.get("frames_decoded") or 0, total.get("clips_decoded") or 0
    total["frames_decoded_per_clip"] = round(frames / clips, 2) if clips else None
    hits, misses = total.get("cache_hits") or 0, total.get("cache_misses") or 0
    total["cache_hit_rate"] = round(hits / (hits + misses), 4) if hits + misses else None
    return total


def make_clip_loader(
    records: Sequence[VideoRecord],
    spec: ClipSpec,
    backend: Backend,
    *,
    batch_size: int,
    seed: int = 0,
    shuffle: bool | None = None,
    num_shards: int = 1,
    shard_id: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    num_threads: int = 2,
    stage: str = "loader",
    cache_max_bytes: int | None = None,
    keyframes: KeyframeIndexes | None = None,
) -> ClipLoader:
    """A :class:`ClipLoader` over ``records`` (see the module docstring for the contract).

    ``shuffle`` defaults to True in training, False in evaluation. Training shards have equal
    length (see :func:`pipelines.video.clips.shard_indices`); evaluation shards cover every video.
    ``cache_max_bytes``: the cache's size limit (default :func:`pipelines.video.cache.default_max_bytes`).
    ``keyframes``: the videos' keyframe indexes (default: ``RUN_DIR/keyframes.npz``, else built on
    first use).
    """
    return ClipLoader(
        records,
        spec,
        backend,
        batch_size=batch_size,
        seed=seed,
        shuffle=shuffle,
        num_shards=num_shards,
        shard_id=shard_id,
        cache_dir=cache_dir,
        run_dir=run_dir,
        num_threads=num_threads,
        stage=stage,
        cache_max_bytes=cache_max_bytes,
        keyframes=keyframes,
    )
