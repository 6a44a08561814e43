"""Why the models decide as they do: feature-group permutation importance, impurity importances and
coefficients for the classical models; Grad-CAM and temporal occlusion for the CNNs.

Everything reads the saved models of a run (``RUN_DIR/models/<model>.skops`` / ``.pt``) and the
test split only. A missing or unloadable model becomes a note in the report, never a crash.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from sklearn.metrics import f1_score
from torch import nn

from analysis import plots
from analysis.names import human_name
from core.backend import Backend
from core.runfiles import RunPaths
from models.classical.estimators import ClassicalModel
from models.classical.persist import load_classical_model, model_file
from models.deep.build import clip_specs
from models.deep.config import DeepConfig
from models.deep.train import load_trained_model
from pipelines.data.records import VideoRecord, read_videos_csv, records_in_split
from pipelines.features.store import current_features
from pipelines.video.loader import make_clip_loader

FEATURE_GROUPS = ("motion", "appearance", "colour", "temporal")


@dataclass
class Section:
    """Figures (relative to the report folder) and plain-words notes for one part of the report."""

    figures: list[plots.ReportFigure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- classical models


def group_permutation_importance(
    predict: Callable[[np.ndarray], np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    feature_groups: Sequence[str],
    n_classes: int,
    *,
    n_repeats: int = 5,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Drop in test macro-F1 when all columns of one feature group are permuted together
    (the same row permutation for every column of the group, so within-group structure survives).
    Returns group -> (mean drop, std over repeats)."""
    X = np.asarray(X)
    y = np.asarray(y)
    labels = np.arange(n_classes)
    baseline = f1_score(y, predict(X), labels=labels, average="macro", zero_division=0)
    groups = np.asarray(feature_groups)
    rng = np.random.default_rng(seed)
    out = {}
    for group in [g for g in FEATURE_GROUPS if g in set(groups)] + sorted(set(groups) - set(FEATURE_GROUPS)):
        columns = np.flatnonzero(groups == group)
        drops = []
        for _ in range(n_repeats):
            shuffled = X.copy()
            shuffled[:, columns] = X[rng.permutation(len(X))][:, columns]
            drops.append(baseline - f1_score(y, predict(shuffled), labels=labels, average="macro", zero_division=0))
        out[group] = (float(np.mean(drops)), float(np.std(drops)))
    return out


def _final_estimator(model: ClassicalModel) -> object:
    inner = getattr(model, "model_", model)
    return inner.steps[-1][1] if hasattr(inner, "steps") else inner


def top_features(
    model: ClassicalModel, name: str, feature_names: Sequence[str], class_names: Sequence[str], k: int = 12
) -> list[tuple[str, float]] | None:
    """Top-``k`` impurity importances (rf, gb) or signed logistic-regression coefficients on
    standardised features, as (label, value); None when the model exposes neither."""
    estimator = _final_estimator(model)
    feature_names = [str(f) for f in feature_names]
    if name in ("rf", "gb"):
        values = getattr(estimator, "feature_importances_", None)
        if values is None:
            return None
        values = np.asarray(values, dtype=np.float64)
        order = np.argsort(-values)[:k]
        return [(feature_names[i], float(values[i])) for i in order]
    if name == "logreg":
        coef = getattr(estimator, "coef_", None)
        if coef is None:
            return None
        coef = np.atleast_2d(np.asarray(coef, dtype=np.float64))
        classes = list(class_names)
        fitted = [int(c) for c in getattr(model, "classes_", range(len(classes)))]
        if coef.shape[0] == 1:  # binary: positive coefficients favour the second class
            rows = [classes[fitted[-1]]]
        else:
            rows = [classes[c] for c in fitted]
        flat = [
            (f"{feature_names[j]} → {rows[i]}", coef[i, j]) for i in range(coef.shape[0]) for j in range(coef.shape[1])
        ]
        flat.sort(key=lambda item: -abs(item[1]))
        return [(label, float(value)) for label, value in flat[:k]]
    return None


def classical_section(
    run_dir: str | os.PathLike[str], out_dir: Path, models: Sequence[str], *, seed: int = 0
) -> Section:
    """Permutation importance by feature group for every classical model, top features for rf/gb/logreg."""
    section = Section()
    paths = RunPaths(run_dir)
    features, problem = current_features(run_dir)
    if features is None:
        section.notes.append(f"{problem}, so no feature importances could be computed.")
        return section
    test = features.mask("test")
    X, y = features.X[test], features.labels[test]
    n_classes = len(features.class_names)
    group_importance: dict[str, dict[str, tuple[float, float]]] = {}
    tops: dict[str, list[tuple[str, float]]] = {}
    for name in models:
        model_path = model_file(paths.models_dir, name)
        if not model_path.exists():
            section.notes.append(
                f"{human_name(name)}: no saved model ({model_path.name} missing), so no feature importances."
            )
            continue
        try:
            model = load_classical_model(model_path)
            group_importance[name] = group_permutation_importance(
                model.predict, X, y, features.feature_groups, n_classes, seed=seed
            )
            top = top_features(model, name, features.feature_names, [str(c) for c in features.class_names])
            if top:
                tops[name] = top
        except Exception as exc:  # a model from another library version must not stop the report
            section.notes.append(
                f"{human_name(name)}: could not explain the saved model ({type(exc).__name__}: {exc})."
            )
    if group_importance:
        path = plots.importance_bars(
            group_importance,
            out_dir / "importance_feature_groups.png",
            title="Permutation importance by feature group (test split)",
            xlabel="drop in macro-F1 when the group is shuffled",
        )
        section.figures.append(
            plots.ReportFigure(
                path.name,
                "Which kinds of features the classical models rely on",
                "Each bar is the drop in test macro-F1 when every column of one feature group is shuffled across "
                "videos (5 repeats, whisker = std); larger means the model leans on that group; near zero means it "
                "could do without it.",
            )
        )
    if tops:
        path = plots.top_feature_bars(
            tops,
            out_dir / "importance_top_features.png",
            title="Impurity importances (rf, gb) and coefficients on standardised features (logreg)",
        )
        section.figures.append(
            plots.ReportFigure(
                path.name,
                "Single features the tree models and logistic regression weigh most",
                "Tree models: impurity importance (biased towards features with many split points). "
                "Logistic regression: "
                "signed coefficient of a standardised feature for one class (red = evidence against that class).",
            )
        )
    return section


# ----------------------------------------------------------------------------- deep models


def _clip_frames(clip: np.ndarray, layout: str, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(T, H, W, 3) in 0..1 from one normalised clip of the model's layout."""
    frames = clip.transpose(0, 2, 3, 1) if layout == "BTCHW" else clip.transpose(1, 2, 3, 0)
    return np.clip(frames * np.asarray(std) + np.asarray(mean), 0.0, 1.0)


class _FramesAsBatch(nn.Module):
    """Adapter for Grad-CAM on the per-frame 2D CNN: the T frames of one clip are the "batch" seen by
    the 2D target layer, while the output is the clip's single logit vector."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.model(frames.unsqueeze(0))


def gradcam_maps(model: nn.Module, architecture: str, clip: torch.Tensor, target: int) -> np.ndarray:
    """Grad-CAM heat maps (T, H, W) in 0..1 for class ``target`` at the last residual stage.

    cnn3d: pytorch-grad-cam on the 5-D input with 3-D activations (a spatio-temporal map, upsampled
    over time and space). cnn2d: per-frame maps with per-frame channel weights (see _FramesAsBatch).
    """
    for param in model.parameters():  # frozen layers still need gradients to flow for the maps
        param.requires_grad_(True)
    if architecture == "cnn2d":
        wrapped = _FramesAsBatch(model)
        with GradCAM(model=wrapped, target_layers=[model.backbone.layer4]) as cam:
            maps = cam(input_tensor=clip.detach().clone(), targets=[ClassifierOutputTarget(int(target))])
        return np.asarray(maps, dtype=np.float32)  # (T, H, W)
    with GradCAM(model=model, target_layers=[model.backbone.layer4]) as cam:
        maps = cam(input_tensor=clip.detach().clone().unsqueeze(0), targets=[ClassifierOutputTarget(int(target))])
    return np.asarray(maps, dtype=np.float32)[0]  # (T, H, W)


def temporal_occlusion(
    model: nn.Module, architecture: str, clip: torch.Tensor, target: int, segments: int
) -> np.ndarray:
    """Drop in the probability of class ``target`` when each of ``segments`` equal runs of frames is
    replaced by the mean colour (0 after normalisation)."""
    time_axis = 0 if architecture == "cnn2d" else 1
    n_frames = clip.shape[time_axis]
    bounds = np.linspace(0, n_frames, segments + 1).round().astype(int)
    batch = [clip]
    for s in range(segments):
        masked = clip.clone()
        index = [slice(None)] * clip.ndim
        index[time_axis] = slice(bounds[s], max(bounds[s + 1], bounds[s] + 1))
        masked[tuple(index)] = 0.0
        batch.append(masked)
    with torch.no_grad():
        probs = torch.softmax(model(torch.stack(batch)).float(), dim=1)[:, target].cpu().numpy()
    return probs[0] - probs[1:]


def pick_examples(records: Sequence[VideoRecord], per_class: int, max_classes: int) -> list[VideoRecord]:
    """Up to ``per_class`` test videos of each of the first ``max_classes`` classes, drawn from as many
    different groups as possible: one video per group in turn, each class starting at another group,
    so the examples show several actors and scenes rather than one."""
    chosen: list[VideoRecord] = []
    for k, label in enumerate(sorted({r.label for r in records})[:max_classes]):
        by_group: dict[str, list[VideoRecord]] = {}
        for record in sorted((r for r in records if r.label == label), key=lambda r: (r.group, r.video_id)):
            by_group.setdefault(record.group, []).append(record)
        names = sorted(by_group)
        order = names[k % len(names) :] + names[: k % len(names)]
        picked: list[VideoRecord] = []
        while len(picked) < per_class and any(by_group[g] for g in order):
            picked += [by_group[g].pop(0) for g in order if by_group[g]][: per_class - len(picked)]
        chosen += picked
    return chosen


@dataclass(frozen=True)
class TestClip:
    clip: torch.Tensor  # one normalised clip in the model's layout, on the CPU
    label: int
    video_id: str
    group: str


def _test_clips(
    run_dir: Path, meta: dict[str, Any], per_class: int, max_classes: int, backend: Backend
) -> list[TestClip]:
    """One centred clip (on the CPU) of each video :func:`pick_examples` chooses from the test split."""
    config = DeepConfig.from_saved(meta["config"])
    spec = replace(clip_specs(config)["test"], test_clips=1)
    records = records_in_split(read_videos_csv(RunPaths(run_dir).videos_csv), "test")
    chosen = pick_examples(records, per_class, max_classes)
    group_of = {r.video_id: r.group for r in chosen}
    loader = make_clip_loader(chosen, spec, backend, batch_size=4, num_threads=1, stage="analysis")
    clips = []
    for batch in loader:
        for i in range(len(batch.video_ids)):
            video_id = str(batch.video_ids[i])
            clips.append(
                TestClip(batch.clips[i].detach().cpu().float(), int(batch.labels[i]), video_id, group_of[video_id])
            )
    return clips


@dataclass
class _Explained:
    """Grad-CAM rows (caption, frames, maps) and occlusion drops per class label of one CNN."""

    rows: list[tuple[str, np.ndarray, np.ndarray]] = field(default_factory=list)
    drops: dict[int, list[np.ndarray]] = field(default_factory=dict)


def _explain(
    model: nn.Module,
    meta: dict[str, Any],
    clips: Sequence[TestClip],
    device: torch.device,
    gradcam_per_class: int,
    segments: int,
) -> _Explained:
    architecture = meta.get("architecture", "cnn3d")
    layout = meta.get("input_layout", "BTCHW" if architecture == "cnn2d" else "BCTHW")
    class_names = list(meta["class_names"])
    explained = _Explained()
    seen: dict[int, int] = {}
    for example in clips:
        clip, label = example.clip.to(device), example.label
        seen[label] = seen.get(label, 0) + 1
        n_frames = clip.shape[0 if architecture == "cnn2d" else 1]
        explained.drops.setdefault(label, []).append(
            temporal_occlusion(model, architecture, clip, label, min(segments, n_frames))
        )
        if seen[label] <= gradcam_per_class:
            maps = gradcam_maps(model, architecture, clip, label)
            with torch.no_grad():
                predicted = int(model(clip.unsqueeze(0)).argmax(1)[0])
            frames = _clip_frames(clip.cpu().numpy(), layout, meta["mean"], meta["std"])
            caption = (
                f"{class_names[label]}\n→ {class_names[predicted]}\ngroup {example.group}"
                f"\n{example.video_id.split('/')[-1][:18]}"
            )
            explained.rows.append((caption, frames, maps))
    return explained


def deep_section(
    run_dir: str | os.PathLike[str],
    out_dir: Path,
    models: Sequence[str],
    backend: Backend,
    *,
    gradcam_per_class: int = 2,
    occlusion_per_class: int = 6,
    segments: int = 4,
    max_classes: int = 12,
) -> Section:
    """Grad-CAM overlays and temporal occlusion curves for each trained CNN of the run, on test videos
    of every class (the first ``max_classes``: the figures stay readable and the cost bounded on 101
    classes) drawn from as many test groups as there are (:func:`pick_examples`)."""
    section = Section()
    paths = RunPaths(run_dir)
    occlusion: dict[str, dict[str, np.ndarray]] = {}
    for name in models:
        model_path = paths.models_dir / f"{name}.pt"
        if not model_path.exists():
            section.notes.append(
                f"{human_name(name)}: no saved model ({model_path.name} missing), so no Grad-CAM or occlusion."
            )
            continue
        try:
            device = backend.torch_device()
            model, meta = load_trained_model(model_path, device)
            class_names = list(meta["class_names"])
            clips = _test_clips(Path(run_dir), meta, max(gradcam_per_class, occlusion_per_class), max_classes, backend)
            if not clips:
                section.notes.append(f"{human_name(name)}: no test clip could be decoded for Grad-CAM.")
                continue
            shown = sorted({c.label for c in clips})
            if len(shown) < len(class_names):
                section.notes.append(
                    f"{human_name(name)}: Grad-CAM and occlusion cover the first {len(shown)} of "
                    f"{len(class_names)} classes."
                )
            explained = _explain(model, meta, clips, device, gradcam_per_class, segments)
            section.figures.append(_gradcam_figure(name, meta, explained, out_dir, gradcam_per_class))
            occlusion[name] = {
                class_names[label]: np.mean(values, axis=0) for label, values in sorted(explained.drops.items())
            }
        except Exception as exc:  # a model from another version must not stop the report
            section.notes.append(
                f"{human_name(name)}: could not explain the saved model ({type(exc).__name__}: {exc})."
            )
    if occlusion:
        path = plots.occlusion_curves(occlusion, out_dir / "occlusion_temporal.png")
        section.figures.append(
            plots.ReportFigure(
                path.name,
                "Which part of a clip the CNNs need (temporal occlusion)",
                "Each point: mean drop in the true-class probability when one time segment of the test clip is blanked "
                "(mean colour), averaged over test clips of a class. Flat curves: the model decides from any moment; "
                "a peak: it needs that phase of the motion.",
            )
        )
    return section


def _gradcam_figure(
    name: str, meta: dict[str, Any], explained: _Explained, out_dir: Path, per_class: int
) -> plots.ReportFigure:
    kind = (
        "per-frame maps (ResNet-18 layer4 on every frame)"
        if meta.get("architecture", name) == "cnn2d"
        else "a spatio-temporal map (R3D-18 layer4, upsampled over time and space)"
    )
    groups = sorted({caption.split("\n")[2] for caption, _, _ in explained.rows})
    path = plots.overlay_grid(
        explained.rows, out_dir / f"gradcam_{name}.png", title=f"Grad-CAM, {human_name(name)}: true class → prediction"
    )
    return plots.ReportFigure(
        path.name,
        f"Where {human_name(name)} looks (Grad-CAM)",
        f"Red = regions that raise the score of the true class most (colour bar); {kind}; rows are test clips "
        f"({per_class} per class, from {len(groups)} test group(s), each class starting at another group), labelled "
        "true class → predicted class, group and file.",
    )
