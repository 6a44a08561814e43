"""Which result files a report may compare: valid, and made from the run's current test split."""

from __future__ import annotations

import os

from analysis.names import MODEL_ORDER
from core.runfiles import RunPaths
from core.schema import ModelResult, load_result
from pipelines.data.records import evaluated_records, read_videos_csv


def load_results(run_dir: str | os.PathLike[str]) -> tuple[list[ModelResult], list[str]]:
    """Every valid result of the run in the canonical model order, and notes on files that were skipped."""
    paths = RunPaths(run_dir)
    results_dir = paths.results_dir
    test_ids = None
    if paths.videos_csv.is_file():
        test_ids = {r.video_id for r in evaluated_records(read_videos_csv(paths.videos_csv))}
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
