"""Representations: scene bias (do nearest neighbours share the group or the class?) and 2-D maps
of the handcrafted features and each CNN's embeddings, marked by class and by test group."""

from __future__ import annotations

import csv
import io

import numpy as np

from analysis import plots
from analysis.context import ReportContext
from analysis.html import Cell, ReportSection, figures_html, notes_html, table_html
from analysis.plots import ReportFigure
from analysis.scene_bias import NeighbourShares, Representation
from core.runfiles import atomic_write_text

EMBEDDING_METHODS = {"tsne": "t-SNE", "umap": "UMAP"}


def _scene_csv(shares: list[NeighbourShares]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "representation",
            "videos",
            "groups",
            "nn_same_group",
            "nn_same_class",
            "chance_same_group",
            "chance_same_class",
            "clusters_by_group",
        ]
    )
    for s in shares:
        writer.writerow(
            [
                s.key,
                s.n_videos,
                s.n_groups,
                s.same_group,
                s.same_class,
                s.chance_group,
                s.chance_class,
                s.clusters_by_group,
            ]
        )
    return buffer.getvalue()


def _scene_html(context: ReportContext) -> str:
    shares = context.scene
    if not shares:
        return "<p>No representation to check.</p>"
    atomic_write_text(context.out / "scene_bias.csv", _scene_csv(shares))
    rows = [
        [
            Cell(s.label, "name"),
            s.n_videos,
            s.n_groups,
            f"{s.same_group:.0%}",
            f"{s.same_class:.0%}",
            f"{s.chance_group:.0%} / {s.chance_class:.0%}",
            ("by group more than by class" if s.clusters_by_group else "by class at least as much as by group")
            if s.n_groups > 1
            else "n/a (one group)",
        ]
        for s in shares
    ]
    warnings = [
        f"The {s.label} cluster by group more than by class: the model can tell scenes apart better than actions."
        for s in shares
        if s.clusters_by_group
    ]
    return (
        "<h3>Scene bias</h3><p>For each test video, its nearest neighbour among the other test videos (Euclidean "
        "distance on standardised columns): how often does it come from the same group (actor and scene), how often "
        "from the same class? A representation that finds the same scene more often than the same action has learnt "
        "the scene.</p>"
        + notes_html(warnings, "warn")
        + table_html(
            [
                "Representation",
                "Test videos",
                "Groups",
                "Neighbour in the same group",
                "Neighbour in the same class",
                "Random other video: same group / class",
                "Clusters",
            ],
            rows,
        )
        + '<p class="muted">As CSV: <a href="scene_bias.csv">scene_bias.csv</a>.</p>'
    )


def _embedding_figures(context: ReportContext, notes: list[str]) -> list[ReportFigure]:
    figures = []
    methods = [m for m in context.options.embeddings if m in EMBEDDING_METHODS]
    for rep in context.representations:
        groups = [context.groups.get(v, v) if context.groups else v for v in rep.video_ids]
        for method in methods:
            figure = _embedding_figure(context, rep, groups, method, notes)
            if figure is not None:
                figures.append(figure)
    return figures


def _embedding_figure(
    context: ReportContext, rep: Representation, groups: list[str], method: str, notes: list[str]
) -> ReportFigure | None:
    name = EMBEDDING_METHODS[method]
    try:
        points = plots.embed_2d(rep.X, method, seed=context.options.seed)
    except Exception as exc:  # t-SNE/UMAP on degenerate inputs: a note, not a failed report
        notes.append(f"{name} of the {rep.label} failed: {exc}")
        return None
    path = plots.embedding_scatter(
        points,
        np.asarray(rep.labels),
        context.class_names,
        groups,
        context.out / f"embedding_{method}_{rep.key}.png",
        title=f"{name} of the {rep.label} (test videos)",
    )
    return ReportFigure(
        path.name,
        f"{name}: {rep.label}",
        f"Each point is a test video, standardised and projected to 2-D ({name}, seed {context.options.seed}); left "
        "coloured by class, right by test group. Clusters that match the classes mean the representation separates "
        "the actions; clusters that match the groups mean it separates scenes. Distances between clusters are not "
        "meaningful.",
    )


def build(context: ReportContext) -> ReportSection:
    context.log("scene bias, t-SNE and UMAP")
    notes: list[str] = list(context.representation_notes)
    figures = _embedding_figures(context, notes)
    skipped = [EMBEDDING_METHODS[m] for m in EMBEDDING_METHODS if m not in context.options.embeddings]
    if skipped:
        notes.append(f"{' and '.join(skipped)} skipped in this run (analyze option `embeddings`).")
    body = _scene_html(context) + "<h3>Maps</h3>" + figures_html(figures) + notes_html(notes)
    return ReportSection("representations", "Representations", body)
