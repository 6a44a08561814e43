"""Which result files a report may compare: valid, and made from the run's current test split."""

from __future__ import annotations

import os

import numpy as np

from analysis.names import MODEL_ORDER
from analysis.stats import point_metrics
from core.runfiles import RunPaths
from core.schema import ModelResult, load_result
from pipelines.data.records import read_videos_csv


def load_results(run_dir: str | os.PathLike[str]) -> tuple[list[ModelResult], list[str]]:
    """Every valid result of the run in the canonical model order, and notes on files that were skipped."""
    paths = RunPaths(run_dir)
    results_dir = paths.results_dir
    test_ids = None
    if paths.videos_csv.is_file():
        test_ids = {r.video_id for r in read_videos_csv(paths.videos_csv) if r.split == "test"}
    results, notes = [], []
    for path in sorted(results_dir.glob("*.json")) if results_dir.is_dir() else []:
        try:
            result = load_result(path)
        except (ValueError, OSError) as exc:
            notes.append(f"{path.name} skipped: {exc}")
            continue
        foreign = {p.video_id for p in result.predictions} - test_ids if test_ids is not None else set()
        if foreign:
            # Models are compared on one test split only; a result from before a re-prepare is stale.
            notes.append(
                f"{path.name} skipped: {len(foreign)} of its test videos are not in this run's test split "
                f"(made before `prepare` changed the split); rerun its stage with --force"
            )
            continue
        results.append(result)
    rank = {name: i for i, name in enumerate(MODEL_ORDER)}
    results.sort(key=lambda r: (rank.get(r.model, len(rank)), r.model))
    return results, notes


def rank_by_macro_f1(results: list[ModelResult]) -> list[tuple[ModelResult, float]]:
    """``results`` best first by test macro-F1, as the report ranks them: the point estimate of
    :func:`analysis.stats.point_metrics` on each result's predictions; ties keep the given order
    (the canonical model order of :func:`load_results`)."""
    scored = []
    for result in results:
        truth = [p.true_label for p in result.predictions]
        predicted = [p.pred_label for p in result.predictions]
        scores = np.array([p.scores for p in result.predictions], dtype=np.float64)
        scored.append((result, float(point_metrics(truth, predicted, scores)["macro_f1"] or 0.0)))
    return sorted(scored, key=lambda item: -item[1])
