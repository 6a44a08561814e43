"""The notebook study's published figures beside this run's, with how its protocol differed."""

from __future__ import annotations

import csv
import io

from analysis.context import ReportContext
from analysis.html import Cell, ReportSection, escape, table_html
from analysis.names import MODEL_ORDER, human_name
from analysis.plots import human_seconds
from analysis.reference import NOTEBOOK, NOTEBOOK_PROTOCOL, NOTEBOOK_TEST_VIDEOS
from core.runfiles import atomic_write_text


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def build(context: ReportContext) -> ReportSection:
    by_name, evidence = context.by_name, context.comparison.models
    rows, raw = [], []
    for model in [m for m in MODEL_ORDER if m in NOTEBOOK]:
        ref, mine = NOTEBOOK[model], by_name.get(model)
        acc = evidence[model].intervals["accuracy"] if model in evidence else None
        infer = mine.cost.inference_seconds_per_video_end_to_end if mine else None
        rows.append(
            [
                Cell(human_name(model), "name"),
                _percent(ref.accuracy),
                "not run" if acc is None else f"{_percent(acc.estimate)} [{_percent(acc.low)}, {_percent(acc.high)}]",
                human_seconds(ref.training_seconds),
                human_seconds(mine.cost.fit_seconds) if mine else "not run",
                human_seconds(ref.inference_seconds_per_video),
                human_seconds(infer),
            ]
        )
        raw.append(
            [
                model,
                ref.accuracy,
                None if acc is None else acc.estimate,
                ref.training_seconds,
                mine.cost.fit_seconds if mine else None,
                ref.inference_seconds_per_video,
                infer,
            ]
        )
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        [
            "model",
            "notebook_accuracy",
            "run_accuracy",
            "notebook_training_seconds",
            "run_training_seconds",
            "notebook_inference_seconds_per_video",
            "run_inference_seconds_per_video",
        ]
    )
    writer.writerows([["" if v is None else v for v in row] for row in raw])
    atomic_write_text(context.out / "reference.csv", buffer.getvalue())
    table = table_html(
        [
            "Model",
            "Notebook accuracy",
            "This run: accuracy [95 % interval]",
            "Notebook training time",
            "This run: training time",
            "Notebook inference / video",
            "This run: inference / video (end to end)",
        ],
        rows,
        f"The notebook study ({NOTEBOOK_TEST_VIDEOS} test videos) beside this run ({context.comparison.n_videos})",
    )
    body = (
        f"<p>{escape(NOTEBOOK_PROTOCOL)}</p>"
        + table
        + "<p class='muted'>n/a: the notebook did not publish that figure. As CSV: "
        '<a href="reference.csv">reference.csv</a>.</p>'
    )
    return ReportSection("reference", "Notebook reference", body)
