"""The report of a run: tables, figures, statistics and interpretability in ``RUN_DIR/report/``.

:func:`analyze_run` reads only ``RUN_DIR/results/*.json`` (the schema of core/schema.py),
``features.npz``, ``embeddings/<model>.npz``, the saved models (interpretability), ``videos.csv``
and ``rejected.csv``, so results produced on other machines can be analysed here. The output
folder is self-contained and works offline: PNGs, CSV and Markdown tables and ``index.html``.
"""

from __future__ import annotations

import csv
import html
import io
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from analysis import plots
from analysis.interpret import Section, classical_section, deep_section
from analysis.plots import ReportFigure, human_bytes, human_seconds
from analysis.results import load_results
from analysis.stats import METRIC_LABELS, METRIC_NAMES, Interval, PairwiseTest, bootstrap_intervals, pairwise_mcnemar
from core.backend import Backend, resolve_backend
from core.runfiles import RunPaths, atomic_write_text, read_rejected
from core.schema import ModelResult
from pipelines.data.records import read_videos_csv
from pipelines.features.store import current_features

EMBEDDING_METHODS = {"tsne": "t-SNE", "umap": "UMAP"}
ALPHA = 0.05


# ----------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    better: str | None  # "high", "low" or None (not compared)
    fmt: Callable[[Any], str]


def _fmt_int(value: Any) -> str:
    return "n/a" if value is None else f"{int(value):,}"


def _fmt_flops(value: Any) -> str:
    if value is None:
        return "n/a"
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f}"


def _text(value: Any) -> str:
    return "n/a" if value is None else str(value)


COLUMNS = [
    *(
        Column(name, METRIC_LABELS[name], "high", lambda v: v.format() if isinstance(v, Interval) else "n/a")
        for name in METRIC_NAMES
    ),
    Column("fit_seconds", "Training time", "low", human_seconds),
    Column("infer_model", "Inference / video (model)", "low", human_seconds),
    Column("infer_e2e", "Inference / video (end to end)", "low", human_seconds),
    Column("model_bytes", "Model size", "low", human_bytes),
    Column("parameters", "Parameters", "low", _fmt_int),
    Column("flops", "FLOPs / clip", "low", _fmt_flops),
    Column("peak_fit", "Peak memory (training)", "low", human_bytes),
    Column("peak_predict", "Peak memory (inference)", "low", human_bytes),
    Column("memory_kind", "Memory measured as", None, _text),
    Column("backend", "Backend", None, _text),
    Column("device", "Device", None, _text),
    Column("n_videos", "Test videos", None, _fmt_int),
]


def model_row(result: ModelResult, intervals: dict[str, Interval]) -> dict[str, Any]:
    cost = result.cost
    return {
        "model": result.model,
        "family": result.family,
        **intervals,
        "fit_seconds": cost.fit_seconds,
        "infer_model": cost.inference_seconds_per_video_model,
        "infer_e2e": cost.inference_seconds_per_video_end_to_end,
        "model_bytes": cost.model_bytes,
        "parameters": cost.parameters,
        "flops": cost.flops_per_clip,
        "peak_fit": cost.peak_memory_fit_bytes,
        "peak_predict": cost.peak_memory_predict_bytes,
        "memory_kind": cost.memory_kind,
        "backend": result.backend,
        "device": result.device,
        "n_videos": result.metrics.n_videos,
    }


def _sort_value(value: Any) -> float | None:
    if isinstance(value, Interval):
        return value.estimate
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def best_per_column(rows: Sequence[dict[str, Any]]) -> dict[str, set[str]]:
    """Column key -> models holding the best value (ties included) among ``rows``."""
    best: dict[str, set[str]] = {}
    for column in COLUMNS:
        if column.better is None:
            continue
        values = {row["model"]: _sort_value(row[column.key]) for row in rows}
        present = {m: v for m, v in values.items() if v is not None}
        if len(present) < 2:
            continue
        target = max(present.values()) if column.better == "high" else min(present.values())
        best[column.key] = {m for m, v in present.items() if np.isclose(v, target)}
    return best


def table_csv(rows: Sequence[dict[str, Any]]) -> str:
    """Raw numbers: a metric column plus its _ci_low / _ci_high; costs in seconds and bytes."""
    header = ["model", "family"]
    for column in COLUMNS:
        header += (
            [column.key, f"{column.key}_ci_low", f"{column.key}_ci_high"]
            if column.key in METRIC_NAMES
            else [column.key]
        )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        line: list[Any] = [row["model"], row["family"]]
        for column in COLUMNS:
            value = row[column.key]
            if column.key in METRIC_NAMES:
                line += [value.estimate, value.low, value.high]
            else:
                line.append(value)
        writer.writerow(["" if v is None else v for v in line])
    return buffer.getvalue()


def table_markdown(rows: Sequence[dict[str, Any]]) -> str:
    best = best_per_column(rows)
    header = ["Model", "Family"] + [c.title for c in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["model"], row["family"]]
        for column in COLUMNS:
            text = column.fmt(row[column.key])
            cells.append(f"**{text}**" if row["model"] in best.get(column.key, set()) else text)
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Metrics: estimate [95 % bootstrap CI over test videos]. Bold: best in the column.")
    return "\n".join(lines) + "\n"


def table_html(rows: Sequence[dict[str, Any]]) -> str:
    best = best_per_column(rows)
    head = "".join(f"<th>{html.escape(t)}</th>" for t in ["Model", "Family"] + [c.title for c in COLUMNS])
    body = []
    for row in rows:
        cells = [f"<td><b>{html.escape(row['model'])}</b></td>", f"<td>{html.escape(row['family'])}</td>"]
        for column in COLUMNS:
            cls = ' class="best"' if row["model"] in best.get(column.key, set()) else ""
            cells.append(f"<td{cls}>{html.escape(column.fmt(row[column.key]))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def summary_table(rows: Sequence[dict[str, Any]]) -> str:
    """A one-screen plain-text table: model, accuracy and macro-F1 with CIs, training and inference time."""
    lines = [
        f"{'model':<7} {'family':<9} {'accuracy [95% CI]':<22} {'macro-F1 [95% CI]':<22} {'train':>8} {'ms/video':>9}"
    ]
    for row in rows:
        per_video = row["infer_e2e"] if row["infer_e2e"] is not None else row["infer_model"]
        lines.append(
            f"{row['model']:<7} {row['family']:<9} {row['accuracy'].format():<22} {row['macro_f1'].format():<22} "
            f"{human_seconds(row['fit_seconds']):>8} {(per_video or 0) * 1000:>9.2f}"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- HTML


CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#1f3b57;color:#fff;padding:18px 32px}header h1{margin:0;font-size:24px}
header p{margin:4px 0 0;opacity:.85}
nav{background:#fff;border-bottom:1px solid #ddd;padding:8px 32px;position:sticky;top:0}
nav a{margin-right:16px;color:#1f3b57;text-decoration:none;font-weight:600}
main{padding:8px 32px 48px;max-width:1400px}section{margin-top:28px}
h2{border-bottom:2px solid #1f3b57;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;background:#fff;margin:8px 0}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;white-space:nowrap}th{background:#eef2f6}
td.best{background:#d9f2d9;font-weight:700}.scroll{overflow-x:auto}
figure{display:inline-block;vertical-align:top;margin:10px 18px 18px 0;max-width:100%;background:#fff;padding:8px;
border:1px solid #e4e4e4}figure img{max-width:100%;height:auto}figcaption{font-size:13px;max-width:720px}
figcaption b{display:block;margin-bottom:2px}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 10px;margin:6px 0;font-size:14px}
.verdicts li{margin:3px 0}.muted{color:#666;font-size:13px}code{background:#eee;padding:0 3px}
"""


def _figure_html(fig: ReportFigure) -> str:
    return (
        f'<figure><img src="{html.escape(fig.file)}" alt="{html.escape(fig.title)}">'
        f"<figcaption><b>{html.escape(fig.title)}</b>What this shows: {html.escape(fig.caption)}</figcaption></figure>"
    )


def _notes_html(notes: Sequence[str]) -> str:
    return "".join(f'<div class="note">{html.escape(n)}</div>' for n in notes)


def _simple_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


# ----------------------------------------------------------------------------- the pieces


def _dataset_summary(run_dir: Path) -> tuple[str, list[str]]:

    paths = RunPaths(run_dir)
    if not paths.videos_csv.exists():
        return "", ["videos.csv is missing: no dataset summary."]
    records = read_videos_csv(paths.videos_csv)
    classes = sorted({(r.label, r.class_name) for r in records})
    splits = ("train", "val", "test")
    rows = []
    for label, name in classes:
        mine = [r for r in records if r.label == label]
        rows.append(
            [name, len({r.group for r in mine})] + [sum(r.split == s for r in mine) for s in splits] + [len(mine)]
        )
    rows.append(
        ["all", len({r.group for r in records})] + [sum(r.split == s for r in records) for s in splits] + [len(records)]
    )
    codecs = sorted({r.codec for r in records})
    text = (
        f"<p>{len(classes)} classes, {len({r.group for r in records})} groups, {len(records)} usable videos "
        f"(codecs: {', '.join(codecs)}). Groups never cross splits, so no actor/scene appears in both training "
        "and test.</p>" + _simple_table(["Class", "Groups", "Train", "Val", "Test", "Videos"], rows)
    )
    return text, []


def _rejected_html(run_dir: Path) -> str:
    rows = read_rejected(run_dir)
    if not rows:
        return "<p>No file was rejected.</p>"
    return f"<p>{len(rows)} file(s) could not be used:</p>" + _simple_table(
        ["Path", "Reason", "Stage", "Time"], [[r["path"], r["reason"], r["stage"], r["time"]] for r in rows]
    )


def _mcnemar_figure(models: Sequence[str], tests: Sequence[PairwiseTest], path: Path) -> Path:
    import matplotlib.pyplot as plt

    index = {m: i for i, m in enumerate(models)}
    n = len(models)
    p = np.full((n, n), np.nan)
    for t in tests:
        p[index[t.model_a], index[t.model_b]] = p[index[t.model_b], index[t.model_a]] = t.p_holm
    fig, ax = plt.subplots(figsize=(1.0 * n + 2, 0.9 * n + 1.5))
    strength = -np.log10(np.clip(np.where(np.isnan(p), 1.0, p), 1e-12, 1.0))  # 0 (p = 1) .. 3 (p = 0.001)
    ax.imshow(strength, cmap="Greens", vmin=0, vmax=3)
    for t in tests:
        for a, b, mine, theirs in (
            (t.model_a, t.model_b, t.test.only_a, t.test.only_b),
            (t.model_b, t.model_a, t.test.only_b, t.test.only_a),
        ):
            mark = "*" if t.p_holm < ALPHA else ""
            ax.text(
                index[b], index[a], f"p={t.p_holm:.2g}{mark}\n{mine}:{theirs}", ha="center", va="center", fontsize=7
            )
    ax.set_xticks(range(n), models, rotation=45, ha="right")
    ax.set_yticks(range(n), models)
    ax.set_title(
        "Pairwise exact McNemar, Holm-adjusted p\n(row alone right : column alone right; * p < 0.05)", fontsize=9
    )
    return plots.save_figure(fig, path)


def _embedding_figures(
    run_dir: Path,
    out: Path,
    class_names: Sequence[str],
    seed: int,
    notes: list[str],
    methods: Sequence[str],
    deep_results: Sequence[ModelResult],
) -> list[ReportFigure]:
    """t-SNE/UMAP figures of the handcrafted features (when made from the current index) and of the
    embeddings of the CNNs in ``deep_results`` (when they hold the videos those results scored)."""
    paths = RunPaths(run_dir)
    sources: list[tuple[str, str, np.ndarray, np.ndarray]] = []
    features, problem = current_features(run_dir)
    if features is not None:
        mask = features.mask("test")
        sources.append(("features", "handcrafted features", features.X[mask], features.labels[mask]))
    else:
        notes.append(f"{problem}: no t-SNE/UMAP of the handcrafted features.")
    for result in deep_results:
        model = result.model
        path = paths.embeddings_dir / f"{model}.npz"
        if not path.exists():
            notes.append(f"embeddings/{model}.npz is missing: no t-SNE/UMAP of the {model} embeddings.")
            continue
        try:
            with np.load(path, allow_pickle=False) as data:
                ids, X, y = data["video_ids"], data["embeddings"], data["labels"]
        except Exception as exc:  # any damage to the file: the report goes on without the figure
            notes.append(f"embeddings/{model}.npz cannot be read ({type(exc).__name__}): no t-SNE/UMAP of it.")
            continue
        if sorted(map(str, ids)) != sorted(p.video_id for p in result.predictions):
            notes.append(f"embeddings/{model}.npz holds other videos than results/{model}.json: not shown.")
            continue
        sources.append((model, f"{model} embeddings", X, y))
    figures = []
    for key, label, X, y in sources:
        for method, method_name in [(m, EMBEDDING_METHODS[m]) for m in methods]:
            try:
                points = plots.embed_2d(X, method, seed=seed)
            except Exception as exc:
                notes.append(f"{method_name} of the {label} failed: {exc}")
                continue
            path = plots.embedding_scatter(
                points,
                np.asarray(y),
                class_names,
                out / f"embedding_{method}_{key}.png",
                title=f"{method_name} of the {label} (test videos)",
            )
            figures.append(
                ReportFigure(
                    path.name,
                    f"{method_name}: {label}",
                    f"Each dot is a test video, coloured by its true class; the {label} were "
                    f"standardised and projected to 2-D ({method_name}, seed {seed}). Separate "
                    "clusters mean the representation already separates the actions; distances "
                    "between clusters are not meaningful.",
                )
            )
    return figures


# ----------------------------------------------------------------------------- entry point


def analyze_run(
    run_dir: str | os.PathLike[str],
    *,
    progress: bool = True,
    backend: Backend | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
    interpret: bool = True,
    gradcam_per_class: int = 2,
    occlusion_per_class: int = 6,
    embeddings: Sequence[str] = ("tsne", "umap"),
) -> Path:
    """Write ``RUN_DIR/report/`` (figures, tables, index.html) from the run's result files.

    ``backend`` decodes the test clips for Grad-CAM (default: the CPU backend); ``gradcam_per_class``
    and ``occlusion_per_class`` test clips per class are explained per CNN; ``embeddings`` picks the
    2-D projections (tsne, umap) of the features and CNN embeddings. Returns the path of
    ``index.html``. Raises FileNotFoundError when the run has no valid result file.
    """
    unknown = [m for m in embeddings if m not in EMBEDDING_METHODS]
    if unknown:
        raise ValueError(f"unknown embedding method(s) {unknown}; use {', '.join(EMBEDDING_METHODS)}")
    started = time.perf_counter()
    run_dir = Path(run_dir)
    paths = RunPaths(run_dir)
    out = paths.report_dir
    out.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        if progress:
            print(f"  [analyze {time.perf_counter() - started:5.1f}s] {message}", flush=True)

    results, load_notes = load_results(run_dir)
    if not results:
        raise FileNotFoundError(
            f"no valid result in {paths.results_dir}; run `python cli.py classical --run {run_dir}` and/or "
            f"`python cli.py deep --run {run_dir} --model cnn3d` first"
            + (f" ({'; '.join(load_notes)})" if load_notes else "")
        )
    models = [r.model for r in results]
    by_name = {r.model: r for r in results}
    class_names = list(results[0].class_names)
    notes = list(load_notes)
    if any(list(r.class_names) != class_names for r in results):
        notes.append("The result files do not all use the same class names; each model is scored on its own.")

    # Predictive performance -------------------------------------------------
    log(f"bootstrap CIs ({n_resamples} resamples of the test videos) for {len(results)} models")
    truths, scores, preds, intervals = {}, {}, {}, {}
    for r in results:
        truths[r.model] = np.array([p.true_label for p in r.predictions], dtype=np.int64)
        preds[r.model] = np.array([p.pred_label for p in r.predictions], dtype=np.int64)
        scores[r.model] = np.array([p.scores for p in r.predictions], dtype=np.float64)
        intervals[r.model] = bootstrap_intervals(
            truths[r.model], preds[r.model], scores[r.model], n_resamples=n_resamples, seed=seed
        )
    rows = [model_row(r, intervals[r.model]) for r in results]
    tables = {
        "all": rows,
        "classical": [x for x in rows if x["family"] == "classical"],
        "deep": [x for x in rows if x["family"] == "deep"],
    }
    for name, subset in tables.items():
        if subset:
            atomic_write_text(out / f"table_{name}.csv", table_csv(subset))
            atomic_write_text(out / f"table_{name}.md", table_markdown(subset))

    log("performance figures")
    perf: list[ReportFigure] = []
    plots.interval_bars(
        models,
        intervals,
        ["accuracy", "macro_f1"],
        METRIC_LABELS,
        out / "accuracy_f1.png",
        title="Accuracy and macro-F1 with 95 % bootstrap CIs",
    )
    perf.append(
        ReportFigure(
            "accuracy_f1.png",
            "Accuracy and macro-F1",
            "Test accuracy (plain) and macro-F1 (hatched) per model; whiskers are 95 % bootstrap "
            "confidence intervals from resampling test videos. Overlapping whiskers: the test set "
            "cannot rank those models reliably.",
        )
    )
    plots.interval_bars(
        models,
        intervals,
        ["macro_precision", "macro_recall"],
        METRIC_LABELS,
        out / "precision_recall.png",
        title="Macro precision and recall with 95 % bootstrap CIs",
    )
    perf.append(
        ReportFigure(
            "precision_recall.png",
            "Precision and recall",
            "Macro precision (plain) and macro recall (hatched): how often a predicted class is right, "
            "and how much of each class is found, averaged over classes.",
        )
    )
    same_classes = [m for m in models if list(by_name[m].class_names) == class_names]
    plots.roc_curves(same_classes, truths, scores, class_names, out / "roc_macro.png", out / "roc_per_class.png")
    perf.append(
        ReportFigure(
            "roc_macro.png",
            "ROC curves, macro one-vs-rest",
            "True- against false-positive rate as the decision threshold moves, averaged over "
            "classes (one-vs-rest), from the class scores; the diagonal is guessing.",
        )
    )
    perf.append(
        ReportFigure(
            "roc_per_class.png",
            "ROC curves per class",
            "The same for each class against the rest: which actions each model finds hard.",
        )
    )
    matrices = {}
    for m in same_classes:
        cm = np.zeros((len(class_names), len(class_names)), dtype=np.int64)
        np.add.at(cm, (truths[m], preds[m]), 1)
        matrices[m] = cm
    plots.confusion_matrices(same_classes, matrices, class_names, out / "confusion_counts.png", normalise=False)
    plots.confusion_matrices(same_classes, matrices, class_names, out / "confusion_normalised.png", normalise=True)
    perf.append(
        ReportFigure(
            "confusion_counts.png",
            "Confusion matrices (counts)",
            "Rows: true class, columns: predicted class, number of test videos; off-diagonal cells are the mistakes.",
        )
    )
    perf.append(
        ReportFigure(
            "confusion_normalised.png",
            "Confusion matrices (row-normalised)",
            "Each row divided by the number of test videos of that class: the diagonal is the recall "
            "of each class, the rest shows which class it is mistaken for.",
        )
    )

    # Statistics -------------------------------------------------------------
    log("pairwise McNemar tests")
    correct = {m: {p.video_id: p.true_label == p.pred_label for p in by_name[m].predictions} for m in models}
    tests = pairwise_mcnemar(correct, alpha=ALPHA)
    stats_figures: list[ReportFigure] = []
    if tests:
        _mcnemar_figure(models, tests, out / "mcnemar_matrix.png")
        stats_figures.append(
            ReportFigure(
                "mcnemar_matrix.png",
                "Pairwise McNemar tests",
                "Holm-adjusted p-values of exact McNemar tests on the test videos both models "
                "predicted; the darker the green, the smaller p (white: no evidence of a difference); "
                "counts: videos only the row model / only the column model got right.",
            )
        )
        with io.StringIO() as buffer:
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(
                [
                    "model_a",
                    "model_b",
                    "shared_videos",
                    "only_a_right",
                    "only_b_right",
                    "p_value",
                    "p_holm",
                    "min_possible_p",
                    "separable",
                    "verdict",
                ]
            )
            for t in tests:
                writer.writerow(
                    [
                        t.model_a,
                        t.model_b,
                        t.test.n_shared,
                        t.test.only_a,
                        t.test.only_b,
                        f"{t.test.p_value:.6g}",
                        f"{t.p_holm:.6g}",
                        f"{t.test.min_p_value:.6g}",
                        t.separable,
                        t.verdict,
                    ]
                )
            atomic_write_text(out / "mcnemar.csv", buffer.getvalue())

    # Efficiency -------------------------------------------------------------
    log("efficiency figures")
    eff: list[ReportFigure] = []
    plots.value_bars(
        models,
        {
            "final fit": [r.cost.fit_seconds for r in results],
            "hyper-parameter search": [r.cost.search_seconds for r in results],
        },
        out / "cost_training_time.png",
        title="Training time",
        ylabel="seconds",
        formatter=human_seconds,
    )
    eff.append(
        ReportFigure(
            "cost_training_time.png",
            "Training time",
            "Seconds to fit the final model (deep: all epochs incl. validation) and, for the classical "
            "models, the grouped cross-validated hyper-parameter search before it.",
        )
    )
    plots.value_bars(
        models,
        {
            "model only": [r.cost.inference_seconds_per_video_model for r in results],
            "end to end (decode + features/clips + model)": [
                r.cost.inference_seconds_per_video_end_to_end for r in results
            ],
        },
        out / "cost_inference_time.png",
        title="Inference time per test video",
        ylabel="seconds per video",
        formatter=human_seconds,
    )
    eff.append(
        ReportFigure(
            "cost_inference_time.png",
            "Inference time per video",
            "Seconds to classify one test video: the model alone, and end to end including decoding and "
            "feature extraction or clip preparation.",
        )
    )
    plots.value_bars(
        models,
        {"model file": [r.cost.model_bytes for r in results]},
        out / "cost_model_size.png",
        title="Model size on disk",
        ylabel="bytes",
        formatter=human_bytes,
    )
    eff.append(
        ReportFigure("cost_model_size.png", "Model size", "Size of the saved model file (what you would deploy).")
    )
    plots.value_bars(
        models,
        {
            "training": [r.cost.peak_memory_fit_bytes for r in results],
            "inference": [r.cost.peak_memory_predict_bytes for r in results],
        },
        out / "cost_peak_memory.png",
        title="Peak memory",
        ylabel="bytes",
        formatter=human_bytes,
    )
    kinds: dict[str, list[str]] = {}
    for r in results:
        kinds.setdefault(r.cost.memory_kind, []).append(r.model)
    measured = "; ".join(f"{kind} for {', '.join(names)}" for kind, names in kinds.items())
    eff.append(
        ReportFigure(
            "cost_peak_memory.png",
            "Peak memory",
            "Peak memory while training and while predicting, as each model's result file measured it "
            f"({measured}; *_delta = above the memory the process already held). Compare within one kind only.",
        )
    )
    timed = [m for m in models if (by_name[m].cost.inference_seconds_per_video_model or 0) > 0]
    if timed:
        plots.accuracy_vs_cost(
            timed,
            [by_name[m].cost.inference_seconds_per_video_model for m in timed],
            [by_name[m].metrics.macro_f1 for m in timed],
            [by_name[m].cost.model_bytes for m in timed],
            out / "accuracy_vs_cost.png",
        )
        eff.append(
            ReportFigure(
                "accuracy_vs_cost.png",
                "Accuracy versus cost",
                "Macro-F1 against model inference time per video; bigger markers are bigger models. Models "
                "on the dashed Pareto front are the sensible choices: nothing else is both faster and better.",
            )
        )

    # Data efficiency ----------------------------------------------------------
    curves = {
        r.model: [(p.n_train_videos, p.macro_f1_mean, p.macro_f1_std) for p in r.learning_curve]
        for r in results
        if r.learning_curve
    }
    data_figures: list[ReportFigure] = []
    data_notes = [f"{m}: no learning curve in its result file." for m in models if m not in curves]
    if curves:
        plots.learning_curves(curves, {r.model: r.family for r in results}, out / "learning_curves.png")
        data_figures.append(
            ReportFigure(
                "learning_curves.png",
                "Learning curves",
                "Test macro-F1 after retraining on growing fractions of the training groups "
                "(mean ± std over seeds, band). A curve still rising at the right wants more data; "
                "a flat one has learnt what it can.",
            )
        )

    # Representations ----------------------------------------------------------
    log("t-SNE and UMAP")
    embed_notes: list[str] = []
    embed_figures = _embedding_figures(
        run_dir, out, class_names, seed, embed_notes, embeddings, [r for r in results if r.family == "deep"]
    )
    skipped = [EMBEDDING_METHODS[m] for m in EMBEDDING_METHODS if m not in embeddings]
    if skipped:
        embed_notes.append(f"{' and '.join(skipped)} skipped in this run (analyze option `embeddings`).")

    # Interpretability -----------------------------------------------------------
    sections: list[Section] = []
    if interpret:
        log("interpretability: classical models")
        sections.append(
            classical_section(run_dir, out, [m for m in models if by_name[m].family == "classical"], seed=seed)
        )
        log("interpretability: deep models (Grad-CAM, occlusion)")
        if backend is None:

            backend = resolve_backend("cpu")
        sections.append(
            deep_section(
                run_dir,
                out,
                [m for m in models if by_name[m].family == "deep"],
                backend,
                gradcam_per_class=gradcam_per_class,
                occlusion_per_class=occlusion_per_class,
            )
        )

    # HTML -----------------------------------------------------------------------
    log("index.html")
    dataset_html, dataset_notes = _dataset_summary(run_dir)
    page = _render_html(
        run_dir=run_dir,
        results=results,
        rows=rows,
        tables=tables,
        tests=tests,
        perf=perf,
        stats_figures=stats_figures,
        eff=eff,
        data_figures=data_figures,
        data_notes=data_notes,
        embed_figures=embed_figures,
        embed_notes=embed_notes,
        sections=sections,
        dataset_html=dataset_html,
        notes=notes + dataset_notes,
        n_resamples=n_resamples,
    )
    index = out / "index.html"
    atomic_write_text(index, page)
    # The one-screen summary `analyze` and `run` print ends with the results left out, and why.
    atomic_write_text(out / "summary.txt", "\n".join([summary_table(rows), *load_notes]) + "\n")
    log(f"done: {index}")
    return index


def _headline(rows: Sequence[dict[str, Any]], tests: Sequence[PairwiseTest], by_name: dict[str, ModelResult]) -> str:
    ranked = sorted(rows, key=lambda r: -(r["macro_f1"].estimate or 0))
    best = ranked[0]
    parts = [
        f"<p><b>{html.escape(best['model'])}</b> has the highest test macro-F1, "
        f"{html.escape(best['macro_f1'].format())} (95 % CI), on {best['n_videos']} test videos.</p>"
    ]
    if len(ranked) > 1:
        second = ranked[1]
        pair = next((t for t in tests if {t.model_a, t.model_b} == {best["model"], second["model"]}), None)
        if pair is not None:
            parts.append(f"<p>Against the runner-up {html.escape(second['model'])}: {html.escape(pair.verdict)}</p>")
    timed = [r for r in rows if r["infer_model"]]
    if timed:
        fastest = min(timed, key=lambda r: r["infer_model"])
        parts.append(
            f"<p>Fastest at inference: <b>{html.escape(fastest['model'])}</b> "
            f"({human_seconds(fastest['infer_model'])} per video, model only); "
            f"cheapest to train: <b>{html.escape(min(rows, key=lambda r: r['fit_seconds'])['model'])}</b>.</p>"
        )
    unseparable = [t for t in tests if not t.separable]
    if tests:
        parts.append(
            f"<p>{len(unseparable)} of {len(tests)} model pairs cannot be told apart on this test set "
            "(see Statistics): small differences in the table are not evidence.</p>"
        )
    return "".join(parts)


def _render_html(**k: Any) -> str:
    results: list[ModelResult] = k["results"]
    by_name = {r.model: r for r in results}
    tests: list[PairwiseTest] = k["tests"]
    sections: list[Section] = k["sections"]
    run_dir: Path = k["run_dir"]

    families = ", ".join(
        f"{f}: {', '.join(r.model for r in results if r.family == f)}"
        for f in ("classical", "deep")
        if any(r.family == f for r in results)
    )
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>actionbench report: {html.escape(run_dir.name)}</title><style>{CSS}</style></head><body>",
        "<header><h1>actionbench: classical vs deep video action classifiers</h1>"
        f"<p>Run <code>{html.escape(str(run_dir))}</code>"
        f" · {len(results)} models ({html.escape(families)}) · generated {generated}</p></header>",
        "<nav>"
        + "".join(
            f'<a href="#{a}">{t}</a>'
            for a, t in (
                ("summary", "Summary"),
                ("performance", "Predictive performance"),
                ("statistics", "Statistics"),
                ("efficiency", "Efficiency"),
                ("data", "Data efficiency"),
                ("representations", "Representations"),
                ("interpretability", "Interpretability"),
                ("environment", "Environment"),
            )
        )
        + "</nav><main>",
        "<section id='summary'><h2>Summary</h2>",
        _headline(k["rows"], tests, by_name),
        _notes_html(k["notes"]),
        table_html(k["rows"]),
        "<p class='muted'>Metrics: estimate [95 % percentile bootstrap CI, "
        f"{k['n_resamples']} resamples of the test videos]. "
        "Green: best in the column (highest score, lowest cost). Tables as CSV/Markdown: "
        + ", ".join(
            f'<a href="table_{n}.csv">table_{n}.csv</a> / <a href="table_{n}.md">.md</a>'
            for n, t in k["tables"].items()
            if t
        )
        + ".</p></section>",
        "<section id='performance'><h2>Predictive performance</h2>",
    ]
    for family in ("classical", "deep"):
        if k["tables"][family]:
            parts.append(f"<h3>{family.capitalize()} models</h3>" + table_html(k["tables"][family]))
    parts += [_figure_html(f) for f in k["perf"]]
    parts.append("</section><section id='statistics'><h2>Statistics</h2>")
    parts.append(
        "<p>Pairwise two-sided exact McNemar tests (binomial test on the videos exactly one of the two models got "
        f"right), on the test videos both models predicted; p-values Holm-adjusted over all {len(tests)} pairs; "
        f"significance level {ALPHA}.</p>"
    )
    parts += [_figure_html(f) for f in k["stats_figures"]]
    if tests:
        parts.append("<ul class='verdicts'>" + "".join(f"<li>{html.escape(t.verdict)}</li>" for t in tests) + "</ul>")
        parts.append('<p class="muted">All pairs as CSV: <a href="mcnemar.csv">mcnemar.csv</a>.</p>')
    else:
        parts.append("<p>Only one model: nothing to compare.</p>")
    parts.append("</section><section id='efficiency'><h2>Efficiency</h2>")
    parts += [_figure_html(f) for f in k["eff"]]
    parts.append("</section><section id='data'><h2>Data efficiency</h2>")
    parts += [_figure_html(f) for f in k["data_figures"]]
    parts.append(_notes_html(k["data_notes"]))
    parts.append("</section><section id='representations'><h2>Representations</h2>")
    parts += [_figure_html(f) for f in k["embed_figures"]]
    parts.append(_notes_html(k["embed_notes"]))
    parts.append("</section><section id='interpretability'><h2>Interpretability</h2>")
    if not sections:
        parts.append("<p>Skipped (analyze was run without interpretability).</p>")
    for section in sections:
        parts += [_figure_html(f) for f in section.figures]
        parts.append(_notes_html(section.notes))
    parts.append("</section><section id='environment'><h2>Environment</h2>")
    env_rows = [
        [r.model, r.family, r.backend, r.device, r.seed, ", ".join(f"{n} {v}" for n, v in r.versions.items() if v)]
        for r in results
    ]
    parts.append(_simple_table(["Model", "Family", "Backend", "Device", "Seed", "Versions"], env_rows))
    parts.append(
        "<h3>Test protocol</h3>"
        + _simple_table(["Model", "How test scores were obtained"], [[r.model, r.test_protocol] for r in results])
    )
    parts.append("<h3>Dataset</h3>" + k["dataset_html"])
    parts.append("<h3>Rejected files</h3>" + _rejected_html(run_dir))
    parts.append("</section></main></body></html>")
    return "\n".join(parts)
