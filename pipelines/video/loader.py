"""The clip loader: records in, model-ready :class:`ClipBatch` out, on the backend's device.

Per video, frames come from (first that applies; the decode routes of :mod:`pipelines.video.routes`):

1. the decoded-clip cache (``cache_dir``, at most ``cache_max_bytes``): only the sampled frames
   are read (``"cache"``); a miss decodes with PyAV (3.) and stores what
   :func:`~pipelines.video.cache.frames_to_store` says;
2. DALI's video decoder fed with the file's bytes: NVDEC on a GPU backend for the codecs and
   frame sizes NVDEC takes (``"nvdec"``, :data:`core.backend.NVDEC_LIMITS`), else libavcodec on
   the CPU for VP8/VP9/MJPEG (``"dali-cpu"``);
3. PyAV (``"pyav"``: other codecs, and the fallback for a file that a DALI route fails on): seek
   to the keyframe before the clip and decode only up to its last frame, straight to the clip's
   short side (:func:`pipelines.video.decode.decode_at`, with the run's keyframe index,
   ``RUN_DIR/keyframes.npz``). :meth:`ClipLoader.decode_counts` says what it did (seeks,
   sequential fallbacks, frames decoded per clip) and how the cache fared.

A DALI run that fails is split until the failing file is alone (the rest of the batch stays on
its route); only that file goes to PyAV, or is rejected. A route that fails on a codec whose
files PyAV decodes is not tried again for that codec (:class:`~pipelines.video.routes.RouteHealth`).
Every clip is counted under its route in :attr:`ClipLoader.decode_stats`.

Videos are prepared on a thread pool (:attr:`ClipLoader.decode_threads`) ahead of the batches;
DALI runs ``prefetch`` batches ahead of the one handed out (asynchronous execution,
:class:`~pipelines.video.dali.ScheduledPipeline`), so decoding and augmentation overlap the
caller's training step. DALI reads the prepared arrays in place (on a GPU pipeline, frames are
staged in pinned host memory for the upload) and its outputs become the batch tensors without a
copy: CPU outputs as NumPy views, GPU outputs through DLPack (see :func:`_to_torch`).
Evaluation yields every (video, clip) of the shard exactly once, in order, including a smaller
last batch. A video that fails to decode is skipped, listed in :attr:`ClipLoader.rejected` and
appended to ``RUN_DIR/rejected.csv``; the loader carries on.
"""

from __future__ import annotations

import math
import os
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from core.backend import NVDEC_LIMITS, Backend
from core.runfiles import RunPaths, append_rejected, set_aside
from pipelines.data.keyframes import KeyframeIndexes
from pipelines.data.records import VideoRecord
from pipelines.data.video_stream import video_stream_count
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
from pipelines.video.decode import DecodedFrames, DecodeError, decode_at, unreadable_source
from pipelines.video.routes import DALI_ROUTES, DecodeStats, RouteHealth, first_line

DALI_CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})


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
    decoder: str = "pyav"  # the decode route (pipelines.video.routes): nvdec, dali-cpu, pyav, cache
    rerouted: str = ""  # "nvdec->pyav (decode failed)": why the clip left the route it would take

    @property
    def source(self) -> str:
        """The pipeline that takes the clip: "nvdec" or "dali-cpu" (bytes), "frames" or "cached";
        "+warp" for evaluation windows that are only enlarged (a warp ``affine``, not a crop window)."""
        route = self.decoder if self.frames is None else ("cached" if self.resized else "frames")
        return route + "+warp" if self.arguments.keys() == {"affine"} else route


@dataclass
class _Part:
    """The clips of one batch that one pipeline takes, submitted under ``ticket`` (None: not
    submitted, the route had failed on their codec)."""

    key: str
    items: list[tuple[int, int]]
    ticket: int | None = None


@dataclass
class _Scheduled:
    """A batch whose parts are in the pipelines; ``inputs`` stay alive until it is collected."""

    items: list[tuple[int, int]]
    inputs: dict[tuple[int, int], _ClipInput]
    parts: list[_Part]


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
        prefetch: int = 2,
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
        self.prefetch = max(1, prefetch)
        self.decode_stats = DecodeStats()
        self._health = RouteHealth(self.decode_stats)
        # The PyAV route (see decode_at): videos decoded after a seek, from the start (the clip
        # starts before the second keyframe), sequentially (no usable index: counted, never
        # silent); frames the decoder produced and clips they served; videos this loader indexed
        # because the run's keyframes.npz lacked them.
        self.seeks = 0
        self.from_start = 0
        self.sequential_fallbacks = 0
        self.frames_decoded = 0
        self.clips_decoded = 0
        self.keyframe_scans = 0
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
        with ThreadPoolExecutor(self.decode_threads, thread_name_prefix="clip-decode") as pool:

            def submit(number: int) -> None:
                for video, _ in batches[number] if number < len(batches) else []:
                    if video not in futures:
                        futures[video] = pool.submit(self._prepare_video, video, clips)

            def schedule(number: int) -> _Scheduled:
                submit(number + 1)  # decode one batch further ahead
                videos = list(dict.fromkeys(v for v, _ in batches[number]))
                scheduled = self._schedule(batches[number], {video: futures[video] for video in videos})
                for video in videos:
                    if last_use[video] == number:
                        del futures[video]
                return scheduled

            submit(0)
            in_flight: deque[_Scheduled] = deque()
            upcoming = 0
            try:
                while upcoming < min(self.prefetch, len(batches)):
                    in_flight.append(schedule(upcoming))
                    upcoming += 1
                while in_flight:
                    current = in_flight.popleft()
                    if upcoming < len(batches):  # DALI works on it while the caller uses ``current``
                        in_flight.append(schedule(upcoming))
                        upcoming += 1
                    batch = self._collect(current)
                    if batch is not None:
                        yield batch
            finally:  # stopped early (or failed): batches still in DALI are dropped when they come
                for scheduled in in_flight:
                    for part in scheduled.parts:
                        if part.ticket is not None:
                            self._pipes[part.key].discard(part.ticket)

    @property
    def decode_threads(self) -> int:
        """Threads that prepare videos: one more than ``num_threads``. A PyAV decode thread takes
        Python's lock between packets (~37 times per UCF101-like clip) and its core idles while it
        waits; the spare thread fills those gaps (measured on 2 cores, UCF101-like MPEG-4 set,
        8 alternating passes: median 182 vs 164 clips/s; no change where DALI decodes)."""
        return self.num_threads + 1

    @property
    def _codec_threads(self) -> int:
        """PyAV decoder threads per pool worker: the pool already runs ``num_threads`` videos at
        once, so each gets its share of the cores this process may use (1 on a 2-core machine)."""
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, cores // self.num_threads)

    def _sample(self, video: int, clip: int) -> _Sample:
        record = self.records[video]
        if self.spec.mode == "eval":
            return eval_indices(record.frames, self.spec, clip, fps=record.fps), None
        rng = clip_rng(self.seed, self.epoch, video)
        return train_indices(record.frames, self.spec, rng, fps=record.fps), rng

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
        sampled = {clip: self._sample(video, clip) for clip in clips}
        if self.cache is not None:
            return self._through_cache(video, sampled)
        height, width = record.height, record.width
        decoder, rerouted = self._route(record)
        if decoder in DALI_ROUTES:
            try:
                encoded = np.fromfile(record.path, dtype=np.uint8)
            except OSError as exc:  # gone or unreadable since `prepare`: rejected like an undecodable file
                raise unreadable_source(record.path, exc) from exc
            return {
                clip: _ClipInput(
                    encoded=encoded,
                    indices=indices.astype(np.int32),
                    arguments=self._arguments(rng, video, (height, width)),
                    decoder=decoder,
                    rerouted=rerouted,
                )
                for clip, (indices, rng) in sampled.items()
            }
        inputs = self._decode_with_pyav(video, sampled)
        for item in inputs.values():
            item.rerouted = rerouted
        return inputs

    def _route(self, record: VideoRecord) -> tuple[str, str]:
        """The decode route of ``record``'s clips, and why it is not the route its codec would
        take ("" when it is): NVDEC for the codecs and frame sizes it takes on a GPU backend,
        DALI's CPU decoder for VP8/VP9/MJPEG, PyAV otherwise or once a route failed on the codec."""
        codec, width, height = record.codec, record.width, record.height
        known_size = width > 0 and height > 0
        wanted = "pyav"
        if self.device == "gpu" and codec in NVDEC_LIMITS:
            wanted = "nvdec"
        elif codec in DALI_CPU_CODECS:
            wanted = "dali-cpu"
        candidates = []
        if self.device == "gpu" and known_size and self.backend.nvdec_accepts(codec, width, height):
            candidates.append("nvdec")
        if codec in DALI_CPU_CODECS and known_size:
            candidates.append("dali-cpu")
        usable = [route for route in candidates if self._health.usable(route, codec)]
        chosen = usable[0] if usable else "pyav"
        if chosen == wanted:
            return chosen, ""
        if wanted in candidates:
            why = f"{wanted} failed on {codec} earlier"
        elif wanted == "nvdec" and known_size:
            why = "outside NVDEC frame sizes"
        else:
            why = "frame size unknown"
        return chosen, f"{wanted}->{chosen} ({why})"

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
            except OSError as exc:  # damaged outside the cache's atomic writes: decode it again
                set_aside(entry.path, exc, redo="decoding the video again")
            else:
                self.cache.touch(entry)
                with self._counts:
                    self.cache_hits += 1
                return inputs
        with self._counts:
            self.cache_misses += 1
        decoded = self._decode(
            video, frames_to_store(wanted, record.frames, self.spec.mode, fps=record.fps), len(sampled)
        )
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
                decoder="cache" if isinstance(stored, CachedVideo) else "pyav",
            )
            for clip, (indices, rng) in sampled.items()
        }

    def _decode_with_pyav(self, video: int, sampled: dict[int, _Sample]) -> dict[int, _ClipInput]:
        return self._clips_from(self._decode(video, _wanted(sampled), len(sampled)), video, sampled)

    def _decode(self, video: int, frames: np.ndarray, clips: int) -> DecodedFrames:
        """``frames`` of a video at the clip's short side (PyAV, seeking; see decode_at)."""
        path = self.records[video].path
        index, scanned = self.keyframes.lookup(path)
        decoded = decode_at(path, frames, self.spec.short_side, index=index, codec_threads=self._codec_threads)
        with self._counts:
            self.keyframe_scans += scanned
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
                "keyframe_scans": self.keyframe_scans,
                "cache_hits": self.cache_hits,
                "cache_misses": self.cache_misses,
            }
        counts["frames_decoded_per_clip"] = round(self.frames_decoded / max(self.clips_decoded, 1), 2)
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

    def _pipeline(self, key: str) -> Any:
        """The DALI pipeline of one input key (see :attr:`_ClipInput.source`), built on first use."""
        if key not in self._pipes:
            from pipelines.video.dali import ScheduledPipeline, build_clip_pipeline

            source, _, geometry = key.partition("+")
            pipe = build_clip_pipeline(
                self.spec,
                self.device,
                "encoded" if source in DALI_ROUTES else "frames",
                resized=source == "cached",
                geometry=geometry or "resize",
                decoder="mixed" if source == "nvdec" else "cpu",
                batch_size=self.batch_size,
                num_threads=self.num_threads,
                seed=self.seed,
                prefetch=self.prefetch,
            )
            self._pipes[key] = ScheduledPipeline(pipe)
        return self._pipes[key]

    def _feeds(self, key: str, inputs: list[_ClipInput]) -> dict[str, list[Any]]:
        """The per-sample inputs of one pipeline run. The frame/byte sources are no_copy (see
        pipelines.video.dali): the caller keeps ``inputs`` alive until the run's output is taken."""
        if key.partition("+")[0] in DALI_ROUTES:
            feeds: dict[str, list[Any]] = {
                "encoded": [item.encoded for item in inputs],
                "indices": [item.indices for item in inputs],
            }
        else:
            feeds = {"frames": [self._staged(item.frames) for item in inputs]}
        for name in inputs[0].arguments:
            feeds[name] = [item.arguments[name] for item in inputs]
        return feeds

    def _staged(self, frames: np.ndarray | None) -> np.ndarray:
        """Frames for the pipeline's upload: on a GPU pipeline a copy in pinned (page-locked) host
        memory, which the copy engine reads asynchronously; on the CPU the array itself."""
        assert frames is not None
        if self.device != "gpu":
            return frames
        pinned = torch.empty(frames.shape, dtype=torch.uint8, pin_memory=True).numpy()  # keeps the tensor alive
        np.copyto(pinned, frames)
        return pinned

    def _run_now(self, key: str, items: list[tuple[int, int]], inputs: dict) -> list[tuple[list, Any]]:
        pipe = self._pipeline(key)
        return [(items, pipe.run(self._feeds(key, [inputs[i] for i in items])))]

    def _schedule(self, batch_items: list[tuple[int, int]], prepared: dict[int, Future]) -> _Scheduled:
        """Wait for the batch's prepared videos and submit their clips, one part per pipeline."""
        inputs: dict[tuple[int, int], _ClipInput] = {}
        for video, future in prepared.items():
            try:
                for clip, item in future.result().items():
                    inputs[(video, clip)] = item
            except DecodeError as exc:
                self._reject(video, str(exc))
        by_key: dict[str, list[tuple[int, int]]] = {}
        for item in batch_items:
            if item in inputs:
                by_key.setdefault(inputs[item].source, []).append(item)
        parts = []
        for key, items in by_key.items():
            route = key.partition("+")[0]
            if route in DALI_ROUTES and not self._usable(route, items):
                parts.append(_Part(key, items))
                continue
            try:
                pipe = self._pipeline(key)
            except RuntimeError as exc:
                if route not in DALI_ROUTES:
                    raise
                self._health.pipeline_failed(route, first_line(exc))
                parts.append(_Part(key, items))
                continue
            parts.append(_Part(key, items, ticket=pipe.submit(self._feeds(key, [inputs[i] for i in items]))))
        return _Scheduled(batch_items, inputs, parts)

    def _collect(self, scheduled: _Scheduled) -> ClipBatch | None:
        """The batch of ``scheduled``: each part's output (failed parts isolated and their bad
        files sent to PyAV), counted per decode route, gathered in batch order."""
        inputs = scheduled.inputs
        outputs: list[tuple[list[tuple[int, int]], Any]] = []
        for part in scheduled.parts:
            route = part.key.partition("+")[0]
            if part.ticket is None:
                outputs += self._fall_back_each(part.key, part.items, inputs)
                continue
            try:
                output = self._pipeline(part.key).result(part.ticket)
            except RuntimeError as exc:
                if route not in DALI_ROUTES:
                    raise
                if not self._usable(route, part.items):  # run before the route was found broken
                    outputs += self._fall_back_each(part.key, part.items, inputs)
                    continue
                self.decode_stats.failed_runs[route] += 1
                outputs += self._isolate(part.key, part.items, inputs, first_line(exc))
                continue
            self._health.succeeded(route, {self.records[v].codec for v, _ in part.items})
            outputs.append((part.items, output))
        produced = {item for items, _ in outputs for item in items}
        kept = [item for item in scheduled.items if item in produced]
        for item in kept:
            self.decode_stats.routes[inputs[item].decoder] += 1
            if inputs[item].rerouted:
                self.decode_stats.fallbacks[inputs[item].rerouted] += 1
        if not kept:
            return None
        return ClipBatch(
            clips=self._gather(kept, outputs),
            labels=np.array([self.records[v].label for v, _ in kept], dtype=np.int64),
            video_ids=[self.records[v].video_id for v, _ in kept],
            clip_index=np.array([c for _, c in kept], dtype=np.int64),
        )

    def _isolate(self, key: str, items: list[tuple[int, int]], inputs: dict, reason: str) -> list[tuple[list, Any]]:
        """Re-run a failed DALI part in halves until each failing video is alone: the videos that
        decode stay on the route, a failing one goes to PyAV by itself (DALI fails a whole batch
        on one bad file)."""
        route = key.partition("+")[0]
        videos = list(dict.fromkeys(v for v, _ in items))
        if len(videos) == 1:
            return self._fall_back(key, items, inputs, failure=reason)
        outputs = []
        for group in (videos[: len(videos) // 2], videos[len(videos) // 2 :]):
            group_items = [item for item in items if item[0] in group]
            if not self._usable(route, group_items):
                outputs += self._fall_back_each(key, group_items, inputs)
                continue
            try:
                outputs += self._run_now(key, group_items, inputs)
            except RuntimeError as exc:
                self.decode_stats.failed_runs[route] += 1
                outputs += self._isolate(key, group_items, inputs, first_line(exc))
                continue
            self._health.succeeded(route, {self.records[v].codec for v in group})
        return outputs

    def _usable(self, route: str, items: list[tuple[int, int]]) -> bool:
        return all(self._health.usable(route, self.records[video].codec) for video, _ in items)

    def _fall_back_each(self, key: str, items: list[tuple[int, int]], inputs: dict) -> list:
        """:meth:`_fall_back` for each video of ``items`` without trying the route again."""
        outputs = []
        for video in dict.fromkeys(v for v, _ in items):
            outputs += self._fall_back(key, [item for item in items if item[0] == video], inputs)
        return outputs

    def _fall_back(self, key: str, items: list[tuple[int, int]], inputs: dict, failure: str | None = None) -> list:
        """Decode one video's clips with PyAV instead of DALI route ``key`` and run them on the
        frames pipeline. ``failure``: the error of this video alone on the route (None: not tried,
        the route had failed on its codec); if PyAV fails too, the video is rejected and the file,
        not the route, is at fault."""
        route = key.partition("+")[0]
        video = items[0][0]
        record = self.records[video]
        sampled = {clip: self._sample(video, clip) for _, clip in items}
        try:
            decoded = self._decode_with_pyav(video, sampled)
        except DecodeError as exc:
            self._reject(video, str(exc))
            return []
        # A file with more than one video stream can fail for reasons of its own (DALI's decoder
        # fails on a file with a still track first), so it does not break the route for its codec.
        if failure is not None and video_stream_count(record.path) <= 1:
            self._health.file_failed(route, record.codec, failure)
        why = "decode failed" if failure is not None else f"{route} failed on {record.codec} earlier"
        for clip, item in decoded.items():
            item.rerouted = f"{route}->pyav ({why})"
            inputs[(video, clip)] = item
        by_key: dict[str, list[tuple[int, int]]] = {}
        for item in items:
            by_key.setdefault(inputs[item].source, []).append(item)
        return [output for frame_key, group in by_key.items() for output in self._run_now(frame_key, group, inputs)]

    def _gather(self, kept: list[tuple[int, int]], outputs: list[tuple[list[tuple[int, int]], Any]]) -> Any:
        """One tensor in ``kept`` order from the per-pipeline DALI outputs: the output itself when
        one pipeline made the whole batch in order, else one copy into place."""
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
    """A DALI batch of equal-shape samples as one torch tensor on the same device, without a copy
    where DALI's dynamic executor keeps a buffer alive while the tensor holds it (DALI >= 1.44):
    CPU outputs as a NumPy view, GPU outputs through DLPack. Older DALI: one copy (on the GPU,
    on torch's current stream)."""
    from nvidia.dali.backend import TensorGPU

    from pipelines.video.dali import outputs_outlive_next_run

    dense = tensor_list.as_tensor()
    shared = outputs_outlive_next_run()
    if isinstance(dense, TensorGPU):
        device = torch.device("cuda", dense.device_id())
        if shared:
            with torch.cuda.device(device):
                return torch.from_dlpack(dense)
        from nvidia.dali.plugin.pytorch import feed_ndarray, to_torch_type

        out = torch.empty(dense.shape(), dtype=to_torch_type[dense.dtype], device=device)
        feed_ndarray(dense, out, cuda_stream=torch.cuda.current_stream(device))
        return out
    return torch.from_numpy(np.asarray(dense) if shared else np.array(dense))


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
    prefetch: int = 2,
    cache_max_bytes: int | None = None,
    keyframes: KeyframeIndexes | None = None,
) -> ClipLoader:
    """A :class:`ClipLoader` over ``records`` (see the module docstring for the contract).

    ``shuffle`` defaults to True in training, False in evaluation. Training shards have equal
    length (see :func:`pipelines.video.clips.shard_indices`); evaluation shards cover every video.
    ``prefetch``: batches DALI works on ahead of the one handed out (its ``prefetch_queue_depth``).
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
        prefetch=prefetch,
        cache_max_bytes=cache_max_bytes,
        keyframes=keyframes,
    )
