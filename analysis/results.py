"""Which result files a report may compare: valid, and made from the run's current index."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from analysis.names import MODEL_ORDER
from analysis.stats import point_metrics
from core.runfiles import RunPaths, problem_text
from core.schema import ModelResult, load_result
from pipelines.data.records import index_fingerprint, read_videos_csv
from pipelines.features.store import features_fingerprint, stored_spec


def redo_command(result: ModelResult, run_dir: str | os.PathLike[str]) -> str:
    """The command that retrains ``result``'s model on the run's current index (no --force needed:
    each stage retrains by itself what was made from another index)."""
    if result.family == "classical":
        command = f"python cli.py classical --run {run_dir} --models {result.model}"
    else:
        command = f"python cli.py deep --run {run_dir} --model {result.model}"
        profile = result.config.get("profile")
        if isinstance(profile, str) and profile != "custom":
            command += f" --profile {profile}"
    return command + (" --learning-curve" if result.learning_curve is not None else "")


def _is_current(result: ModelResult, index_id: str, features_id: str | None) -> bool:
    """Whether ``result`` was made from the index ``index_id``. Results of older versions did not
    record it: a CNN's ``data_fingerprint`` is the same fingerprint; a classical model's
    ``features_fingerprint`` is compared with what features.npz's settings give on the current
    index (``features_id``); a result recording neither counts as stale."""
    if result.index_fingerprint is not None:
        return result.index_fingerprint == index_id
    if result.family == "deep" and "data_fingerprint" in result.config:
        return result.config["data_fingerprint"] == index_id
    if result.family == "classical" and "features_fingerprint" in result.config:
        return features_id is not None and result.config["features_fingerprint"] == features_id
    return False


def _current_features_id(paths: RunPaths) -> str | None:
    spec = stored_spec(paths.features_npz)
    return None if spec is None else features_fingerprint(paths.videos_csv, spec)


def load_results(run_dir: str | os.PathLike[str]) -> tuple[list[ModelResult], list[str]]:
    """Every valid result of the run made from its current index (videos.csv rows, splits included,
    and every video file's size and mtime: :func:`~pipelines.data.records.index_fingerprint`), in the
    canonical model order, and one note per file left out naming it, why, and the command that redoes
    it. Without videos.csv (result files gathered by hand) nothing can be checked: every valid result
    is kept, with a note saying so."""
    paths = RunPaths(run_dir)
    files = sorted(paths.results_dir.glob("*.json")) if paths.results_dir.is_dir() else []
    index_id = features_id = None
    if paths.videos_csv.is_file():
        index_id = index_fingerprint(read_videos_csv(paths.videos_csv))
        features_id = _current_features_id(paths)
    results, notes = [], []
    for path in files:
        try:
            result = load_result(path)
        except (ValueError, OSError) as exc:
            notes.append(
                f"{path.name} left out: {problem_text(exc, path)} (the next `classical` or `deep` command for "
                "that model sets it aside and retrains it)"
            )
            continue
        if index_id is not None and not _is_current(result, index_id, features_id):
            # Models are compared on one index only: a result from before `prepare` was rerun, or
            # before a video changed, scored other data.
            notes.append(
                f"{path.name} left out: made from another index than this run's videos.csv and video files "
                f"(`prepare` rerun, or a video changed since); `{redo_command(result, run_dir)}` redoes it"
            )
            continue
        results.append(result)
    if index_id is None and results:
        notes.append(f"{Path(paths.videos_csv).name} is missing: the results could not be checked against an index")
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
