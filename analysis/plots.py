"""Report figures (matplotlib, Agg): one function per figure, each writes one PNG atomically.

Inputs are plain data (model names, numbers, arrays, class names), never file paths of results,
so every figure can be drawn from synthetic data in tests. Class names, not label numbers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis.stats import Interval  # noqa: E402
from core.runfiles import atomic_path  # noqa: E402

FAMILY_COLOURS = {"classical": "#3b75af", "deep": "#e1812c"}
MODEL_COLOURS = {
    "svm": "#1f4e79",
    "rf": "#2e75b6",
    "knn": "#5b9bd5",
    "logreg": "#4a9a8c",
    "gb": "#70ad47",
    "cnn2d": "#e1812c",
    "cnn3d": "#c0392b",
}
DPI = 110
LOG_SPAN = 30.0  # use a log axis when the largest value is this many times the smallest
MAX_CLASS_PANELS = 12  # per-class ROC panels drawn at most (the rest are summarised by the macro curve)

plt.rcParams.update({"axes.spines.top": False, "axes.spines.right": False, "font.size": 10, "axes.titlesize": 11})


def model_colour(name: str, index: int = 0) -> str:
    return MODEL_COLOURS.get(name, plt.get_cmap("tab10")(index % 10))


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _needs_log(values: Sequence[float | None]) -> bool:
    positive = [v for v in values if v is not None and v > 0]
    return len(positive) > 1 and max(positive) / min(positive) >= LOG_SPAN


def _bar_labels(ax: plt.Axes, bars, texts: Sequence[str]) -> None:  # type: ignore[no-untyped-def]
    for bar, text in zip(bars, texts, strict=True):
        ax.annotate(
            text,
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
        )


def interval_bars(
    models: Sequence[str],
    intervals: Mapping[str, Mapping[str, Interval]],
    metrics: Sequence[str],
    labels: Mapping[str, str],
    path: str | os.PathLike[str],
    *,
    title: str,
) -> Path:
    """Grouped bars of ``metrics`` per model with 95 % bootstrap CI whiskers."""
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(models) * len(metrics) / 1.5), 4.2))
    width = 0.8 / len(metrics)
    x = np.arange(len(models))
    hatches = ["", "//", "..", "xx", "\\\\"]
    for m, metric in enumerate(metrics):
        est = np.array([intervals[n][metric].estimate or 0.0 for n in models])
        low = np.array(
            [
                intervals[n][metric].low if intervals[n][metric].low is not None else e
                for n, e in zip(models, est, strict=True)
            ]
        )
        high = np.array(
            [
                intervals[n][metric].high if intervals[n][metric].high is not None else e
                for n, e in zip(models, est, strict=True)
            ]
        )
        bars = ax.bar(
            x + (m - (len(metrics) - 1) / 2) * width,
            est,
            width,
            label=labels.get(metric, metric),
            color=[model_colour(n, i) for i, n in enumerate(models)],
            hatch=hatches[m % len(hatches)],
            edgecolor="white",
            yerr=[est - low, high - est],
            capsize=3,
            error_kw={"elinewidth": 1},
        )
        _bar_labels(ax, bars, [f"{v:.2f}" for v in est])
    ax.set_xticks(x, models)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("score on the test videos")
    ax.set_title(title)
    if len(metrics) > 1:
        ax.legend(loc="lower right", fontsize=8, frameon=True)
    return save_figure(fig, path)


def _macro_roc(y_true: np.ndarray, scores: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray] | None:
    from sklearn.metrics import roc_curve

    grid = np.linspace(0, 1, 201)
    curves = []
    for c in range(n_classes):
        positive = y_true == c
        if positive.all() or not positive.any():
            return None
        fpr, tpr, _ = roc_curve(positive, scores[:, c])
        curves.append(np.interp(grid, fpr, tpr))
    return grid, np.mean(curves, axis=0)


def roc_curves(
    models: Sequence[str],
    truths: Mapping[str, np.ndarray],
    scores: Mapping[str, np.ndarray],
    class_names: Sequence[str],
    macro_path: str | os.PathLike[str],
    per_class_path: str | os.PathLike[str],
) -> tuple[Path, Path]:
    """Macro one-vs-rest ROC per model (TPR averaged over classes on a common FPR grid) and one
    panel per class with every model."""
    from sklearn.metrics import auc, roc_curve

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for i, name in enumerate(models):
        curve = _macro_roc(truths[name], scores[name], len(class_names))
        if curve is None:
            continue
        ax.plot(curve[0], curve[1], color=model_colour(name, i), label=f"{name} (AUC {auc(*curve):.2f})")
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="chance")
    ax.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        title="ROC, macro one-vs-rest",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    ax.legend(fontsize=8, loc="lower right")
    macro = save_figure(fig, macro_path)

    shown = list(class_names)[:MAX_CLASS_PANELS]
    cols = min(3, len(shown))
    rows = int(np.ceil(len(shown) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.6 * rows), squeeze=False)
    for c, class_name in enumerate(shown):
        ax = axes[c // cols][c % cols]
        for i, name in enumerate(models):
            positive = truths[name] == c
            if positive.all() or not positive.any():
                continue
            fpr, tpr, _ = roc_curve(positive, scores[name][:, c])
            ax.plot(fpr, tpr, color=model_colour(name, i), label=f"{name} ({auc(fpr, tpr):.2f})", lw=1.3)
        ax.plot([0, 1], [0, 1], ls=":", color="grey")
        ax.set(title=f"{class_name} vs rest", xlim=(0, 1), ylim=(0, 1.02), xlabel="FPR", ylabel="TPR")
        ax.legend(fontsize=7, loc="lower right")
    for k in range(len(shown), rows * cols):
        axes[k // cols][k % cols].axis("off")
    if len(class_names) > len(shown):
        fig.suptitle(f"first {len(shown)} of {len(class_names)} classes", fontsize=9)
    fig.tight_layout()
    return macro, save_figure(fig, per_class_path)


def confusion_matrices(
    models: Sequence[str],
    matrices: Mapping[str, np.ndarray],
    class_names: Sequence[str],
    path: str | os.PathLike[str],
    *,
    normalise: bool,
) -> Path:
    """One confusion matrix per model (rows: true class, columns: predicted class)."""
    cols = min(4, len(models))
    rows = int(np.ceil(len(models) / cols))
    n = len(class_names)
    cell = max(2.8, min(6.0, 0.45 * n + 1.6))
    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols, cell * rows), squeeze=False)
    annotate = n <= 12
    for k, name in enumerate(models):
        ax = axes[k // cols][k % cols]
        counts = np.asarray(matrices[name], dtype=np.float64)
        values = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalise else counts
        ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalise else max(1.0, values.max()))
        ax.set_title(name)
        ticks = np.arange(n)
        ax.set_xticks(ticks, class_names if annotate else [], rotation=45, ha="right", fontsize=8)
        ax.set_yticks(ticks, class_names if annotate else [], fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if annotate:
            threshold = (1 if normalise else max(1.0, values.max())) / 2
            for i in range(n):
                for j in range(n):
                    text = f"{values[i, j]:.2f}" if normalise else f"{int(values[i, j])}"
                    ax.text(
                        j,
                        i,
                        text,
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if values[i, j] > threshold else "black",
                    )
    for k in range(len(models), rows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.suptitle(
        "Confusion matrices, " + ("row-normalised (recall per class on the diagonal)" if normalise else "counts")
    )
    fig.tight_layout()
    return save_figure(fig, path)


def value_bars(
    models: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    path: str | os.PathLike[str],
    *,
    title: str,
    ylabel: str,
    formatter=lambda v: f"{v:.3g}",  # type: ignore[no-untyped-def]
) -> Path:
    """Bars per model for one or more series (e.g. fit and predict memory); log axis when the
    values span orders of magnitude; missing values are marked "n/a"."""
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(models) * len(series)), 4))
    x = np.arange(len(models))
    width = 0.8 / max(1, len(series))
    all_values = [v for values in series.values() for v in values]
    log = _needs_log(all_values)
    hatches = ["", "//", "..", "xx"]
    for s, (label, values) in enumerate(series.items()):
        heights = [v if v is not None and v > 0 else 0.0 for v in values]
        bars = ax.bar(
            x + (s - (len(series) - 1) / 2) * width,
            heights,
            width,
            label=label,
            color=[model_colour(n, i) for i, n in enumerate(models)],
            hatch=hatches[s % len(hatches)],
            edgecolor="white",
        )
        _bar_labels(ax, bars, [formatter(v) if v is not None and v > 0 else "n/a" for v in values])
    if log:
        ax.set_yscale("log")
    ax.set_xticks(x, models)
    ax.set_ylabel(ylabel + (" (log scale)" if log else ""))
    ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize=8)
    ax.margins(y=0.15)
    return save_figure(fig, path)


def learning_curves(
    curves: Mapping[str, Sequence[tuple[int, float, float]]],
    families: Mapping[str, str],
    path: str | os.PathLike[str],
) -> Path:
    """Macro-F1 (mean +- std over seeds) against the number of training videos; a panel per family."""
    panels = [f for f in ("classical", "deep") if any(families[m] == f for m in curves)] or ["classical"]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False, sharey=True)
    for p, family in enumerate(panels):
        ax = axes[0][p]
        for i, (name, points) in enumerate(curves.items()):
            if families[name] != family or not points:
                continue
            n, mean, std = (np.array(v, dtype=float) for v in zip(*sorted(points), strict=True))
            colour = model_colour(name, i)
            ax.plot(n, mean, marker="o", color=colour, label=name)
            ax.fill_between(n, mean - std, mean + std, color=colour, alpha=0.18)
        ax.set(title=f"{family} models", xlabel="training videos", ylim=(0, 1.05))
        if p == 0:
            ax.set_ylabel("test macro-F1 (mean ± std over seeds)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)


def pareto_front(costs: Sequence[float], scores: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats on both lower cost and higher score, by cost."""
    order = sorted(range(len(costs)), key=lambda i: (costs[i], -scores[i]))
    front, best = [], -np.inf
    for i in order:
        if scores[i] > best:
            front.append(i)
            best = scores[i]
    return front


def accuracy_vs_cost(
    models: Sequence[str],
    seconds_per_video: Sequence[float],
    macro_f1: Sequence[float],
    model_bytes: Sequence[float | None],
    path: str | os.PathLike[str],
) -> Path:
    """Macro-F1 against inference time per video (log x), marker area ~ model size, Pareto front."""
    fig, ax = plt.subplots(figsize=(7, 4.8))
    sizes = np.array([b if b else 1.0 for b in model_bytes], dtype=float)
    area = 40 + 600 * (np.log10(sizes) - np.log10(sizes.min())) / max(1e-9, np.ptp(np.log10(sizes)))
    for i, name in enumerate(models):
        ax.scatter(
            seconds_per_video[i],
            macro_f1[i],
            s=area[i],
            color=model_colour(name, i),
            alpha=0.75,
            edgecolor="black",
            lw=0.5,
        )
        size_text = _human_bytes(model_bytes[i]) if model_bytes[i] else "size n/a"
        ax.annotate(
            f"{name}\n{size_text}",
            (seconds_per_video[i], macro_f1[i]),
            xytext=(6, 4),
            textcoords="offset points",
            fontsize=8,
        )
    front = pareto_front(list(seconds_per_video), list(macro_f1))
    ax.plot(
        [seconds_per_video[i] for i in front],
        [macro_f1[i] for i in front],
        ls="--",
        color="black",
        lw=1,
        label="Pareto front (nothing is both faster and better)",
    )
    if all(s > 0 for s in seconds_per_video):
        ax.set_xscale("log")
    ax.set(
        xlabel="inference seconds per video (model only, log scale)",
        ylabel="test macro-F1",
        ylim=(0, 1.08),
        title="Accuracy versus cost (marker area ~ model size)",
    )
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)


def embedding_scatter(
    points: np.ndarray, labels: np.ndarray, class_names: Sequence[str], path: str | os.PathLike[str], *, title: str
) -> Path:
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for c, name in enumerate(class_names):
        mask = labels == c
        if mask.any():
            ax.scatter(
                points[mask, 0], points[mask, 1], s=22, color=cmap(c % cmap.N), label=name, alpha=0.85, edgecolor="none"
            )
    ax.set(title=title, xticks=[], yticks=[])
    if len(class_names) <= 20:
        ax.legend(fontsize=8, markerscale=1.2, loc="best")
    return save_figure(fig, path)


def embed_2d(X: np.ndarray, method: str, seed: int = 0) -> np.ndarray:
    """2-D t-SNE or UMAP of standardised rows; neighbourhood sizes shrink for tiny sample counts."""
    from sklearn.preprocessing import StandardScaler

    X = StandardScaler().fit_transform(np.asarray(X, dtype=np.float64))
    n = len(X)
    if n < 4:
        raise ValueError(f"{n} points are too few for a 2-D embedding (need at least 4)")
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(1.0, (n - 1) / 3)))
        return TSNE(n_components=2, perplexity=perplexity, random_state=seed, init="pca", max_iter=500).fit_transform(X)
    if method == "umap":
        import umap

        neighbours = int(min(15, max(2, n - 1)))
        reducer = umap.UMAP(
            n_components=2, n_neighbors=neighbours, random_state=seed, init="spectral" if n > 20 else "random", n_jobs=1
        )
        return reducer.fit_transform(X)
    raise ValueError(f"unknown embedding method {method!r}; use tsne or umap")


def importance_bars(
    values: Mapping[str, Mapping[str, tuple[float, float]]], path: str | os.PathLike[str], *, title: str, xlabel: str
) -> Path:
    """Horizontal grouped bars: for each model, one bar per item (feature group) with a std whisker."""
    models = list(values)
    items = sorted({item for v in values.values() for item in v})
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.35 * len(items) * len(models) + 0.6))
    height = 0.8 / max(1, len(models))
    y = np.arange(len(items))
    for i, name in enumerate(models):
        mean = [values[name].get(item, (0.0, 0.0))[0] for item in items]
        std = [values[name].get(item, (0.0, 0.0))[1] for item in items]
        ax.barh(
            y + (i - (len(models) - 1) / 2) * height,
            mean,
            height,
            xerr=std,
            color=model_colour(name, i),
            label=name,
            capsize=2,
        )
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, items)
    ax.set(title=title, xlabel=xlabel)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return save_figure(fig, path)


def top_feature_bars(
    panels: Mapping[str, Sequence[tuple[str, float]]], path: str | os.PathLike[str], *, title: str
) -> Path:
    """One panel per model: its top features (name, value), largest magnitude at the top."""
    n = len(panels)
    k = max((len(v) for v in panels.values()), default=1)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 0.8 + 0.3 * k), squeeze=False)
    for i, (name, items) in enumerate(panels.items()):
        ax = axes[0][i]
        labels = [label for label, _ in items][::-1]
        values = [value for _, value in items][::-1]
        ax.barh(np.arange(len(items)), values, color=["#c0392b" if v < 0 else model_colour(name, i) for v in values])
        ax.set_yticks(np.arange(len(items)), labels, fontsize=7)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_title(name)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)


def overlay_grid(
    rows: Sequence[tuple[str, np.ndarray, np.ndarray]], path: str | os.PathLike[str], *, title: str, max_frames: int = 8
) -> Path:
    """Grad-CAM overlays: each row is (caption, frames (T,H,W,3) in 0..1, heat maps (T,H,W) in 0..1)."""
    t = min(max_frames, max(r[1].shape[0] for r in rows))
    fig, axes = plt.subplots(len(rows), t, figsize=(1.6 * t, 1.6 * len(rows) + 0.5), squeeze=False)
    for r, (caption, frames, heat) in enumerate(rows):
        picks = np.linspace(0, frames.shape[0] - 1, t).round().astype(int)
        for j, f in enumerate(picks):
            ax = axes[r][j]
            ax.imshow(frames[f])
            ax.imshow(heat[min(f, len(heat) - 1)], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(caption, fontsize=7, rotation=0, ha="right", va="center")
            if r == 0:
                ax.set_title(f"frame {f + 1}", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def occlusion_curves(curves: Mapping[str, Mapping[str, np.ndarray]], path: str | os.PathLike[str]) -> Path:
    """Per model a panel: drop in the true-class probability when each temporal segment is masked, per class."""
    n = len(curves)
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 3.8), squeeze=False, sharey=True)
    for i, (model, per_class) in enumerate(curves.items()):
        ax = axes[0][i]
        cmap = plt.get_cmap("tab10")
        for c, (class_name, drop) in enumerate(per_class.items()):
            segments = np.arange(1, len(drop) + 1)
            ax.plot(segments, drop, marker="o", color=cmap(c % 10), label=class_name)
        ax.axhline(0, color="black", lw=0.8)
        ax.set(title=model, xlabel="masked segment (early → late)")
        ax.set_xticks(segments)
        if i == 0:
            ax.set_ylabel("drop in true-class probability")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def _human_bytes(value: float | None) -> str:
    if value is None:
        return "n/a"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(value) < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def human_bytes(value: float | None) -> str:
    return _human_bytes(value)


def human_seconds(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value < 1e-3:
        return f"{value * 1e6:.0f} µs"
    if value < 1:
        return f"{value * 1e3:.1f} ms"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min"


@dataclass(frozen=True)
class ReportFigure:
    """A figure of the report: file name inside the report folder, title, and a "what this shows" line."""

    file: str
    title: str
    caption: str
