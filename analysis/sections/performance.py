"""Predictive performance: scores with group-bootstrap intervals, ROC curves, confusion matrices,
per-class precision/recall/F1 and, for K-fold runs, the spread over folds."""

from __future__ import annotations

import csv
import io

import numpy as np

from analysis import plots
from analysis.context import ReportContext
from analysis.html import Cell, ReportSection, details_html, figures_html, table_html
from analysis.names import human_name
from analysis.plots import ReportFigure
from analysis.stats import HEADLINE_METRICS, METRIC_LABELS
from core.runfiles import atomic_write_text


def _score_figures(context: ReportContext) -> list[ReportFigure]:
    intervals = {m: e.intervals for m, e in context.comparison.models.items()}
    out, unit = context.out, context.comparison.unit
    plots.interval_bars(
        context.models,
        intervals,
        ["accuracy", "macro_f1"],
        METRIC_LABELS,
        out / "accuracy_f1.png",
        title=f"Accuracy and macro-F1 with 95 % {unit}-bootstrap intervals",
    )
    plots.interval_bars(
        context.models,
        intervals,
        ["macro_precision", "macro_recall"],
        METRIC_LABELS,
        out / "precision_recall.png",
        title=f"Macro precision and recall with 95 % {unit}-bootstrap intervals",
    )
    return [
        ReportFigure(
            "accuracy_f1.png",
            "Accuracy and macro-F1",
            f"Test accuracy (plain) and macro-F1 (hatched) per model; whiskers are 95 % intervals of a bootstrap "
            f"over the {context.comparison.n_groups} test {unit}s (videos of one group stay together). Overlapping "
            "whiskers: the test set cannot rank those models; the paired tests under Statistics say for sure.",
        ),
        ReportFigure(
            "precision_recall.png",
            "Precision and recall",
            "Macro precision (plain) and macro recall (hatched): how often a predicted class is right, and how much "
            "of each class is found, averaged over classes.",
        ),
    ]


def _curve_figures(context: ReportContext) -> list[ReportFigure]:
    by_name, names, out = context.by_name, context.class_names, context.out
    same = [m for m in context.models if list(by_name[m].class_names) == names]
    truths = {m: np.array([p.true_label for p in by_name[m].predictions], dtype=np.int64) for m in same}
    preds = {m: np.array([p.pred_label for p in by_name[m].predictions], dtype=np.int64) for m in same}
    scores = {m: np.array([p.scores for p in by_name[m].predictions], dtype=np.float64) for m in same}
    plots.roc_curves(same, truths, scores, names, out / "roc_macro.png", out / "roc_per_class.png")
    matrices = {}
    for m in same:
        matrices[m] = np.zeros((len(names), len(names)), dtype=np.int64)
        np.add.at(matrices[m], (truths[m], preds[m]), 1)
    plots.confusion_matrices(same, matrices, names, out / "confusion_counts.png", normalise=False)
    plots.confusion_matrices(same, matrices, names, out / "confusion_normalised.png", normalise=True)
    return [
        ReportFigure(
            "roc_macro.png",
            "ROC curves, macro one-vs-rest",
            "True- against false-positive rate as the decision threshold moves, averaged over classes "
            "(one-vs-rest), from the class scores; the diagonal is guessing.",
        ),
        ReportFigure(
            "roc_per_class.png",
            "ROC curves per class",
            "The same for each class against the rest: which actions each model finds hard.",
        ),
        ReportFigure(
            "confusion_counts.png",
            "Confusion matrices (counts)",
            "Rows: true class, columns: predicted class, number of test videos; off-diagonal cells are the mistakes.",
        ),
        ReportFigure(
            "confusion_normalised.png",
            "Confusion matrices (row-normalised)",
            "Each row divided by the test videos of that class: the diagonal is each class's recall, the rest shows "
            "which class it is mistaken for.",
        ),
    ]


def _per_class_csv(context: ReportContext) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "class", "precision", "recall", "f1", "support"])
    for r in context.results:
        for name, s in r.metrics.per_class.items():
            writer.writerow([r.model, name, s.precision, s.recall, s.f1, s.support])
    return buffer.getvalue()


def _per_class_html(context: ReportContext) -> str:
    atomic_write_text(context.out / "per_class.csv", _per_class_csv(context))
    names = context.class_names
    f1_rows = [
        [Cell(name, "name")]
        + [f"{r.metrics.per_class[name].f1:.2f}" if name in r.metrics.per_class else "n/a" for r in context.results]
        for name in names
    ]
    f1_table = table_html(["Class"] + [human_name(m) for m in context.models], f1_rows, "F1 per class and model")
    details = "".join(
        details_html(
            f"{human_name(r.model)}: precision, recall and F1 per class",
            table_html(
                ["Class", "Precision", "Recall", "F1", "Test videos"],
                [
                    [Cell(name, "name"), f"{s.precision:.3f}", f"{s.recall:.3f}", f"{s.f1:.3f}", s.support]
                    for name, s in r.metrics.per_class.items()
                ],
            ),
        )
        for r in context.results
    )
    return (
        "<h3>Per class</h3>"
        + f1_table
        + details
        + '<p class="muted">All models as CSV: <a href="per_class.csv">per_class.csv</a>.</p>'
    )


def _folds_html(context: ReportContext) -> str:
    rows = []
    for m, evidence in context.comparison.models.items():
        spread = evidence.folds
        if spread is None:
            continue
        cells = [
            "n/a"
            if spread.mean[k] is None
            else f"{spread.mean[k]:.3f} ± {spread.sd[k]:.3f}"
            if spread.sd[k] is not None
            else f"{spread.mean[k]:.3f}"
            for k in HEADLINE_METRICS
        ]
        rows.append([Cell(human_name(m), "name"), spread.n_folds, *cells])
    if not rows:
        return ""
    header = ["Model", "Folds"] + [f"{METRIC_LABELS[k]} (mean ± sd over folds)" for k in HEADLINE_METRICS]
    return (
        "<h3>Across the outer folds</h3><p>Each outer fold trained every model on the other folds' groups and tested "
        "it on its own; the main table scores the pooled predictions (every video tested once), this table the "
        "spread between folds.</p>" + table_html(header, rows)
    )


def build(context: ReportContext) -> ReportSection:
    context.log("performance figures")
    figures = _score_figures(context) + _curve_figures(context)
    body = figures_html(figures) + _folds_html(context) + _per_class_html(context)
    return ReportSection("performance", "Predictive performance", body)
