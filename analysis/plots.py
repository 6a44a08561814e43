"""Report figures (matplotlib, Agg): one function per figure, each writes one PNG atomically.

Inputs are plain data (model names, numbers, arrays, class names), never file paths of results,
so every figure can be drawn from synthetic data in tests. Class names, not label numbers.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from analysis.names import human_name  # noqa: E402
from analysis.stats import Interval  # noqa: E402
from core.runfiles import atomic_path  # noqa: E402

# Model colours (Okabe-Ito, colour-blind safe, plus a purple) are the same in every figure; class
# colours come from another set (none within RGB distance 85 of a model colour) with markers, so a
# class is never read as a model.
MODEL_COLOURS = {
    "svm": "#0072B2",
    "rf": "#009E73",
    "knn": "#CC79A7",
    "logreg": "#E69F00",
    "gb": "#56B4E9",
    "cnn2d": "#D55E00",
    "cnn3d": "#6A3D9A",
}
EXTRA_MODEL_COLOURS = ("#000000", "#999933", "#882255")
CLASS_COLOURS = (
    "#33a02c",
    "#f0027f",
    "#8c564b",
    "#fc8d62",
    "#aec7e8",
    "#a6d854",
    "#f7b6d2",
    "#8ca252",
    "#fdc086",
    "#7fc97f",
)
CLASS_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
DPI = 200
VECTOR_FORMAT = "svg"  # every figure also as a vector copy beside its PNG
LOG_SPAN = 30.0  # use a log axis when the largest value is this many times the smallest
MAX_CLASS_PANELS = 12  # per-class ROC panels drawn at most (the rest are summarised by the macro curve)
LABEL_WIDTH = 16  # characters per line of a model name under a bar

plt.rcParams.update({"axes.spines.top": False, "axes.spines.right": False, "font.size": 10, "axes.titlesize": 11})
plt.rcParams["svg.fonttype"] = "none"  # text stays text in the vector copies (smaller, searchable)


def model_colour(name: str, index: int = 0) -> str:
    return MODEL_COLOURS.get(name, EXTRA_MODEL_COLOURS[index % len(EXTRA_MODEL_COLOURS)])


def class_colour(index: int) -> str:
    return CLASS_COLOURS[index % len(CLASS_COLOURS)]


def class_marker(index: int) -> str:
    return CLASS_MARKERS[(index // len(CLASS_COLOURS)) % len(CLASS_MARKERS)]


def model_label(name: str, width: int | None = None) -> str:
    """The human name of a model code, wrapped to ``width`` characters per line if given."""
    text = human_name(name)
    return text if width is None else textwrap.fill(text, width)


def vector_path(path: str | os.PathLike[str]) -> Path:
    return Path(path).with_suffix(f".{VECTOR_FORMAT}")


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``path`` (PNG, DPI dots per inch) and its vector copy beside it, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    with atomic_path(vector_path(path)) as tmp:
        fig.savefig(tmp, format=VECTOR_FORMAT, bbox_inches="tight")
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
    fig, ax = plt.subplots(figsize=(max(7.0, 1.2 * len(models) * len(metrics) / 1.5), 4.4))
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
    ax.set_xticks(x, [model_label(n, LABEL_WIDTH) for n in models], fontsize=8)
    ax.set_ylim(0, 1.25)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("score on the test videos")
    ax.set_title(title)
    if len(metrics) > 1:  # above the bars (scores reach 1.0), below the title
        ax.legend(loc="upper center", ncol=len(metrics), fontsize=8, frameon=False)
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
        ax.plot(curve[0], curve[1], color=model_colour(name, i), label=f"{model_label(name)} (AUC {auc(*curve):.2f})")
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
            ax.plot(fpr, tpr, color=model_colour(name, i), label=f"{model_label(name)} ({auc(fpr, tpr):.2f})", lw=1.3)
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
        image = ax.imshow(values, cmap="Blues", vmin=0, vmax=1 if normalise else max(1.0, values.max()))
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the row" if normalise else "videos")
        ax.set_title(model_label(name, 28), fontsize=9)
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


def p_value_matrix(
    models: Sequence[str],
    p_values: Mapping[tuple[str, str], float],
    cell_text: Mapping[tuple[str, str], str],
    path: str | os.PathLike[str],
    *,
    title: str,
    alpha: float = 0.05,
) -> Path:
    """Symmetric matrix of (adjusted) p-values between models, shaded by -log10 p with a colour bar;
    ``cell_text[(row, column)]`` is written in each cell, with * where p < alpha."""
    index = {m: i for i, m in enumerate(models)}
    n = len(models)
    strength = np.full((n, n), np.nan)
    for (a, b), p in p_values.items():
        strength[index[a], index[b]] = strength[index[b], index[a]] = -np.log10(np.clip(p, 1e-3, 1.0))
    fig, ax = plt.subplots(figsize=(0.85 * n + 2.6, 0.75 * n + 1.8))
    image = ax.imshow(strength, cmap="Greens", vmin=0, vmax=3)
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, ticks=[0, 1, -np.log10(alpha), 2, 3])
    bar.ax.set_yticklabels(["p = 1", "0.1", f"{alpha}", "0.01", "≤ 0.001"])
    for (a, b), text in cell_text.items():
        value = strength[index[a], index[b]]
        mark = "*" if p_values.get((a, b), p_values.get((b, a), 1.0)) < alpha else ""
        colour = "white" if value > 1.8 else "black"
        ax.text(index[b], index[a], text + mark, ha="center", va="center", fontsize=6, color=colour)
    labels = [model_label(m, LABEL_WIDTH) for m in models]
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def difference_intervals(
    pairs: Sequence[tuple[str, str, Interval, bool]], path: str | os.PathLike[str], *, xlabel: str
) -> Path:
    """One row per pair (A, B, interval of A - B, significant): estimate and 95 % interval."""
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(pairs) + 1.4))
    y = np.arange(len(pairs))[::-1]
    for row, (_, _, interval, significant) in zip(y, pairs, strict=True):
        if interval.estimate is None:
            continue
        low = interval.low if interval.low is not None else interval.estimate
        high = interval.high if interval.high is not None else interval.estimate
        colour = "#1a1a1a" if significant else "#8c8c8c"
        ax.plot([low, high], [row, row], color=colour, lw=2)
        ax.plot(interval.estimate, row, "o", color=colour, ms=5)
    ax.axvline(0, color="#c00000", lw=0.8, ls="--")
    ax.set_yticks(y, [f"{model_label(a)} − {model_label(b)}" for a, b, _, _ in pairs], fontsize=7)
    ax.set(xlabel=xlabel, title="Paired differences (black: told apart at the group level, grey: not)")
    fig.tight_layout()
    return save_figure(fig, path)


def value_bars(
    models: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    path: str | os.PathLike[str],
    *,
    title: str,
    ylabel: str,
    formatter: Callable[[float], str] = lambda v: f"{v:.3g}",
) -> Path:
    """Bars per model for one or more series (e.g. fit and predict memory); log axis when the
    values span orders of magnitude; missing values are marked "n/a"."""
    fig, ax = plt.subplots(figsize=(max(7.0, 1.2 * len(models) * max(1, len(series)) ** 0.5), 4.2))
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
    ax.set_xticks(x, [model_label(n, LABEL_WIDTH) for n in models], fontsize=8)
    ax.set_ylabel(ylabel + (" (log scale)" if log else ""))
    ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize=8)
    ax.margins(y=0.15)
    return save_figure(fig, path)


@dataclass(frozen=True)
class CurvePoint:
    """One learning-curve point: training videos, mean and std of test macro-F1 over ``n_seeds`` seeds."""

    n_train_videos: int
    mean: float
    std: float
    n_seeds: int


def learning_curves(
    curves: Mapping[str, Sequence[CurvePoint]],
    families: Mapping[str, str],
    path: str | os.PathLike[str],
) -> Path:
    """Macro-F1 against the number of training videos, a panel per family; a band (mean +- std)
    only where a point has several seeds (one seed has no spread to show)."""
    panels = [f for f in ("classical", "deep") if any(families[m] == f for m in curves)] or ["classical"]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.8 * len(panels), 4.2), squeeze=False, sharey=True)
    for p, family in enumerate(panels):
        ax = axes[0][p]
        for i, (name, points) in enumerate(curves.items()):
            if families[name] != family or not points:
                continue
            ordered = sorted(points, key=lambda point: point.n_train_videos)
            n = np.array([point.n_train_videos for point in ordered], dtype=float)
            mean = np.array([point.mean for point in ordered])
            std = np.array([point.std for point in ordered])
            colour = model_colour(name, i)
            seeds = max(point.n_seeds for point in ordered)
            ax.plot(n, mean, marker="o", color=colour, label=f"{model_label(name)} ({seeds} seed{'s' * (seeds > 1)})")
            several = np.array([point.n_seeds > 1 for point in ordered])
            if several.any():
                ax.fill_between(n, mean - std, mean + std, where=several, color=colour, alpha=0.18, lw=0)
        ax.set(title=f"{family} models", xlabel="training videos", ylim=(0, 1.05))
        if p == 0:
            ax.set_ylabel("test macro-F1 (band: ± std over seeds)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)


def training_history(
    histories: Mapping[str, Sequence[tuple[int, float | None, float | None]]], path: str | os.PathLike[str]
) -> Path:
    """Per CNN and epoch: training loss (left) and validation macro-F1 (right)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, (name, rows) in enumerate(histories.items()):
        epochs = [epoch for epoch, _, _ in rows]
        for ax, values in ((axes[0], [loss for _, loss, _ in rows]), (axes[1], [f1 for _, _, f1 in rows])):
            kept = [(e, v) for e, v in zip(epochs, values, strict=True) if v is not None]
            if kept:
                ax.plot(*zip(*kept, strict=True), marker="o", color=model_colour(name, i), label=model_label(name))
    axes[0].set(title="Training loss", xlabel="epoch", ylabel="cross-entropy (label-smoothed)")
    axes[1].set(title="Validation macro-F1", xlabel="epoch", ylabel="macro-F1", ylim=(0, 1.05))
    for ax in axes:
        ax.xaxis.get_major_locator().set_params(integer=True)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
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
    """Macro-F1 against inference time per video (log x), marker area ~ model size, Pareto front.
    Models are named in the legend (with their size), so labels never overlap the points."""
    fig, ax = plt.subplots(figsize=(9, 4.8))
    sizes = np.array([b if b else 1.0 for b in model_bytes], dtype=float)
    area = 40 + 600 * (np.log10(sizes) - np.log10(sizes.min())) / max(1e-9, np.ptp(np.log10(sizes)))
    for i, name in enumerate(models):
        size_text = _human_bytes(model_bytes[i]) if model_bytes[i] else "size n/a"
        ax.scatter(
            seconds_per_video[i],
            macro_f1[i],
            s=area[i],
            color=model_colour(name, i),
            alpha=0.8,
            edgecolor="black",
            lw=0.5,
            label=f"{model_label(name)}, {size_text}",
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
    legend = ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    for handle in legend.legend_handles:  # one marker size in the legend, whatever the model size
        if hasattr(handle, "set_sizes"):
            handle.set_sizes([40])
    return save_figure(fig, path)


def embedding_scatter(
    points: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    groups: Sequence[str],
    path: str | os.PathLike[str],
    *,
    title: str,
) -> Path:
    """The same 2-D map twice: coloured by class (left) and by test group (right). Clusters that
    follow the groups rather than the classes are scenes, not actions."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    for c, name in enumerate(class_names):
        mask = labels == c
        if mask.any():
            axes[0].scatter(
                points[mask, 0],
                points[mask, 1],
                s=24,
                color=class_colour(c),
                marker=class_marker(c),
                label=name,
                alpha=0.9,
                edgecolor="none",
            )
    group_names = sorted(set(groups))
    group_array = np.asarray(groups)
    palette = plt.get_cmap("tab20")
    for g, group in enumerate(group_names):
        mask = group_array == group
        axes[1].scatter(
            points[mask, 0],
            points[mask, 1],
            s=24,
            color=palette(g % 20),
            marker=CLASS_MARKERS[(g // 20) % 8],
            label=group,
            alpha=0.9,
            edgecolor="none",
        )
    axes[0].set_title("by class", fontsize=10)
    axes[1].set_title(f"by test group ({len(group_names)} groups)", fontsize=10)
    for ax, count in ((axes[0], len(class_names)), (axes[1], len(group_names))):
        ax.set(xticks=[], yticks=[])
        if count <= 20:
            ax.legend(fontsize=7, markerscale=1.1, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
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
            label=model_label(name),
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
        ax.set_title(model_label(name))
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
            heat_image = ax.imshow(heat[min(f, len(heat) - 1)], cmap="jet", alpha=0.45, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(caption, fontsize=7, rotation=0, ha="right", va="center")
            if r == 0:
                ax.set_title(f"frame {f + 1}", fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    bar = fig.colorbar(heat_image, ax=axes, fraction=0.02, pad=0.01)
    bar.set_label("Grad-CAM: 0 = no influence, 1 = strongest evidence", fontsize=7)
    bar.solids.set_alpha(1.0)
    return save_figure(fig, path)


def occlusion_curves(curves: Mapping[str, Mapping[str, np.ndarray]], path: str | os.PathLike[str]) -> Path:
    """Per model a panel: drop in the true-class probability when each temporal segment is masked, per class."""
    n = len(curves)
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 3.8), squeeze=False, sharey=True)
    for i, (model, per_class) in enumerate(curves.items()):
        ax = axes[0][i]
        for c, (class_name, drop) in enumerate(per_class.items()):
            segments = np.arange(1, len(drop) + 1)
            ax.plot(segments, drop, marker=class_marker(c) if c >= 10 else "o", color=class_colour(c), label=class_name)
        ax.axhline(0, color="black", lw=0.8)
        ax.set(title=model_label(model), xlabel="masked segment (early → late)")
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
