"""Statistics: paired group-level tests between models (Holm-corrected), what the number of test
groups allows, ``statistics.json``; per-video McNemar as a secondary view."""

from __future__ import annotations

import csv
import io

from analysis import plots
from analysis.comparison import Comparison
from analysis.context import ReportContext
from analysis.html import Cell, ReportSection, escape, figures_html, notes_html, table_html
from analysis.names import human_name
from analysis.plots import ReportFigure
from analysis.verdicts import detectability, pairs_sentence
from core.runfiles import atomic_write_json, atomic_write_text


def _pairs_csv(comparison: Comparison) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "model_a",
            "model_b",
            "test",
            "groups",
            "informative_groups",
            "videos",
            "p_value",
            "p_holm",
            "significant",
            "accuracy_difference",
            "ci_low",
            "ci_high",
        ]
    )
    for p in comparison.pairs:
        d = p.differences["accuracy"]
        writer.writerow(
            [
                p.model_a,
                p.model_b,
                p.test_name,
                p.test.n_groups,
                p.test.n_informative,
                p.n_shared_videos,
                f"{p.test.p_value:.6g}",
                f"{p.p_holm:.6g}",
                p.significant,
                d.estimate,
                d.low,
                d.high,
            ]
        )
    return buffer.getvalue()


def _mcnemar_csv(comparison: Comparison) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "model_a",
            "model_b",
            "unit",
            "shared_videos",
            "only_a_right",
            "only_b_right",
            "p_value",
            "p_holm",
            "min_possible_p",
            "significant",
        ]
    )
    for t in comparison.mcnemar:
        writer.writerow(
            [
                t.model_a,
                t.model_b,
                "video (assumes independent videos)",
                t.test.n_shared,
                t.test.only_a,
                t.test.only_b,
                f"{t.test.p_value:.6g}",
                f"{t.p_holm:.6g}",
                f"{t.test.min_p_value:.6g}",
                t.significant,
            ]
        )
    return buffer.getvalue()


def _group_figures(context: ReportContext) -> list[ReportFigure]:
    c, out = context.comparison, context.out
    plots.p_value_matrix(
        context.models,
        {(p.model_a, p.model_b): p.p_holm for p in c.pairs},
        {
            (a, b): f"p={p.p_holm:.2g}\n{sign * (p.differences['accuracy'].estimate or 0):+.2f}"
            for p in c.pairs
            for a, b, sign in ((p.model_a, p.model_b, 1), (p.model_b, p.model_a, -1))
        },
        out / "pairs_matrix.png",
        title="Paired group-level tests: Holm-adjusted p (sign-flip over test groups)\n"
        "and accuracy difference row − column; * p < 0.05",
        alpha=c.alpha,
    )
    plots.difference_intervals(
        [(p.model_a, p.model_b, p.differences["accuracy"], p.significant) for p in c.pairs],
        out / "pairs_differences.png",
        xlabel=f"accuracy difference, 95 % interval of a paired bootstrap over {c.n_groups} test {c.unit}s",
    )
    return [
        ReportFigure(
            "pairs_matrix.png",
            "Which models can be told apart",
            "Holm-adjusted p-values of exact sign-flip tests over the per-group accuracy differences of each pair; "
            "the darker the green, the smaller p (colour bar). Numbers: p and the accuracy difference of the row "
            "model minus the column model.",
        ),
        ReportFigure(
            "pairs_differences.png",
            "Paired accuracy differences",
            "Accuracy of the first model minus the second with a 95 % interval from resampling test groups for both "
            "models at once; an interval away from 0 and a black line (Holm p < 0.05) mean a real difference.",
        ),
    ]


def _mcnemar_html(context: ReportContext) -> str:
    c = context.comparison
    atomic_write_text(context.out / "mcnemar.csv", _mcnemar_csv(c))
    plots.p_value_matrix(
        context.models,
        {(t.model_a, t.model_b): t.p_holm for t in c.mcnemar},
        {
            (a, b): f"p={t.p_holm:.2g}\n{mine}:{theirs}"
            for t in c.mcnemar
            for a, b, mine, theirs in (
                (t.model_a, t.model_b, t.test.only_a, t.test.only_b),
                (t.model_b, t.model_a, t.test.only_b, t.test.only_a),
            )
        },
        context.out / "mcnemar_matrix.png",
        title="Per-video exact McNemar, Holm-adjusted p (assumes independent videos)\n"
        "row alone right : column alone right; * p < 0.05",
        alpha=c.alpha,
    )
    figure = ReportFigure(
        "mcnemar_matrix.png",
        "Secondary view: per-video McNemar tests",
        "Exact McNemar tests on the videos each pair predicted, as if every video were independent evidence. Videos "
        "of one group are near-copies, so these p-values are too small; read the group-level tests above instead.",
    )
    significant = sum(t.significant for t in c.mcnemar)
    return (
        "<h3>Secondary view: per-video McNemar (assumes independent videos)</h3>"
        f"<p>Treating the {c.n_videos} test videos as independent, {significant} of {len(c.mcnemar)} pairs would "
        f"differ (Holm p &lt; {c.alpha}). Videos of one group share actor and scene, so this overstates the evidence."
        "</p>" + figures_html([figure]) + '<p class="muted">As CSV: <a href="mcnemar.csv">mcnemar.csv</a>.</p>'
    )


def build(context: ReportContext) -> ReportSection:
    context.log("paired group-level tests")
    c = context.comparison
    atomic_write_json(context.out / "statistics.json", c.to_json())
    if not c.pairs:
        return ReportSection("statistics", "Statistics", "<p>Only one model: nothing to compare.</p>")
    atomic_write_text(context.out / "pairs.csv", _pairs_csv(c))
    sentence = detectability(c.n_groups, len(c.pairs), c.alpha)
    rows = [
        [
            Cell(human_name(p.model_a), "name"),
            Cell(human_name(p.model_b), "name"),
            p.differences["accuracy"].format(),
            p.test.n_groups,
            f"{p.test.p_value:.3g}",
            f"{p.p_holm:.3g}",
            "yes" if p.significant else "no",
        ]
        for p in c.pairs
    ]
    body = (
        f"<p>Each pair of models is compared on the test videos both predicted, at the level of the {c.n_groups} "
        f"test {c.unit}s: an exact sign-flip permutation test over the per-group differences in videos each model "
        f"got right (two-sided; Holm correction over all {len(c.pairs)} pairs; significance level {c.alpha}), and a "
        "95 % interval of the accuracy difference from a paired bootstrap over groups. "
        f"{escape(pairs_sentence(c))}</p>"
        + notes_html([sentence] if sentence else [], "warn")
        + table_html(
            ["Model A", "Model B", "Accuracy A − B [95 % interval]", "Groups", "p", "Holm p", "Told apart"], rows
        )
        + f"<p class='muted'>Told apart means Holm p &lt; {c.alpha}, nothing else. With few groups a bootstrap "
        "interval can miss 0 while the exact test cannot reject (percentile intervals are too narrow with few "
        "clusters): the test decides.</p>"
        + figures_html(_group_figures(context))
        + '<p class="muted">As JSON and CSV: <a href="statistics.json">statistics.json</a> (intervals of every model '
        'and pair), <a href="pairs.csv">pairs.csv</a>.</p>' + _mcnemar_html(context)
    )
    return ReportSection("statistics", "Statistics", body)
