"""What was trained: each CNN's weights, clips and epochs (with per-epoch loss and validation
macro-F1), each classical model's chosen hyper-parameters and the grid it was chosen from."""

from __future__ import annotations

import csv
import io

from analysis import plots
from analysis.context import ReportContext
from analysis.html import Cell, ReportSection, details_html, escape, figures_html, notes_html, table_html
from analysis.names import human_name
from analysis.plots import ReportFigure
from analysis.training import DeepTraining, grid_text, params_text, training_warnings, tuning
from core.runfiles import atomic_write_text


def _optional(value: object, fmt: str = "{}") -> str:
    return "n/a" if value is None else fmt.format(value)


def _routes(t: DeepTraining) -> str:
    """Clips per decode route, with the PyAV route's frames decoded per clip and the cache's hit rate."""
    if not t.decode_routes:
        return "n/a"
    text = ", ".join(f"{route}: {count}" for route, count in sorted(t.decode_routes.items()))
    if t.frames_decoded_per_clip is not None:
        text += f"; PyAV decoded {t.frames_decoded_per_clip:.1f} frames per clip"
    if t.cache_hit_rate is not None:
        text += f"; cache hit rate {100 * t.cache_hit_rate:.0f}%"
    return text


def _deep_html(trained: list[DeepTraining]) -> str:
    with_routes = any(t.decode_routes for t in trained)
    header = ["Model", "Weights", "Frames", "Size", "Sampling", "Epochs", "Test clips", "Batch", "Learning rate"]
    rows = [
        [
            Cell(human_name(t.model), "name"),
            Cell(t.weights, "wrap"),
            _optional(t.frames),
            _optional(t.size, "{} px"),
            Cell(t.sampling, "wrap"),
            t.epochs_text,
            _optional(t.test_clips, "{} per video"),
            _optional(t.batch_size),
            _optional(t.lr, "{:g}"),
        ]
        + ([Cell(_routes(t), "wrap")] if with_routes else [])
        for t in trained
    ]
    return table_html(header + (["Decoded by"] if with_routes else []), rows)


def _history_csv(trained: list[DeepTraining]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "epoch", "loss", "val_macro_f1", "lr"])
    for t in trained:
        for row in t.history:
            writer.writerow(
                [t.model, row.epoch, *("" if v is None else v for v in (row.loss, row.val_macro_f1, row.lr))]
            )
    return buffer.getvalue()


def _history_html(context: ReportContext) -> tuple[str, list[ReportFigure]]:
    with_history = [t for t in context.trained if t.history]
    if not with_history:
        return "<p>No per-epoch history in the deep result files.</p>", []
    atomic_write_text(context.out / "training_history.csv", _history_csv(with_history))
    plots.training_history(
        {t.model: [(r.epoch, r.loss, r.val_macro_f1) for r in t.history] for t in with_history},
        context.out / "training_history.png",
    )
    figure = ReportFigure(
        "training_history.png",
        "Training of each CNN, epoch by epoch",
        "Training loss and validation macro-F1 after each epoch; the weights of the epoch with the best validation "
        "macro-F1 were tested. A validation curve that never leaves chance means the CNN did not learn the task.",
    )
    tables = "".join(
        details_html(
            f"{human_name(t.model)}: {len(t.history)} epoch(s)",
            table_html(
                ["Epoch", "Training loss", "Validation macro-F1", "Learning rate"],
                [
                    [
                        r.epoch,
                        _optional(r.loss, "{:.4f}"),
                        _optional(r.val_macro_f1, "{:.3f}"),
                        _optional(r.lr, "{:.2e}"),
                    ]
                    for r in t.history
                ],
            ),
        )
        for t in with_history
    )
    return tables + '<p class="muted">As CSV: <a href="training_history.csv">training_history.csv</a>.</p>', [figure]


def _hyperparameters_csv(context: ReportContext) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["model", "params", "chosen", "cv_mean_macro_f1", "cv_std_macro_f1"])
    for r in context.results:
        if r.family != "classical":
            continue
        t = tuning(r)
        for c in t.candidates:
            writer.writerow([r.model, params_text(c.params), c.params == t.chosen, c.mean_macro_f1, c.std_macro_f1])
    return buffer.getvalue()


def _classical_html(context: ReportContext) -> str:
    classical = [tuning(r) for r in context.results if r.family == "classical"]
    if not classical:
        return "<p>No classical model in this run.</p>"
    atomic_write_text(context.out / "hyperparameters.csv", _hyperparameters_csv(context))
    rows = [
        [
            Cell(human_name(t.model), "name"),
            Cell(params_text(t.chosen), "wrap"),
            Cell(grid_text(t.grid), "wrap"),
            _optional(t.cv_folds),
            _optional(t.cv_macro_f1, "{:.3f}"),
            Cell(t.selection or "n/a", "wrap"),
        ]
        for t in classical
    ]
    table = table_html(
        ["Model", "Chosen hyper-parameters", "Search grid", "CV folds", "CV macro-F1 (chosen)", "Selection"], rows
    )
    details = "".join(
        details_html(
            f"{human_name(t.model)}: all {len(t.candidates)} candidate(s)",
            table_html(
                ["Hyper-parameters", "CV macro-F1 (mean ± std over folds)", "Chosen"],
                [
                    [
                        Cell(params_text(c.params), "wrap"),
                        f"{_optional(c.mean_macro_f1, '{:.3f}')} ± {_optional(c.std_macro_f1, '{:.3f}')}",
                        "yes" if c.params == t.chosen else "",
                    ]
                    for c in t.candidates
                ],
            ),
        )
        for t in classical
        if t.candidates
    )
    return table + details + '<p class="muted">As CSV: <a href="hyperparameters.csv">hyperparameters.csv</a>.</p>'


def build(context: ReportContext) -> ReportSection:
    parts = []
    if context.trained:
        parts.append("<h3>CNNs</h3>")
        parts.append(notes_html(training_warnings(context.trained), "warn"))
        parts.append(_deep_html(context.trained))
        parts.append(
            "<p class='muted'>Weights: what the network started from (torchvision pretrained weights, a checkpoint "
            "file, or random initialisation: from scratch). Epochs: run of planned, and the epoch whose weights were "
            "tested.</p>"
        )
        history, figures = _history_html(context)
        parts.append("<h3>Per-epoch training</h3>" + figures_html(figures) + history)
    parts.append("<h3>Classical models: hyper-parameters</h3>" + _classical_html(context))
    return ReportSection("trained", "What was trained", "".join(parts) or escape("Nothing to show."))
