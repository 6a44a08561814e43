"""Why the models decide as they do: feature-group permutation importance, impurity importances and
coefficients for the classical models; Grad-CAM and temporal occlusion for the CNNs.

Everything reads the saved models of a run (``RUN_DIR/models/<model>.joblib`` / ``.pt``) and the
test split only. A missing or unloadable model becomes a note in the report, never a crash.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import f1_score

from analysis import plots
from core.backend import Backend
from core.runfiles import RunPaths
from models.deep.build import clip_specs
from models.deep.config import DeepConfig
from models.deep.train import load_trained_model
from pipelines.data.records import read_videos_csv, records_in_split
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


def _final_estimator(model: Any) -> Any:
    inner = getattr(model, "model_", model)
    return inner.steps[-1][1] if hasattr(inner, "steps") else inner


def top_features(
    model: Any, name: str, feature_names: Sequence[str], class_names: Sequence[str], k: int = 12
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
    import joblib

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
        model_path = paths.models_dir / f"{name}.joblib"
        if not model_path.exists():
            section.notes.append(f"{name}: no saved model ({model_path.name} missing), so no feature importances.")
            continue
        try:
            model = joblib.load(model_path)
            group_importance[name] = group_permutation_importance(
                model.predict, X, y, features.feature_groups, n_classes, seed=seed
            )
            top = top_features(model, name, features.feature_names, [str(c) for c in features.class_names])
            if top:
                tops[name] = top
        except Exception as exc:  # a model from another library version must not stop the report
            section.notes.append(f"{name}: could not explain the saved model ({type(exc).__name__}: {exc}).")
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


class _FramesAsBatch:
    """Adapter for Grad-CAM on the per-frame 2D CNN: the T frames of one clip are the "batch" seen by
    the 2D target layer, while the output is the clip's single logit vector."""

    def __new__(cls, model: Any) -> Any:
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, frames: torch.Tensor) -> torch.Tensor:
                return self.model(frames.unsqueeze(0))

        return Wrapped()


def gradcam_maps(model: Any, architecture: str, clip: Any, target: int) -> np.ndarray:
    """Grad-CAM heat maps (T, H, W) in 0..1 for class ``target`` at the last residual stage.

    cnn3d: pytorch-grad-cam on the 5-D input with 3-D activations (a spatio-temporal map, upsampled
    over time and space). cnn2d: per-frame maps with per-frame channel weights (see _FramesAsBatch).
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

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


def temporal_occlusion(model: Any, architecture: str, clip: Any, target: int, segments: int) -> np.ndarray:
    """Drop in the probability of class ``target`` when each of ``segments`` equal runs of frames is
    replaced by the mean colour (0 after normalisation)."""
    import torch

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


def _test_clips(
    run_dir: Path, meta: dict[str, Any], per_class: int, max_classes: int, backend: Any
) -> list[tuple[Any, int, str]]:
    """Up to ``per_class`` test clips (one centred clip per video, on the CPU) for each of the first
    ``max_classes`` classes, as (clip, label, video_id)."""

    known = set(DeepConfig.__dataclass_fields__)
    config = DeepConfig(**{k: v for k, v in meta["config"].items() if k in known})
    spec = replace(clip_specs(config)["test"], test_clips=1)
    records = records_in_split(read_videos_csv(RunPaths(run_dir).videos_csv), "test")
    chosen: list[Any] = []
    for label in sorted({r.label for r in records})[:max_classes]:
        chosen += sorted((r for r in records if r.label == label), key=lambda r: r.video_id)[:per_class]
    loader = make_clip_loader(chosen, spec, backend, batch_size=4, num_threads=1, stage="analysis")
    clips = []
    for batch in loader:
        for i in range(len(batch.video_ids)):
            clips.append((batch.clips[i].detach().cpu().float(), int(batch.labels[i]), str(batch.video_ids[i])))
    return clips


def deep_section(
    run_dir: str | os.PathLike[str],
    out_dir: Path,
    models: Sequence[str],
    backend: Backend,
    *,
    gradcam_per_class: int = 2,
    occlusion_per_class: int = 6,
    segments: int = 4,
    max_classes: int = 8,
) -> Section:
    """Grad-CAM overlays and temporal occlusion curves for each trained CNN of the run, on the first
    ``max_classes`` classes (the figures stay readable and the cost bounded on 101 classes)."""
    section = Section()
    paths = RunPaths(run_dir)
    occlusion: dict[str, dict[str, np.ndarray]] = {}
    for name in models:
        model_path = paths.models_dir / f"{name}.pt"
        if not model_path.exists():
            section.notes.append(f"{name}: no saved model ({model_path.name} missing), so no Grad-CAM or occlusion.")
            continue
        try:
            import torch

            device = backend.torch_device()
            model, meta = load_trained_model(model_path, device)
            architecture = meta.get("architecture", name)
            layout = meta.get("input_layout", "BTCHW" if architecture == "cnn2d" else "BCTHW")
            class_names = list(meta["class_names"])
            clips = _test_clips(Path(run_dir), meta, max(gradcam_per_class, occlusion_per_class), max_classes, backend)
            shown = sorted({label for _, label, _ in clips})
            if len(shown) < len(class_names):
                section.notes.append(
                    f"{name}: Grad-CAM and occlusion cover the first {len(shown)} of {len(class_names)} classes."
                )
            if not clips:
                section.notes.append(f"{name}: no test clip could be decoded for Grad-CAM.")
                continue
            rows, drops = [], {}
            seen: dict[int, int] = {}
            for clip, label, video_id in clips:
                clip = clip.to(device)
                seen[label] = seen.get(label, 0) + 1
                n_frames = clip.shape[0 if architecture == "cnn2d" else 1]
                drops.setdefault(label, []).append(
                    temporal_occlusion(model, architecture, clip, label, min(segments, n_frames))
                )
                if seen[label] <= gradcam_per_class:
                    with_grad = gradcam_maps(model, architecture, clip, label)
                    with torch.no_grad():
                        predicted = int(model(clip.unsqueeze(0)).argmax(1)[0])
                    frames = _clip_frames(clip.cpu().numpy(), layout, meta["mean"], meta["std"])
                    caption = f"{class_names[label]}\n→ {class_names[predicted]}\n{video_id.split('/')[-1][:18]}"
                    rows.append((caption, frames, with_grad))
            kind = (
                "per-frame maps (ResNet-18 layer4 on every frame)"
                if architecture == "cnn2d"
                else "a spatio-temporal map (R3D-18 layer4, upsampled over time and space)"
            )
            path = plots.overlay_grid(
                rows, out_dir / f"gradcam_{name}.png", title=f"Grad-CAM, {name}: true class → prediction"
            )
            section.figures.append(
                plots.ReportFigure(
                    path.name,
                    f"Where {name} looks (Grad-CAM)",
                    f"Red = regions that raise the score of the true class most; {kind}; rows are test clips "
                    f"({gradcam_per_class} per class), labelled true class → predicted class.",
                )
            )
            occlusion[name] = {class_names[label]: np.mean(values, axis=0) for label, values in sorted(drops.items())}
        except Exception as exc:
            section.notes.append(f"{name}: could not explain the saved model ({type(exc).__name__}: {exc}).")
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
