"""DALI pipelines that turn sampled video frames into model-ready clips, on the CPU or the GPU.

One definition per pipeline, the same for both devices (``device="cpu"|"gpu"``). Frames enter
in one of two ways (``source``):

* ``"frames"``: decoded uint8 frames (T, H, W, C), fed by the loader through
  ``fn.external_source`` (PyAV-decoded or read from the decoded-clip cache); copied to the GPU
  when ``device="gpu"``.
* ``"encoded"``: the file's bytes plus the frame indices to decode, decoded by
  ``fn.decoders.video`` with NVDEC (``decoder="mixed"``, output on the GPU: H.264, HEVC, MPEG-4,
  VP8, VP9, MJPEG) or on the CPU (``decoder="cpu"``, libavcodec: VP8, VP9, MJPEG; on a GPU
  pipeline the decoded frames are then copied to the GPU).

The loader runs pipelines ahead of the batch it hands out (:class:`ScheduledPipeline`: DALI's
asynchronous execution, ``prefetch_queue_depth`` batches in flight).

Augmentation parameters are drawn per clip in NumPy (:func:`pipelines.video.clips.draw_augmentation`)
and fed as per-sample arguments; DALI broadcasts a per-sample argument over all frames of a
sequence, so every frame of a clip gets the same crop, flip, rotation and colour jitter. On the
CPU, saturation and normalisation are one OpenCV pass in a ``python_function`` stage
(:func:`saturate_and_normalize`), which also applies each clip's values to all its frames.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from nvidia.dali import Pipeline, fn, pipeline_def, types

from pipelines.video.clips import ClipSpec

SOURCES = ("frames", "encoded")
DECODERS = ("mixed", "cpu")
# Per-sample arguments fed by the loader: training augmentation, evaluation crop window.
AUGMENTATION_INPUTS = ("affine", "saturation", "mean", "std")
EVAL_INPUTS = ("crop_start", "crop_end")

_OUTPUT_LAYOUTS = {"BTCHW": "FCHW", "BCTHW": "CFHW", "BTHWC": "FHWC"}


def _clip_frames(device: str, source: str, decoder: str = "mixed"):  # type: ignore[no-untyped-def]
    """The clip's frames as a (F, H, W, C) uint8 sequence on ``device``.

    The frames and bytes are fed ``no_copy``: DALI reads the loader's arrays in place (the
    loader keeps them alive until the batch's outputs are collected), saving a copy per clip.
    ``decoder`` ("mixed": NVDEC, or "cpu") decodes ``"encoded"`` sources on a GPU pipeline; a CPU
    pipeline always decodes on the CPU.
    """
    if source == "frames":
        frames = fn.external_source(name="frames", layout="FHWC", dtype=types.UINT8, no_copy=True)
        return frames.gpu() if device == "gpu" else frames
    if source == "encoded":
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; use one of {DECODERS}")
        encoded = fn.external_source(name="encoded", dtype=types.UINT8, no_copy=True)
        indices = fn.external_source(name="indices", dtype=types.INT32)
        on_nvdec = device == "gpu" and decoder == "mixed"
        # pad_mode="none": a frame index past the end is an error (the loader then falls back to
        # PyAV), never silently black frames.
        frames = fn.decoders.video(encoded, frames=indices, pad_mode="none", device="mixed" if on_nvdec else "cpu")
        return frames.gpu() if device == "gpu" and not on_nvdec else frames
    raise ValueError(f"unknown frame source {source!r}; use one of {SOURCES}")


def _normalize(frames, spec: ClipSpec, mean=None, std=None, **crop_mirror):  # type: ignore[no-untyped-def]
    """Crop/mirror, subtract ``mean`` and divide by ``std`` (pixel units; default: the weights'
    mean/std from ``spec``, none for raw uint8 clips) and lay out as ``spec.layout``."""
    if mean is None and spec.normalized:
        assert spec.mean is not None and spec.std is not None
        mean, std = [255.0 * m for m in spec.mean], [255.0 * s for s in spec.std]
    scaling = {} if mean is None else {"mean": mean, "std": std}
    return fn.crop_mirror_normalize(
        frames,
        dtype=types.FLOAT if spec.normalized else types.UINT8,
        output_layout=_OUTPUT_LAYOUTS[spec.layout],
        **scaling,
        **crop_mirror,
    )


def has_cpu_warp_perspective() -> bool:
    """Whether this DALI has the CPU backend of ``experimental.warp_perspective`` (newer than
    1.41, where it is GPU-only)."""
    try:
        from nvidia.dali.ops import _registry

        return "experimental__WarpPerspective" in _registry.cpu_ops()
    except (ImportError, AttributeError):
        return False


def dali_version() -> tuple[int, ...]:
    import nvidia.dali

    return tuple(int(part) for part in nvidia.dali.__version__.split(".")[:2] if part.isdigit())


def outputs_outlive_next_run() -> bool:
    """Whether a CPU output may be used after the next run without a copy: DALI >= 1.44's
    dynamic executor (which these pipelines use) does not reuse a buffer Python still holds."""
    return dali_version() >= (1, 44)


def _warp(frames, affine, spec: ClipSpec, device: str):  # type: ignore[no-untyped-def]
    """Resample every frame of each clip with its clip's ``affine`` (3x3, output pixel -> source
    pixel, continuous coordinates), bilinear, black outside the source.

    On the CPU, ``experimental.warp_perspective`` (OpenCV's fixed-point warp, ~1.5 ms per clip
    of 16x112x112) instead of ``warp_affine`` (~8 ms): same map, same pixel convention
    (``pixel_origin="corner"``), results within one grey level. On the GPU (and with a DALI
    whose warp_perspective has no CPU backend), ``warp_affine``.
    """
    if device == "cpu" and has_cpu_warp_perspective():
        return fn.experimental.warp_perspective(
            frames,
            matrix=affine,
            size=[spec.size, spec.size],
            inverse_map=True,
            pixel_origin="corner",
            border_mode="constant",
            fill_value=0,
            interp_type=types.INTERP_LINEAR,
        )
    return fn.warp_affine(
        frames,
        matrix=affine[0:2],
        size=[spec.size, spec.size],
        inverse_map=True,
        fill_value=0,
        interp_type=types.INTERP_LINEAR,
    )


def saturate_and_normalize(
    frames: np.ndarray,
    saturation: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    *,
    layout: str,
    normalized: bool,
    scratch: list[np.ndarray] | None = None,
) -> np.ndarray:
    """One clip's saturation jitter and normalisation on the CPU, laid out as ``layout``: the
    work of ``fn.saturation`` + ``fn.crop_mirror_normalize`` in one pass of OpenCV (~0.6 ms per
    clip of 16x112x112 instead of ~3 ms; DALI's CPU colour operators are generic per-pixel loops).

    ``frames``: (F, H, W, 3) uint8 RGB. Saturation ``s`` blends every pixel with its luma
    ``g = 0.299 R + 0.587 G + 0.114 B`` (what DALI's YIQ saturation matrix does, to 0.18 grey
    levels), then ``(x - mean) / std`` per channel, so channel ``c`` is
    ``x_c * s / std_c + g * (1 - s) / std_c - mean_c / std_c``. ``g`` is rounded to uint8
    (OpenCV's grey conversion), which moves outputs by at most ``0.5 * |1 - s|`` grey levels.
    ``normalized=False``: rounded and clipped to uint8 (as ``crop_mirror_normalize`` to UINT8),
    else float32 and, like the DALI operators, not clipped. ``scratch``: four (F * H, W) uint8
    arrays for the channel planes and the luma, reused from clip to clip (fresh ones otherwise).
    """
    count, height, width, _ = frames.shape
    s = float(saturation)
    std = np.asarray(std, np.float64)
    gain, grey_gain, offset = s / std, (1.0 - s) / std, -np.asarray(mean, np.float64) / std
    rows = frames.reshape(count * height, width, 3)
    dtype, depth = (np.float32, cv2.CV_32F) if normalized else (np.uint8, cv2.CV_8U)
    if layout == "FHWC":
        luma = np.array([0.299, 0.587, 0.114])
        matrix = np.concatenate([np.diag(gain) + np.outer(grey_gain, luma), offset[:, None]], axis=1)
        source = rows if dtype == np.uint8 else rows.astype(np.float32)
        return cv2.transform(source, matrix).reshape(count, height, width, 3)
    if scratch is None or scratch[0].shape != rows.shape[:2]:
        scratch = [np.empty(rows.shape[:2], np.uint8) for _ in range(4)]
    *planes, grey = scratch
    cv2.split(rows, planes)
    cv2.cvtColor(rows, cv2.COLOR_RGB2GRAY, dst=grey)
    if layout == "CFHW":  # one call per channel plane of the whole clip
        out = np.empty((3, count, height, width), dtype)
        parts = [(c, slice(None), out[c].reshape(count * height, width)) for c in range(3)]
    elif layout == "FCHW":  # one call per frame and channel
        out = np.empty((count, 3, height, width), dtype)
        parts = [(c, slice(f * height, (f + 1) * height), out[f, c]) for f in range(count) for c in range(3)]
    else:
        raise ValueError(f"unknown layout {layout!r}")
    for c, frame_rows, target in parts:
        cv2.addWeighted(
            planes[c][frame_rows],
            float(gain[c]),
            grey[frame_rows],
            float(grey_gain[c]),
            float(offset[c]),
            dst=target,  # written in place: a contiguous view of ``out``
            dtype=depth,
        )
    return out


@dataclass
class _CpuColourStage:
    """The batch function of the CPU colour ``python_function``: :func:`saturate_and_normalize`
    of each clip, spread over ``workers`` threads (OpenCV releases the GIL), so this stage uses
    the cores like the DALI operators around it instead of DALI's one Python thread. Each
    thread reuses its scratch planes (fresh buffers would fault in new pages for every clip)."""

    layout: str
    normalized: bool
    workers: int
    _pool: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)
    _scratch: threading.local = field(default_factory=threading.local, init=False, repr=False)

    def _one(self, frames, saturation, mean, std) -> np.ndarray:  # type: ignore[no-untyped-def]
        rows = (frames.shape[0] * frames.shape[1], frames.shape[2])
        scratch = getattr(self._scratch, "planes", None)
        if scratch is None or scratch[0].shape != rows:
            scratch = self._scratch.planes = [np.empty(rows, np.uint8) for _ in range(4)]
        return saturate_and_normalize(
            frames, saturation, mean, std, layout=self.layout, normalized=self.normalized, scratch=scratch
        )

    def __call__(self, frames, saturation, mean, std):  # type: ignore[no-untyped-def]
        if self.workers < 2 or len(frames) < 2:
            return [self._one(*clip) for clip in zip(frames, saturation, mean, std, strict=True)]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="clip-colour")
        return list(self._pool.map(self._one, frames, saturation, mean, std))


def _colour_jitter(frames, saturation, mean, std, spec: ClipSpec, device: str):  # type: ignore[no-untyped-def]
    """Saturation, then brightness/contrast and the weights' normalisation folded into the
    per-sample ``mean``/``std`` (see :func:`train_clip_pipeline`), laid out as ``spec.layout``.

    On the CPU one ``python_function`` (:func:`saturate_and_normalize` with OpenCV, on the
    pipeline's ``num_threads``), on the GPU ``fn.saturation`` + ``fn.crop_mirror_normalize``;
    the same values to within 0.3 grey levels (tested).
    """
    if device == "cpu":
        layout = _OUTPUT_LAYOUTS[spec.layout]
        stage = _CpuColourStage(layout, spec.normalized, Pipeline.current().num_threads)
        return fn.python_function(
            frames, saturation, mean, std, function=stage, batch_processing=True, output_layouts=layout
        )
    frames = fn.saturation(frames, saturation=saturation, dtype=types.FLOAT)
    return _normalize(frames, spec, mean=mean, std=std)


@pipeline_def(enable_conditionals=False)
def eval_clip_pipeline(  # type: ignore[no-untyped-def]
    spec: ClipSpec,
    device: str = "cpu",
    source: str = "frames",
    resized: bool = False,
    geometry: str = "resize",
    decoder: str = "mixed",
):
    """Evaluation: the centre ``spec.size`` square of the frame resized to ``spec.short_side``.

    Frames that come ``resized`` (from the cache) are only cropped. Others are resized in one
    step from the source window that becomes the crop: the same pixels as resizing the whole
    frame and then cropping, without resampling the discarded borders. ``geometry="resize"``:
    ``fn.resize`` of the window ``crop_start``/``crop_end`` (relative ``[y, x]``, from
    :func:`pipelines.video.clips.centre_crop_window`), antialiased when it shrinks. ``"warp"``, for
    windows that are only enlarged (antialiasing does nothing there): the same bilinear sampling
    as one warp with the window's ``affine`` (:func:`pipelines.video.clips.window_matrix`), which is
    cheaper on the CPU.
    """
    frames = _clip_frames(device, source, decoder)
    if resized:
        return _normalize(frames, spec, crop=(spec.size, spec.size), crop_pos_x=0.5, crop_pos_y=0.5)
    if geometry == "warp":
        return _normalize(_warp(frames, fn.external_source(name="affine", dtype=types.FLOAT), spec, device), spec)
    if geometry != "resize":
        raise ValueError(f"unknown eval geometry {geometry!r}; use 'resize' or 'warp'")
    crop_start, crop_end = (fn.external_source(name=name, dtype=types.FLOAT) for name in EVAL_INPUTS)
    frames = fn.resize(
        frames, size=[spec.size, spec.size], roi_start=crop_start, roi_end=crop_end, roi_relative=True, antialias=True
    )
    return _normalize(frames, spec)


@pipeline_def(enable_conditionals=False)
def train_clip_pipeline(  # type: ignore[no-untyped-def]
    spec: ClipSpec, device: str = "cpu", source: str = "frames", resized: bool = False, decoder: str = "mixed"
):
    """Training: random resized crop + small rotation + horizontal flip, colour jitter.

    One draw per clip (fed per sample), shared by all its frames. Crop, rescale, rotation and
    flip are one affine map (``affine``: 3x3 homogeneous, output pixel -> source pixel, built by
    :func:`pipelines.video.clips.augmentation_matrix`), so frames are resampled once: bilinear, without
    antialiasing, which is fine because the source is at most ~2x the crop (cached frames are at
    most 1.14x the crop size, rounded up to even; UCF101's 240p decoded directly gives crops of at most 2.1x).
    Brightness and contrast are per-channel affine maps, so they are folded into the
    normalisation's per-sample ``mean``/``std`` (:func:`pipelines.video.clips.jitter_normalization`);
    only saturation, which mixes channels, needs a step of its own (:func:`_colour_jitter`).

    Speed on the CPU (16 frames of 112 px, per clip, one core): the warp (see :func:`_warp`)
    ~1.5 ms; saturation + normalisation + layout ~1 ms (``fn.saturation`` to float and
    ``crop_mirror_normalize`` took ~3.2 ms). Saturation values past 0..255 are not clipped before
    normalising (like brightness/contrast).
    """
    del resized  # the affine map includes the resize
    frames = _clip_frames(device, source, decoder)
    affine, saturation, mean, std = (fn.external_source(name=name, dtype=types.FLOAT) for name in AUGMENTATION_INPUTS)
    frames = _warp(frames, affine, spec, device)
    return _colour_jitter(frames, saturation, mean, std, spec, device)


def build_clip_pipeline(  # type: ignore[no-untyped-def]
    spec: ClipSpec,
    device: str,
    source: str,
    *,
    resized: bool = False,
    geometry: str = "resize",
    decoder: str = "mixed",
    batch_size: int,
    num_threads: int,
    seed: int = 0,
    prefetch: int = 2,
):
    """Build the pipeline for ``spec.mode`` on ``device`` ("cpu"|"gpu") fed by ``source``
    (``geometry``: how evaluation resamples frames that are not ``resized``, see
    :func:`eval_clip_pipeline`; ``decoder``: where ``"encoded"`` sources are decoded on a GPU
    pipeline, see :func:`_clip_frames`).

    Fed with ``pipe.feed_input`` one batch at a time (a smaller last batch is fine), so the
    loader knows exactly which (video, clip) each output sample is. ``prefetch``: DALI's
    ``prefetch_queue_depth``, the batches in flight under :class:`ScheduledPipeline` (1 where the
    executor cannot keep outputs alive, DALI < 1.44).
    """
    if spec.mode == "train":
        definition, extra = train_clip_pipeline, {}
    else:
        definition, extra = eval_clip_pipeline, {"geometry": geometry}
    pipe = definition(
        spec=spec,
        device=device,
        source=source,
        resized=resized,
        decoder=decoder,
        **extra,
        batch_size=batch_size,
        num_threads=num_threads,
        device_id=_current_cuda_device() if device == "gpu" else None,
        seed=seed,
        prefetch_queue_depth=max(1, prefetch) if outputs_outlive_next_run() else 1,
        **_executor(python_stage=spec.mode == "train" and device == "cpu"),
    )
    pipe.build()
    return pipe


def _executor(python_stage: bool) -> dict[str, bool]:
    """Executor settings. The dynamic executor keeps an output buffer alive while Python
    references it, so the loader hands DALI's output to torch without a copy (see
    :func:`outputs_outlive_next_run`); without it (DALI < 1.44) a pipeline with a
    ``python_function`` must run synchronously."""
    if outputs_outlive_next_run():
        return {"exec_dynamic": True}
    return {"exec_async": False, "exec_pipelined": False} if python_stage else {}


def _current_cuda_device() -> int:
    """The CUDA device torch uses in this process (the local rank's GPU under DDP)."""
    import torch

    return torch.cuda.current_device()


def interrupted(error: RuntimeError) -> bool:
    """Whether a pipeline error is the user's Ctrl-C: DALI reports a KeyboardInterrupt raised
    inside a Python stage (the CPU ``python_function``) as a RuntimeError, which the loader would
    otherwise take for a failed decode route and send the batch to PyAV, swallowing the Ctrl-C."""
    return "KeyboardInterrupt" in str(error)


class ScheduledPipeline:
    """A pipeline fed one batch at a time and run ahead of its consumer (DALI's scheduled API).

    :meth:`submit` feeds a batch and schedules it (``schedule_run`` returns at once: DALI decodes
    and augments in its own threads and on the GPU while the caller trains on an earlier batch);
    :meth:`result` returns that batch's output, waiting only if it is not ready. DALI's first
    ``schedule_run`` runs ``prefetch_queue_depth`` iterations, so batches are held back until that
    many are fed; a pipeline asked for a result before then (a route used by few batches) is
    filled up with repeats of its last batch, whose outputs are dropped. Outputs come back in
    submission order; results asked out of order (a batch re-run to isolate a bad file while
    later ones are in flight) are kept until asked for. A failed batch raises from :meth:`result`
    and leaves the pipeline usable. The fed arrays are kept alive until their result is taken
    (the sources are ``no_copy``).
    """

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        depth = pipe.prefetch_queue_depth
        self.depth = int(depth) if isinstance(depth, int) else 1
        self._tickets = itertools.count()
        self._held: list[int] = []  # fed before DALI's first (prefetching) schedule_run
        self._scheduled: deque[int | None] = deque()  # in output order; None: filler
        self._ready: dict[int, Any] = {}
        self._inputs: dict[int, dict[str, list[Any]]] = {}
        self._dropped: set[int] = set()
        self._started = False

    def _feed(self, inputs: dict[str, list[Any]]) -> None:
        for name, data in inputs.items():
            self.pipe.feed_input(name, data, layout="FHWC" if name == "frames" else None)

    def submit(self, inputs: dict[str, list[Any]]) -> int:
        """Feed one batch (input name -> one array per sample) and schedule it; returns its ticket."""
        self._feed(inputs)
        ticket = next(self._tickets)
        self._inputs[ticket] = inputs
        if self._started:
            self.pipe.schedule_run()
            self._scheduled.append(ticket)
        else:
            self._held.append(ticket)
            if len(self._held) == self.depth:
                self._start(fillers=0)
        return ticket

    def _start(self, fillers: int) -> None:
        for _ in range(fillers):
            self._feed(self._inputs[self._held[-1]])
        self.pipe.schedule_run()
        self._scheduled.extend([*self._held, *([None] * fillers)])
        self._held.clear()
        self._started = True

    def result(self, ticket: int) -> Any:
        """The (single) output of a submitted batch; raises the batch's error if it failed."""
        if not self._started:
            self._start(fillers=self.depth - len(self._held))
        while ticket not in self._ready:
            if not self._scheduled:
                raise KeyError(f"batch {ticket} was never submitted or was already taken")
            head = self._scheduled.popleft()
            try:
                (output,) = self.pipe.outputs()
            except RuntimeError as exc:
                if interrupted(exc):
                    raise KeyboardInterrupt from exc
                output = exc
            if head in self._dropped:
                self._dropped.discard(head)
                del self._inputs[head]
            elif head is not None:
                self._ready[head] = output
        output = self._ready.pop(ticket)
        del self._inputs[ticket]
        if isinstance(output, Exception):
            raise output
        return output

    def discard(self, ticket: int) -> None:
        """Forget a submitted batch whose result will not be asked for (an iteration stopped
        early): its output is dropped when it comes, its inputs kept alive until then."""
        if ticket in self._ready:
            del self._ready[ticket], self._inputs[ticket]
        elif ticket in self._held or ticket in self._scheduled:
            self._dropped.add(ticket)

    def run(self, inputs: dict[str, list[Any]]) -> Any:
        """Submit one batch and wait for it."""
        return self.result(self.submit(inputs))
