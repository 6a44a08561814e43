"""DALI pipelines that turn sampled video frames into model-ready clips, on the CPU or the GPU.

One definition per pipeline, the same for both devices (``device="cpu"|"gpu"``). Frames enter
in one of two ways (``source``):

* ``"frames"``: decoded uint8 frames (T, H, W, C), fed by the loader through
  ``fn.external_source`` (PyAV-decoded or read from the decoded-clip cache); copied to the GPU
  when ``device="gpu"``.
* ``"encoded"``: the file's bytes plus the frame indices to decode, decoded by
  ``fn.decoders.video`` on the CPU (libavcodec: VP8, VP9, MJPEG) or with NVDEC
  (``device="mixed"``, output on the GPU: also H.264, HEVC, MPEG-4, AV1).

Augmentation parameters are drawn per clip in NumPy (:func:`pipelines.clips.draw_augmentation`)
and fed as per-sample arguments; DALI broadcasts a per-sample argument over all frames of a
sequence, so every frame of a clip gets the same crop, flip, rotation and colour jitter.
"""

from __future__ import annotations

from nvidia.dali import fn, pipeline_def, types

from pipelines.clips import ClipSpec

SOURCES = ("frames", "encoded")
# Per-sample arguments fed by the loader: training augmentation, evaluation crop window.
AUGMENTATION_INPUTS = ("affine", "saturation", "mean", "std")
EVAL_INPUTS = ("crop_start", "crop_end")

_OUTPUT_LAYOUTS = {"BTCHW": "FCHW", "BCTHW": "CFHW", "BTHWC": "FHWC"}


def _clip_frames(device: str, source: str):  # type: ignore[no-untyped-def]
    """The clip's frames as a (F, H, W, C) uint8 sequence on ``device``.

    The frames and bytes are fed ``no_copy``: DALI reads the loader's arrays in place (the
    loader runs each batch to completion while it holds them), saving a copy per clip.
    """
    if source == "frames":
        frames = fn.external_source(name="frames", layout="FHWC", dtype=types.UINT8, no_copy=True)
        return frames.gpu() if device == "gpu" else frames
    if source == "encoded":
        encoded = fn.external_source(name="encoded", dtype=types.UINT8, no_copy=True)
        indices = fn.external_source(name="indices", dtype=types.INT32)
        # pad_mode="none": a frame index past the end is an error (the loader then falls back to
        # PyAV), never silently black frames.
        return fn.decoders.video(encoded, frames=indices, pad_mode="none", device="mixed" if device == "gpu" else "cpu")
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


@pipeline_def(enable_conditionals=False)
def eval_clip_pipeline(  # type: ignore[no-untyped-def]
    spec: ClipSpec, device: str = "cpu", source: str = "frames", resized: bool = False, geometry: str = "resize"
):
    """Evaluation: the centre ``spec.size`` square of the frame resized to ``spec.short_side``.

    Frames that come ``resized`` (from the cache) are only cropped. Others are resized in one
    step from the source window that becomes the crop: the same pixels as resizing the whole
    frame and then cropping, without resampling the discarded borders. ``geometry="resize"``:
    ``fn.resize`` of the window ``crop_start``/``crop_end`` (relative ``[y, x]``, from
    :func:`pipelines.clips.centre_crop_window`), antialiased when it shrinks. ``"warp"``, for
    windows that are only enlarged (antialiasing does nothing there): the same bilinear sampling
    as one warp with the window's ``affine`` (:func:`pipelines.clips.window_matrix`), which is
    cheaper on the CPU.
    """
    frames = _clip_frames(device, source)
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
def train_clip_pipeline(spec: ClipSpec, device: str = "cpu", source: str = "frames", resized: bool = False):  # type: ignore[no-untyped-def]
    """Training: random resized crop + small rotation + horizontal flip, colour jitter.

    One draw per clip (fed per sample), shared by all its frames. Crop, rescale, rotation and
    flip are one affine map (``affine``: 3x3 homogeneous, output pixel -> source pixel, built by
    :func:`pipelines.clips.augmentation_matrix`), so frames are resampled once: bilinear, without
    antialiasing, which is fine because the source is at most ~2x the crop (cached frames are at
    1.14x the crop size; UCF101's 240p decoded directly gives crops of at most 2.1x).
    Brightness and contrast are per-channel affine maps, so they are folded into the
    normalisation's per-sample ``mean``/``std`` (:func:`pipelines.clips.jitter_normalization`);
    only saturation, which mixes channels, is an operator of its own.

    Speed on the CPU (16 frames of 112 px, per clip, one core): the warp (see :func:`_warp`)
    ~1.5 ms; saturation writes float (~2 ms; to uint8 ~5 ms), which ``crop_mirror_normalize``
    then scales and lays out. Saturation values past 0..255 are therefore not clipped before
    normalising (like brightness/contrast).
    """
    del resized  # the affine map includes the resize
    frames = _clip_frames(device, source)
    affine, saturation, mean, std = (fn.external_source(name=name, dtype=types.FLOAT) for name in AUGMENTATION_INPUTS)
    frames = _warp(frames, affine, spec, device)
    frames = fn.saturation(frames, saturation=saturation, dtype=types.FLOAT)
    return _normalize(frames, spec, mean=mean, std=std)


def build_clip_pipeline(  # type: ignore[no-untyped-def]
    spec: ClipSpec,
    device: str,
    source: str,
    *,
    resized: bool = False,
    geometry: str = "resize",
    batch_size: int,
    num_threads: int,
    seed: int = 0,
):
    """Build the pipeline for ``spec.mode`` on ``device`` ("cpu"|"gpu") fed by ``source``
    (``geometry``: how evaluation resamples frames that are not ``resized``; see
    :func:`eval_clip_pipeline`).

    Fed with ``pipe.feed_input`` one batch at a time (a smaller last batch is fine), so the
    loader knows exactly which (video, clip) each output sample is.
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
        **extra,
        batch_size=batch_size,
        num_threads=num_threads,
        device_id=_current_cuda_device() if device == "gpu" else None,
        seed=seed,
        prefetch_queue_depth=1,
        # The dynamic executor keeps an output buffer alive while Python references it, so the
        # loader hands DALI's output to torch without a copy (see outputs_outlive_next_run).
        **({"exec_dynamic": True} if outputs_outlive_next_run() else {}),
    )
    pipe.build()
    return pipe


def _current_cuda_device() -> int:
    """The CUDA device torch uses in this process (the local rank's GPU under DDP)."""
    import torch

    return torch.cuda.current_device()
