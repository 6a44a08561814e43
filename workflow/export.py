"""Export a trained model of a run for deployment, checked against the run's own model.

CNNs: ONNX or TorchScript (``models/deep/export.py``). The exported model's class probabilities on a
few of the run's test clips must match PyTorch's within ``tolerance``; otherwise nothing is written
and the command fails. Beside the file, ``<file>.json`` says what the model reads and returns: the
clip protocol (frames, size, sampling, stride, clips per video, layout), the class names in output
order and the normalisation.

Classical models: the no-code skops format of the run (``models/classical/persist.py``), reloaded and
checked bit for bit on the test split's features, with the FeatureSpec, feature names and class names
in the JSON beside it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.backend import Backend, library_versions
from core.runfiles import RunPaths, atomic_path, atomic_write_json
from models.classical.estimators import MODEL_NAMES as CLASSICAL_MODELS
from models.classical.persist import TRUSTED_TYPES, load_classical_model, model_file, save_classical_model
from models.classical.train import split_features
from models.deep import export as deep_export
from models.deep.config import MODELS as DEEP_MODELS
from models.deep.infer import TrainedNetwork, load_network
from pipelines.data.records import read_videos_csv, records_in_split
from pipelines.features.store import load_features
from pipelines.video.clips import stride_text
from pipelines.video.loader import make_clip_loader

FORMATS = (*deep_export.FORMATS, "skops")
TOLERANCE = 1e-3  # largest difference in a class probability between the export and PyTorch


@dataclass(frozen=True)
class ExportReport:
    """What ``export`` wrote and how closely the written model reproduces the run's model."""

    model: str
    format: str
    file: Path
    sidecar: Path
    checked: int  # test clips (CNNs) or test videos (classical) compared
    max_difference: float

    def text(self) -> str:
        deep = self.format in deep_export.FORMATS
        described = "clip protocol, class names and normalisation" if deep else "feature settings and class names"
        unit = "test clips" if deep else "test videos"
        return (
            f"{self.model} -> {self.file} ({self.format}); {described} in {self.sidecar}\n"
            f"checked on {self.checked} {unit}: largest score difference from the run's model {self.max_difference:.2e}"
        )


def default_format(model: str) -> str:
    return "skops" if model in CLASSICAL_MODELS else "onnx"


def _check_format(model: str, fmt: str) -> None:
    if model in CLASSICAL_MODELS and fmt != "skops":
        raise ValueError(f"{model} is a classical model: it exports as skops (a format that runs no code), not {fmt}")
    if model in DEEP_MODELS and fmt not in deep_export.FORMATS:
        raise ValueError(f"{model} is a CNN: export it as {' or '.join(deep_export.FORMATS)}, not {fmt}")
    if model not in CLASSICAL_MODELS + DEEP_MODELS:
        raise ValueError(f"unknown model {model!r}; use one of {', '.join(CLASSICAL_MODELS + DEEP_MODELS)}")


def sample_test_clips(run_dir: Path, trained: TrainedNetwork, backend: Backend, count: int) -> torch.Tensor:
    """Up to ``count`` clips (on the CPU) of the run's test videos in the model's test protocol."""
    records = records_in_split(read_videos_csv(RunPaths(run_dir).videos_csv), "test")
    if not records:
        raise ValueError(f"{RunPaths(run_dir).videos_csv} has no test video to check the export on")
    wanted = records[: max(1, -(-count // trained.clip.clips_per_video))]
    loader = make_clip_loader(wanted, trained.clip, backend, batch_size=count, num_threads=trained.config.num_threads,
                              stage="export")  # fmt: skip
    clips = [batch.clips.detach().cpu().float() for batch in loader]
    if not clips:
        raise ValueError(f"no test clip of {run_dir} could be decoded to check the export (see rejected.csv)")
    return torch.cat(clips)[:count]


def _deep_sidecar(
    trained: TrainedNetwork, fmt: str, file: Path, clips: torch.Tensor, difference: float
) -> dict[str, Any]:
    clip = trained.clip
    shape = ["batch", *clips.shape[1:]]
    spacing = (
        "one per equal segment"
        if clip.sampling == "segment"
        else f"a window of {stride_text(clip.stride, clip.stride_fps)}"
    )
    return {
        "model": trained.config.model,
        "format": fmt,
        "file": file.name,
        "class_names": trained.class_names,
        "input": {
            "name": deep_export.INPUT_NAME,
            "layout": clip.layout,
            "shape": shape,
            "dtype": "float32",
            "meaning": "normalised RGB clips: (pixel / 255 - mean) / std per channel",
        },
        "output": {
            "name": deep_export.OUTPUT_NAME,
            "meaning": "class logits in class_names order; softmax, then average the probabilities of a video's clips",
        },
        "normalization": {"mean": list(clip.mean or ()), "std": list(clip.std or ())},
        "clip": {**asdict(clip), "short_side": clip.short_side, "clips_per_video": clip.clips_per_video},
        "protocol": (
            f"{clip.clips_per_video} clips x 1 crop per video: {clip.frames} frames each "
            f"({spacing}), "
            f"evenly spaced over the video; shorter side resized to {clip.short_side} px, centre {clip.size} px crop"
        ),
        "check": {"test_clips": int(len(clips)), "max_probability_difference": difference, "tolerance": TOLERANCE},
        "versions": library_versions(),
    }


def _export_deep(run_dir: Path, model: str, fmt: str, backend: Backend, out_dir: Path, count: int) -> ExportReport:
    if fmt == "onnx":
        deep_export.check_onnx_available()
    path = RunPaths(run_dir).models_dir / f"{model}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; train it with `python cli.py deep --run {run_dir} --model {model}`")
    trained = load_network(path, torch.device("cpu"))
    clips = sample_test_clips(run_dir, trained, backend, count)
    reference = deep_export.torch_probabilities(trained.network, clips)
    target = out_dir / f"{model}{deep_export.SUFFIXES[fmt]}"
    with atomic_path(target) as tmp:
        deep_export.export_network(trained.network, clips[:2], tmp, fmt)
        exported = deep_export.exported_probabilities(tmp, fmt, clips)
        difference = float(np.abs(exported - reference).max())
        if not difference <= TOLERANCE:
            raise ValueError(
                f"the {fmt} export of {model} gives class probabilities up to {difference:.2e} away from PyTorch's "
                f"on {len(clips)} test clips (tolerance {TOLERANCE:g}); nothing written"
            )
    sidecar = target.with_name(target.name + ".json")
    atomic_write_json(sidecar, _deep_sidecar(trained, fmt, target, clips, difference))
    return ExportReport(model, fmt, target, sidecar, int(len(clips)), difference)


def _export_classical(run_dir: Path, model: str, out_dir: Path) -> ExportReport:
    paths = RunPaths(run_dir)
    features = load_features(paths.features_npz)
    test = split_features(features)["test"]
    source = load_classical_model(model_file(paths.models_dir, model))
    target = out_dir / f"{model}.skops"
    with atomic_path(target) as tmp:
        save_classical_model(source, tmp)
        exported = load_classical_model(tmp)
        if not np.array_equal(exported.predict_proba(test.X), source.predict_proba(test.X)):
            raise ValueError(f"the reloaded skops export of {model} differs from the run's model; nothing written")
    sidecar = target.with_name(target.name + ".json")
    classes = [str(features.class_names[int(label)]) for label in source.classes_]
    info: dict[str, Any] = {
        "model": model,
        "format": "skops",
        "file": target.name,
        "class_names": classes,
        "score_columns": "predict_proba columns follow class_names",
        "feature_spec": None if features.spec is None else features.spec.to_dict(),
        "feature_names": [str(name) for name in features.feature_names],
        "trusted_types": list(TRUSTED_TYPES),
        "load": "models.classical.persist.load_classical_model(path) (actionbench installed): skops.io.load with "
        "the trusted_types above; no code from the file runs",
        "check": {"test_videos": len(test), "identical_predict_proba": True},
        "versions": library_versions(),
    }
    atomic_write_json(sidecar, info)
    return ExportReport(model, "skops", target, sidecar, len(test), 0.0)


def export_model(
    run_dir: str | os.PathLike[str],
    model: str,
    backend: Backend,
    *,
    fmt: str | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    check_clips: int = 8,
) -> ExportReport:
    """Export ``model`` of the run to ``out_dir`` (default ``RUN_DIR/export``); see the module docstring."""
    run_dir = Path(run_dir)
    fmt = fmt or default_format(model)
    _check_format(model, fmt)
    out = Path(out_dir) if out_dir is not None else RunPaths(run_dir).export_dir
    out.mkdir(parents=True, exist_ok=True)
    if model in DEEP_MODELS:
        return _export_deep(run_dir, model, fmt, backend, out, check_clips)
    return _export_classical(run_dir, model, out)
