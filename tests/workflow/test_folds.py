"""Outer folds end to end: fold sub-runs, pooled results covering every video once, per-fold resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from analysis.results import load_results
from cli import main
from core.backend import resolve_backend
from core.metrics import classification_metrics
from core.schema import Cost, ModelResult, Prediction, load_result
from pipelines.data.records import fold_records, read_videos_csv
from pipelines.features.store import load_features
from tests.analysis.test_report import independent_group_intervals
from tests.workflow.test_run import MODELS, REPO
from tests.workflow.test_run import _wait_for as wait_for
from workflow import stages
from workflow.folds import COST_NOTE, fold_dir, pool_fold_results
from workflow.profiles import PROFILES
from workflow.run import run_comparison

CLASSES = ["A", "B"]


def _fold_result(fold: int, rows: list[tuple[str, int, list[float]]], cost: Cost) -> ModelResult:
    y_true = [label for _, label, _ in rows]
    y_pred = [int(np.argmax(scores)) for _, _, scores in rows]
    scores = [s for _, _, s in rows]
    return ModelResult(
        model="svm", family="classical", backend="sklearn", device="cpu", versions={}, seed=0,
        config={"fingerprint": f"fp{fold}", "params": {"C": float(fold + 1)}, "n_train_videos": 10 + fold},
        class_names=CLASSES, test_protocol="scored once", metrics=classification_metrics(y_true, y_pred, scores,
                                                                                            CLASSES),
        predictions=[Prediction(v, t, p, s) for (v, t, s), p in zip(rows, y_pred, strict=True)], cost=cost,
        artifacts={"model": "models/svm.joblib"},
    )  # fmt: skip


def test_pool_fold_results_pools_predictions_and_says_what_each_cost_is() -> None:
    fold0 = _fold_result(
        0, [("a1", 0, [0.9, 0.1]), ("b1", 1, [0.6, 0.4])],
        Cost(fit_seconds=1.0, search_seconds=4.0, inference_seconds_per_video_model=0.1, model_bytes=100,
             peak_memory_fit_bytes=50),
    )  # fmt: skip
    fold1 = _fold_result(
        1, [("a2", 0, [0.3, 0.7]), ("b2", 1, [0.2, 0.8]), ("b3", 1, [0.1, 0.9]), ("a3", 0, [0.8, 0.2])],
        Cost(fit_seconds=3.0, search_seconds=None, inference_seconds_per_video_model=0.4, model_bytes=201,
             peak_memory_fit_bytes=70),
    )  # fmt: skip
    pooled = pool_fold_results([fold0, fold1], n_train=[12, 9], fold_paths=["folds/fold0", "folds/fold1"],
                               index_id="index")  # fmt: skip
    assert [(p.video_id, p.fold) for p in pooled.predictions] == [
        ("a1", 0), ("b1", 0), ("a2", 1), ("b2", 1), ("b3", 1), ("a3", 1)
    ]  # fmt: skip
    every = [*fold0.predictions, *fold1.predictions]
    expected = classification_metrics(
        [p.true_label for p in every], [p.pred_label for p in every], [p.scores for p in every], CLASSES
    )
    assert pooled.metrics == expected and pooled.metrics.n_videos == 6
    assert [(f.fold, f.metrics, f.n_train_videos) for f in pooled.folds] == [
        (0, fold0.metrics, 12), (1, fold1.metrics, 9)
    ]  # fmt: skip
    # Mean per fold model; per video over all pooled videos; peak: the worst fold; None never mixed in.
    assert pooled.cost.fit_seconds == 2.0 and pooled.cost.model_bytes == 150
    assert pooled.cost.inference_seconds_per_video_model == pytest.approx((2 * 0.1 + 4 * 0.4) / 6)
    assert pooled.cost.search_seconds is None and pooled.cost.peak_memory_fit_bytes == 70
    outer = pooled.config["outer_cv"]
    assert outer["folds"] == 2 and outer["cost"] == COST_NOTE and outer["learning_curve"] is None
    assert [row["params"] for row in outer["per_fold"]] == [{"C": 1.0}, {"C": 2.0}]
    assert pooled.config["data_fingerprint"] == pooled.index_fingerprint == "index"
    assert pooled.config["fingerprint"] not in ("fp0", "fp1")
    assert pooled.artifacts == {
        "model": "models/svm.joblib", "model_fold0": "folds/fold0/models/svm.joblib",
        "model_fold1": "folds/fold1/models/svm.joblib",
    }  # fmt: skip
    assert "2-fold outer cross-validation" in pooled.test_protocol and pooled.test_protocol.endswith("scored once")
    other = _fold_result(1, [("a2", 0, [0.3, 0.7])], Cost(fit_seconds=1.0))
    other.class_names = ["A", "C"]
    with pytest.raises(ValueError, match="differ in model or classes"):
        pool_fold_results([fold0, other], n_train=[1, 1], fold_paths=["x", "y"], index_id="i")


@pytest.fixture(scope="module")
def folded_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny demo prepared with 3 outer folds, its features computed (no model yet)."""
    run_dir = tmp_path_factory.mktemp("folds") / "run"
    run_comparison(None, run_dir, profile="tiny", backend=resolve_backend("cpu"), skip_deep=True,
                   stop_after="features", folds=3, progress=False)  # fmt: skip
    return run_dir


def _mtimes(run_dir: Path, model: str) -> list[int]:
    return [(fold_dir(run_dir, k) / "results" / f"{model}.json").stat().st_mtime_ns for k in range(3)]


def test_classical_folds_test_every_video_once_and_resume_per_fold(folded_run: Path) -> None:
    backend, config, spec = resolve_backend("cpu"), PROFILES["tiny"].classical, PROFILES["tiny"].features
    records = read_videos_csv(folded_run / "videos.csv")
    stages.classical(folded_run, backend, config, spec, models=["knn", "logreg"], progress=False)

    for model in ("knn", "logreg"):
        result = load_result(folded_run / "results" / f"{model}.json")
        assert sorted(p.video_id for p in result.predictions) == sorted(r.video_id for r in records)  # once each
        fold_of = {r.video_id: r.fold for r in records}
        assert all(p.fold == fold_of[p.video_id] for p in result.predictions)
        assert [f.fold for f in result.folds or []] == [0, 1, 2]
        assert [f.metrics.n_videos for f in result.folds or []] == [sum(r.fold == k for r in records) for k in range(3)]
        assert result.learning_curve is not None and result.config["outer_cv"]["learning_curve"].startswith("fold 0")
        for k in range(3):  # each fold trained on its own split; the curve is fold 0's only
            fold_result = load_result(fold_dir(folded_run, k) / "results" / f"{model}.json")
            assert {p.video_id for p in fold_result.predictions} == {r.video_id for r in records if r.fold == k}
            assert (fold_result.learning_curve is not None) == (k == 0)
    groups_of_fold: dict[int, set[str]] = defaultdict(set)
    group_of = {r.video_id: r.group for r in records}
    for p in load_result(folded_run / "results" / "knn.json").predictions:
        groups_of_fold[p.fold or 0].add(group_of[p.video_id])
    assert not (groups_of_fold[0] & groups_of_fold[1] or groups_of_fold[0] & groups_of_fold[2]
                or groups_of_fold[1] & groups_of_fold[2])  # fmt: skip
    # The sub-runs: their own one-split index, the run's feature rows under their splits, one cache.
    features = load_features(folded_run / "features.npz")
    for k in range(3):
        sub = fold_dir(folded_run, k)
        assert read_videos_csv(sub / "videos.csv") == fold_records(records, k)
        derived = load_features(sub / "features.npz")
        np.testing.assert_array_equal(derived.X, features.X)
        assert derived.splits.tolist() == [r.split_in(k) for r in records]
        assert (sub / "cache").resolve() == (folded_run / "cache").resolve()
    results, notes = load_results(folded_run)  # the report takes them: every video is evaluated
    assert [r.model for r in results] == ["knn", "logreg"] and not notes

    # Interrupted in fold 2: a rerun redoes fold 2 only and pools the same predictions.
    before, pooled = _mtimes(folded_run, "knn"), load_result(folded_run / "results" / "knn.json").predictions
    (fold_dir(folded_run, 2) / "results" / "knn.json").unlink()
    stages.classical(folded_run, backend, config, spec, models=["knn", "logreg"], progress=False)
    after = _mtimes(folded_run, "knn")
    assert after[:2] == before[:2] and after[2] != before[2]
    assert load_result(folded_run / "results" / "knn.json").predictions == pooled


def test_other_folds_redo_what_depends_on_them(folded_run: Path, tmp_path: Path) -> None:
    backend, profile = resolve_backend("cpu"), PROFILES["tiny"]
    knn_only = {"models": ["knn"], "learning_curve": False, "progress": False}
    stages.classical(folded_run, backend, profile.classical, profile.features, **knn_only)
    made_from = load_result(fold_dir(folded_run, 0) / "results" / "knn.json").config["features_fingerprint"]
    stages.prepare(folded_run / "demo_data", folded_run, folds=2, seed=profile.split_seed, progress=False)
    # The run's features.npz is stale now (another index): the stage recomputes it, then trains.
    stages.classical(folded_run, backend, profile.classical, profile.features, **knn_only)
    records = read_videos_csv(folded_run / "videos.csv")
    result = load_result(folded_run / "results" / "knn.json")
    assert {p.fold for p in result.predictions} == {0, 1} and len(result.predictions) == len(records)
    assert load_result(fold_dir(folded_run, 0) / "results" / "knn.json").config["features_fingerprint"] != made_from
    assert json.loads((folded_run / "run.json").read_text())["folds"] == 2


def test_profiles_state_their_folds() -> None:
    assert PROFILES["tiny"].folds == 1 and PROFILES["cpu"].folds == 1 and PROFILES["gpu"].folds == 5
    assert "5 outer folds" in PROFILES["gpu"].help_lines()[1]
    assert "1 fold: one group-disjoint train/val/test split" in PROFILES["tiny"].help_lines()[1]


@pytest.mark.slow
def test_tiny_run_with_three_folds_tests_every_video_once_and_resumes_per_fold(tmp_path: Path) -> None:
    """The done-when of outer folds: `run --profile tiny --folds 3` on a generated demo, killed in the
    middle of the deep stage and run again, writes results for all seven models whose predictions
    cover every indexed video exactly once; finished folds are not trained again."""
    run_dir = tmp_path / "run"
    command = ["run", "--run", str(run_dir), "--profile", "tiny", "--folds", "3"]
    env = {**os.environ, "ACTIONBENCH_DEVICE": "cpu", "MPLBACKEND": "Agg"}
    process = subprocess.Popen([sys.executable, "cli.py", *command], cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    done_fold = fold_dir(run_dir, 1) / "results" / "cnn2d.json"
    try:
        wait_for(done_fold, process, timeout=900)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        process.stdout.close()
    assert not (run_dir / "results" / "cnn2d.json").exists()  # killed before the pooled result
    kept = {path: path.stat().st_mtime_ns for path in run_dir.glob("folds/fold*/results/*.json")}
    assert len(kept) == 3 * 5 + 2  # every classical fold result, cnn2d's of folds 0 and 1

    result = CliRunner().invoke(main, ["--device", "cpu", *command])
    assert result.exit_code == 0, result.output
    assert {path: path.stat().st_mtime_ns for path in kept} == kept  # finished folds kept as they were
    records = read_videos_csv(run_dir / "videos.csv")
    assert {r.fold for r in records} == {0, 1, 2}
    indexed = sorted(r.video_id for r in records)
    for model in MODELS:
        pooled = load_result(run_dir / "results" / f"{model}.json")
        assert sorted(p.video_id for p in pooled.predictions) == indexed, model
        assert [f.fold for f in pooled.folds or []] == [0, 1, 2] and pooled.config["outer_cv"]["folds"] == 3
    assert (run_dir / "report" / "index.html").is_file() and "3 outer folds by group" in result.output
    # The report's uncertainty is over the groups of all three test folds, and agrees with a group
    # bootstrap recomputed from the pooled predictions and videos.csv alone.
    stats = json.loads((run_dir / "report" / "statistics.json").read_text())
    assert stats["resampling_unit"] == "group" and stats["n_test_videos"] == len(records)
    assert stats["n_test_groups"] == len({r.group for r in records}) and set(stats["models"]) == set(MODELS)
    for model in ("rf", "cnn3d"):
        for metric, (low, high) in independent_group_intervals(run_dir, model).items():
            reported = stats["models"][model][metric]
            assert abs(reported["low"] - low) <= 0.04 and abs(reported["high"] - high) <= 0.04, (model, metric)


def test_ddp_trains_every_fold_and_rank_0_writes_the_pooled_result(tmp_path: Path) -> None:
    """Under torchrun every rank walks the folds (a process group per fold); rank 0 alone pools."""
    from dataclasses import replace

    from pipelines.data.folds import group_kfold, outer_fold_splits
    from pipelines.data.records import write_videos_csv
    from tests.deep_data import make_run

    run_dir = make_run(tmp_path)
    records = read_videos_csv(run_dir / "videos.csv")
    classes, groups = [r.class_name for r in records], [r.group for r in records]
    fold_of = group_kfold(classes, groups, folds=2)
    per_fold = outer_fold_splits(classes, groups, fold_of, val=0.2)
    records = [
        replace(r, split=s[0], fold=f, fold_splits=" ".join(s))
        for r, f, s in zip(records, fold_of, per_fold, strict=True)
    ]
    write_videos_csv(run_dir / "videos.csv", records)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACTIONBENCH_DEVICE": "cpu"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(REPO / "cli.py"), "deep", "--run-dir", str(run_dir), "--model", "cnn2d", "--profile", "tiny",
               "--size", "16", "--epochs", "1", "--batch-size", "3"]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("2 outer folds: every video tested once") == 1  # only rank 0 reports
    pooled = load_result(run_dir / "results" / "cnn2d.json")
    assert sorted(p.video_id for p in pooled.predictions) == sorted(r.video_id for r in records)
    assert [f.fold for f in pooled.folds or []] == [0, 1] and pooled.config["world_size"] == 2
