"""Data efficiency: learning curves (test macro-F1 after retraining on fractions of the training
groups), with the epochs and seeds each point was trained with."""

from __future__ import annotations

from analysis import plots
from analysis.context import ReportContext
from analysis.html import ReportSection, figures_html, notes_html
from analysis.names import human_name
from analysis.plots import CurvePoint, ReportFigure
from core.schema import ModelResult


def _protocol(result: ModelResult) -> str:
    """ "<name>: N seed(s), E epoch(s)" for one model's curve (epochs only for the CNNs)."""
    points = result.learning_curve or []
    seeds = sorted({len(p.seeds) for p in points})
    epochs = sorted({p.epochs for p in points if p.epochs is not None})
    seed_text = "/".join(str(s) for s in seeds) + (" seed" if seeds == [1] else " seeds")
    epoch_text = f", {'/'.join(str(e) for e in epochs)} epoch(s) per point" if epochs else ""
    return f"{human_name(result.model)}: {seed_text}{epoch_text}"


def build(context: ReportContext) -> ReportSection:
    with_curve = [r for r in context.results if r.learning_curve]
    notes = [
        f"{human_name(r.model)}: no learning curve in its result file." for r in context.results if not r.learning_curve
    ]
    if not with_curve:
        return ReportSection("data", "Data efficiency", notes_html(notes))
    curves = {
        r.model: [
            CurvePoint(p.n_train_videos, p.macro_f1_mean, p.macro_f1_std, len(p.seeds)) for p in r.learning_curve or []
        ]
        for r in with_curve
    }
    plots.learning_curves(curves, {r.model: r.family for r in context.results}, context.out / "learning_curves.png")
    single = [human_name(r.model) for r in with_curve if all(len(p.seeds) < 2 for p in r.learning_curve or [])]
    band = "The band is ± one standard deviation over seeds, drawn only where a point has several seeds" + (
        f"; {', '.join(single)}: one seed, so no band and no spread is known." if single else "."
    )
    figure = ReportFigure(
        "learning_curves.png",
        "Learning curves",
        "Test macro-F1 after retraining on growing fractions of the training groups. Trained with "
        + "; ".join(_protocol(r) for r in with_curve)
        + f". {band} A curve still rising at the right wants more data; a flat one has learnt what it can.",
    )
    return ReportSection("data", "Data efficiency", figures_html([figure]) + notes_html(notes))
