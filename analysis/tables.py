"""The main table of a run, split by concern (quality; cost) so it fits a window and a page, as
HTML, Markdown and raw CSV; and the one-screen console summary.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from analysis.comparison import ModelEvidence
from analysis.html import Cell, table_html
from analysis.names import human_name
from analysis.plots import human_bytes, human_seconds
from analysis.stats import METRIC_LABELS, METRIC_NAMES, Interval
from core.schema import Cost, ModelResult

Value = Interval | float | int | str | None


@dataclass(frozen=True)
class ModelRow:
    """What the main table shows of one model."""

    model: str
    family: str
    backend: str
    device: str
    intervals: dict[str, Interval]
    cost: Cost
    n_videos: int
    n_groups: int

    @classmethod
    def of(cls, result: ModelResult, evidence: ModelEvidence) -> ModelRow:
        return cls(
            result.model,
            result.family,
            result.backend,
            result.device,
            evidence.intervals,
            result.cost,
            evidence.n_videos,
            evidence.n_groups,
        )


def _interval(value: Value) -> str:
    return value.format() if isinstance(value, Interval) else "n/a"


def _seconds(value: Value) -> str:
    return human_seconds(float(value)) if isinstance(value, (int, float)) else "n/a"


def _bytes(value: Value) -> str:
    return human_bytes(float(value)) if isinstance(value, (int, float)) else "n/a"


def _count(value: Value) -> str:
    return f"{int(value):,}" if isinstance(value, (int, float)) else "n/a"


def _flops(value: Value) -> str:
    if not isinstance(value, (int, float)):
        return "n/a"
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f}"


def _text(value: Value) -> str:
    return "n/a" if value is None else str(value)


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    better: str | None  # "high", "low" or None (not compared)
    value: Callable[[ModelRow], Value]
    fmt: Callable[[Value], str]


def _metric_column(name: str) -> Column:
    return Column(name, METRIC_LABELS[name], "high", lambda row: row.intervals[name], _interval)


QUALITY = [
    *(
        _metric_column(name)
        for name in ("accuracy", "macro_f1", "roc_auc_macro_ovr", "macro_precision", "macro_recall")
    ),
    Column("test_set", "Test videos (groups)", None, lambda r: f"{r.n_videos} ({r.n_groups})", _text),
]
COST = [
    Column("fit_seconds", "Training time", "low", lambda r: r.cost.fit_seconds, _seconds),
    Column("search_seconds", "Hyper-parameter search", "low", lambda r: r.cost.search_seconds, _seconds),
    Column(
        "infer_model", "Inference / video (model)", "low", lambda r: r.cost.inference_seconds_per_video_model, _seconds
    ),
    Column(
        "infer_e2e",
        "Inference / video (end to end)",
        "low",
        lambda r: r.cost.inference_seconds_per_video_end_to_end,
        _seconds,
    ),
    Column("model_bytes", "Model size", "low", lambda r: r.cost.model_bytes, _bytes),
    Column("parameters", "Parameters", "low", lambda r: r.cost.parameters, _count),
    Column("flops", "FLOPs / clip", "low", lambda r: r.cost.flops_per_clip, _flops),
    Column("peak_fit", "Peak memory (training)", "low", lambda r: r.cost.peak_memory_fit_bytes, _bytes),
    Column("peak_predict", "Peak memory (inference)", "low", lambda r: r.cost.peak_memory_predict_bytes, _bytes),
]


def _comparable(value: Value) -> float | None:
    if isinstance(value, Interval):
        return value.estimate
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def best_per_column(rows: Sequence[ModelRow], columns: Sequence[Column]) -> dict[str, set[str]]:
    """Column key -> models holding the best value (ties included) among ``rows``."""
    best: dict[str, set[str]] = {}
    for column in columns:
        if column.better is None:
            continue
        present = {row.model: v for row in rows if (v := _comparable(column.value(row))) is not None}
        if len(present) < 2:
            continue
        target = max(present.values()) if column.better == "high" else min(present.values())
        best[column.key] = {m for m, v in present.items() if np.isclose(v, target)}
    return best


def main_table_html(rows: Sequence[ModelRow], columns: Sequence[Column], caption: str) -> str:
    best = best_per_column(rows, columns)
    body = [
        [Cell(human_name(row.model), "name")]
        + [Cell(c.fmt(c.value(row)), "best" if row.model in best.get(c.key, set()) else "") for c in columns]
        for row in rows
    ]
    return table_html(["Model"] + [c.title for c in columns], body, caption)


def table_markdown(rows: Sequence[ModelRow]) -> str:
    """The two tables (quality, cost) in Markdown; bold marks the best value of a column."""
    parts = []
    for title, columns in (("Quality", QUALITY), ("Cost", COST)):
        best = best_per_column(rows, columns)
        header = ["Model"] + [c.title for c in columns]
        lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in rows:
            cells = [human_name(row.model)]
            for c in columns:
                text = c.fmt(c.value(row))
                cells.append(f"**{text}**" if row.model in best.get(c.key, set()) else text)
            lines.append("| " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    note = "Metrics: estimate [95 % percentile interval of a bootstrap over test groups]. Bold: best in the column."
    return "\n\n".join(parts) + "\n\n" + note + "\n"


def table_csv(rows: Sequence[ModelRow]) -> str:
    """Raw numbers: a metric column plus its _ci_low / _ci_high; costs in seconds and bytes."""
    cost_columns = [c for c in COST]
    header = ["model", "name", "family"]
    for name in METRIC_NAMES:
        header += [name, f"{name}_ci_low", f"{name}_ci_high"]
    header += ["test_videos", "test_groups"] + [c.key for c in cost_columns] + ["memory_kind", "backend", "device"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        line: list[Value] = [row.model, human_name(row.model), row.family]
        for name in METRIC_NAMES:
            interval = row.intervals[name]
            line += [interval.estimate, interval.low, interval.high]
        line += [row.n_videos, row.n_groups] + [c.value(row) for c in cost_columns]
        line += [row.cost.memory_kind, row.backend, row.device]
        writer.writerow(["" if v is None else v for v in line])
    return buffer.getvalue()


def summary_table(rows: Sequence[ModelRow]) -> str:
    """One plain-text line per model: human name, accuracy and macro-F1 with their group-bootstrap
    intervals, training time and inference time per video."""
    width = max([len(human_name(r.model)) for r in rows] + [5])
    lines = [f"{'model':<{width}} {'accuracy [95% CI]':<21} {'macro-F1 [95% CI]':<21} {'train':>8} {'ms/video':>9}"]
    for row in rows:
        per_video = row.cost.inference_seconds_per_video_end_to_end or row.cost.inference_seconds_per_video_model
        lines.append(
            f"{human_name(row.model):<{width}} {row.intervals['accuracy'].format():<21} "
            f"{row.intervals['macro_f1'].format():<21} {human_seconds(row.cost.fit_seconds):>8} "
            f"{(per_video or 0) * 1000:>9.2f}"
        )
    return "\n".join(lines)
