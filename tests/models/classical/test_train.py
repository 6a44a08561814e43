from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.metrics import roc_auc_score

import models.classical.train as train_classical
from cli import main
from core.backend import resolve_backend
from core.runfiles import RunPaths, read_json
from core.schema import load_result, validate_result
from models.classical.estimators import MODEL_NAMES, ClassicalModel
from models.classical.persist import load_classical_model
from models.classical.train import (
    ClassicalConfig,
    fit_learning_curve,
    group_cv_folds,
    measure_decode_features_seconds,
    run_classical,
    select_candidate,
    select_group_fraction,
    split_features,
    train_classical_models,
    tune_model,
)
from pipelines.data.records import index_fingerprint, read_videos_csv, write_videos_csv
from pipelines.features.store import features_fingerprint, load_features, save_features
from tests.classical_data import shared_feature_run, small_spec, synthetic_features
from workflow.bench.classical import bench_classical

# Two candidates per model and 2 folds keep the suite quick; the default grids are exercised by the CLI.
SMALL_GRIDS = {
    "svm": {"C": [1.0, 10.0]},
    "rf": {"max_depth": [4, 8], "n_estimators": [30]},
    "knn": {"n_neighbors": [3, 5]},
    "logreg": {"C": [0.1, 1.0]},
    "gb": {"max_depth": [2, 3], "n_estimators": [30]},
}
FAST = ClassicalConfig(cv_folds=2, grids=SMALL_GRIDS, learning_curve_seeds=(0, 1), end_to_end_videos=2)


@pytest.fixture(scope="module")
def backend():  # type: ignore[no-untyped-def]
    return resolve_backend("cpu")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, backend):  # type: ignore[no-untyped-def]
    """A copy of the generated run with all five models trained, learning curves included."""
    run_dir = tmp_path_factory.mktemp("classical_run") / "run"
    shutil.copytree(shared_feature_run(tmp_path_factory), run_dir)
    results = run_classical(
        run_dir, backend, learning_curve=True, config=FAST, progress=False, feature_spec=small_spec()
    )
    return run_dir, results


def test_every_model_writes_a_valid_result_and_a_saved_model(trained_run) -> None:  # type: ignore[no-untyped-def]
    run_dir, results = trained_run
    paths = RunPaths(run_dir)
    features = load_features(paths.features_npz)
    test_ids = set(features.video_ids[features.splits == "test"])
    assert [result.model for result in results] == list(MODEL_NAMES)
    for result in results:
        data = read_json(paths.result_json(result.model))
        validate_result(data)
        assert data["family"] == "classical"
        assert data["backend"] == ("xgboost-cpu" if result.model == "gb" else "sklearn")
        assert data["device"] == "cpu"
        assert {row["video_id"] for row in data["predictions"]} == test_ids
        assert data["index_fingerprint"] == index_fingerprint(read_videos_csv(paths.videos_csv))
        assert data["validation"]["n_videos"] == int((features.splits == "val").sum())
        cost = data["cost"]
        assert cost["fit_seconds"] > 0 and cost["search_seconds"] > 0
        assert cost["inference_seconds_per_video_model"] > 0
        assert cost["inference_seconds_per_video_end_to_end"] > cost["inference_seconds_per_video_model"]
        model_path = run_dir / data["artifacts"]["model"]
        assert model_path.exists() and cost["model_bytes"] == model_path.stat().st_size
        assert cost["parameters"] > 0
        assert cost["peak_memory_fit_bytes"] >= 0 and cost["peak_memory_predict_bytes"] >= 0
        assert cost["memory_kind"] == "process_rss_peak_delta"
        config = data["config"]
        assert config["params"] in [row["params"] for row in config["cv_results"]]
        assert config["selection_rule"] == "best" and config["params"] == config["best_cv_params"]
        assert config["cv_macro_f1"] == max(row["mean_macro_f1"] for row in config["cv_results"])
        assert all(row["cost"] > 0 and row["mean_fit_seconds"] > 0 for row in config["cv_results"])
        curve = data["learning_curve"]
        assert [point["fraction"] for point in curve] == [0.1, 0.25, 0.5, 0.75, 1.0]
        assert curve[-1]["n_train_videos"] == data["config"]["n_train_videos"]


def test_scores_sum_to_one_and_roc_auc_matches_scikit_learn(trained_run) -> None:  # type: ignore[no-untyped-def]
    run_dir, _ = trained_run
    for name in MODEL_NAMES:
        result = load_result(RunPaths(run_dir).result_json(name))
        scores = np.array([row.scores for row in result.predictions])
        truth = np.array([row.true_label for row in result.predictions])
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-6)
        expected = roc_auc_score(truth, scores, multi_class="ovr", average="macro")
        assert result.metrics.roc_auc_macro_ovr == pytest.approx(expected, abs=1e-12)
        assert [row.pred_label for row in result.predictions] == list(scores.argmax(axis=1))


def test_saved_model_reproduces_the_saved_scores(trained_run) -> None:  # type: ignore[no-untyped-def]
    run_dir, _ = trained_run
    features = load_features(RunPaths(run_dir).features_npz)
    test = split_features(features)["test"]
    result = load_result(RunPaths(run_dir).result_json("logreg"))
    assert result.artifacts["model"] == "models/logreg.skops"
    model = load_classical_model(run_dir / result.artifacts["model"])
    np.testing.assert_allclose(model.predict_proba(test.X), [row.scores for row in result.predictions], atol=1e-9)


def test_finished_models_are_skipped_unless_forced(trained_run, backend, capsys) -> None:  # type: ignore[no-untyped-def]
    run_dir, _ = trained_run
    path = RunPaths(run_dir).result_json("knn")
    before = path.stat().st_mtime_ns
    run_classical(run_dir, backend, models=["knn"], learning_curve=True, config=FAST, progress=False)
    assert path.stat().st_mtime_ns == before
    changed = ClassicalConfig(
        cv_folds=2, learning_curve_seeds=(0, 1), grids={"knn": {"n_neighbors": [3], "weights": ["uniform"]}}
    )
    capsys.readouterr()
    result = run_classical(run_dir, backend, models=["knn"], config=changed, progress=False)[0]
    assert result.config["params"] == {"n_neighbors": 3, "weights": "uniform"}
    assert path.stat().st_mtime_ns != before
    # Other settings retrain, and say so (they used to retrain silently).
    assert f"{path} was made with other settings (grid, folds, seed, selection rule or library): retraining knn" in (
        capsys.readouterr().err
    )
    forced = run_classical(run_dir, backend, models=["knn"], config=changed, force=True, progress=False)[0]
    assert forced.learning_curve is None


def test_cv_folds_never_share_a_group(trained_run) -> None:  # type: ignore[no-untyped-def]
    run_dir, _ = trained_run
    train = split_features(load_features(RunPaths(run_dir).features_npz))["train"]
    folds = group_cv_folds(train, n_splits=3, seed=0)
    assert len(folds) == 3
    scored = np.concatenate([score_rows for _, score_rows in folds])
    assert sorted(scored) == list(range(len(train)))  # every video scored exactly once
    for fit_rows, score_rows in folds:
        assert not set(train.groups[fit_rows]) & set(train.groups[score_rows])


def test_test_split_is_never_seen_before_the_final_evaluation(tmp_path, backend, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    features = synthetic_features()
    test_rows = {row.tobytes() for row in features.X[features.splits == "test"]}
    train_ids = set(features.video_ids[features.splits == "train"])
    fitted_rows: list[bytes] = []
    tuner_inputs: list[set[str]] = []
    original_fit, original_tune = ClassicalModel.fit, train_classical.tune_model

    def recording_fit(self, X, y, groups=None):  # type: ignore[no-untyped-def]
        fitted_rows.extend(
            np.asarray(X, dtype=np.float32).tobytes()[i : i + X.shape[1] * 4]
            for i in range(0, X.size * 4, X.shape[1] * 4)
        )
        return original_fit(self, X, y, groups)

    def recording_tune(name, library, train, grid, **kwargs):  # type: ignore[no-untyped-def]
        tuner_inputs.append(set(train.video_ids))
        return original_tune(name, library, train, grid, **kwargs)

    monkeypatch.setattr(ClassicalModel, "fit", recording_fit)
    monkeypatch.setattr(train_classical, "tune_model", recording_tune)
    tiny_grids = ClassicalConfig(cv_folds=2, grids=SMALL_GRIDS, learning_curve_seeds=(0,))
    train_classical_models(
        features, tmp_path, backend, models=["svm", "gb"], learning_curve=True, config=tiny_grids, progress=False
    )
    assert tuner_inputs == [train_ids, train_ids]
    assert fitted_rows and not test_rows & set(fitted_rows)


def test_one_standard_error_rule_prefers_the_cheapest_candidate_within_noise() -> None:
    candidates = [
        {"params": {"n": 100}, "mean_macro_f1": 0.80, "se_macro_f1": 0.03, "cost": 100.0},
        {"params": {"n": 50}, "mean_macro_f1": 0.78, "se_macro_f1": 0.05, "cost": 50.0},
        {"params": {"n": 25}, "mean_macro_f1": 0.76, "se_macro_f1": 0.01, "cost": 25.0},  # below 0.80 - 0.03
    ]
    selected, top, threshold = select_candidate(candidates, "one-se")
    assert selected["params"] == {"n": 50} and top["params"] == {"n": 100}
    assert threshold == pytest.approx(0.77)
    best, _, _ = select_candidate(candidates, "best")
    assert best["params"] == {"n": 100}
    with pytest.raises(ValueError, match="selection"):
        ClassicalConfig(selection="cheapest")


def test_tuning_with_the_one_se_rule_picks_cheaper_trees_on_an_easy_problem() -> None:
    train = split_features(synthetic_features(separation=3.0, seed=2))["train"]
    grid = {"n_estimators": [10, 40]}
    one_se = tune_model("rf", "sklearn", train, grid, n_splits=2, n_jobs=1)
    best = tune_model("rf", "sklearn", train, grid, n_splits=2, n_jobs=1, selection="best")
    assert one_se.top_score == pytest.approx(1.0) and one_se.best_params == {"n_estimators": 10}
    assert best.best_score == pytest.approx(one_se.top_score)


def test_end_to_end_time_is_measured_for_features_made_with_a_profile_spec(trained_run, backend) -> None:  # type: ignore[no-untyped-def]
    # The workflow's tiny profile extracts with its own FeatureSpec and calls the classical stage
    # without it; the spec is recovered from the features' fingerprint.
    run_dir, _ = trained_run
    features = load_features(RunPaths(run_dir).features_npz)
    seconds, note = measure_decode_features_seconds(run_dir, backend, features, n_videos=1)
    assert seconds is not None and seconds > 0, note


def test_group_fractions_are_stratified_with_a_group_per_class() -> None:
    train = split_features(synthetic_features(groups_per_class=12))["train"]  # 9 train groups per class
    for fraction, seed in [(0.1, 0), (0.5, 1), (1.0, 2)]:
        subset = train.subset(select_group_fraction(train, fraction, seed))
        for label in range(3):
            kept = len(set(subset.groups[subset.y == label]))
            assert kept == max(1, round(fraction * 9))
    assert len(train.subset(select_group_fraction(train, 1.0, 0))) == len(train)


def test_learning_curve_retrains_per_fraction_and_rises_on_an_easy_problem() -> None:
    features = synthetic_features(groups_per_class=14, n_per_group=3, separation=0.6, n_features=20)
    splits = split_features(features)
    points, models = fit_learning_curve(
        "logreg", "sklearn", {"C": 1.0}, splits["train"], splits["test"], 3, seeds=(0, 1, 2), keep_models=True
    )
    sizes = [point.n_train_videos for point in points]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    per_fraction = [models[i * 3] for i in range(len(points))]  # seed 0 of each fraction
    coefficients = [model.model_.steps[-1][1].coef_ for model in per_fraction]
    for first, second in zip(coefficients[:-1], coefficients[1:], strict=True):
        assert not np.allclose(first, second)
    f1 = [point.macro_f1_mean for point in points]
    assert f1[-1] > f1[0]
    assert all(later >= earlier - 0.1 for earlier, later in zip(f1[:-1], f1[1:], strict=True))  # monotone-ish
    assert points[-1].macro_f1_std == pytest.approx(0.0)  # all groups, deterministic model


def test_bench_writes_json_with_both_configurations(tmp_path, backend) -> None:  # type: ignore[no-untyped-def]
    save_features(RunPaths(tmp_path).features_npz, synthetic_features())
    report = bench_classical(tmp_path, backend, models=["logreg", "gb"], repeats=1, progress=False)
    written = read_json(RunPaths(tmp_path).bench_dir / "classical.json")
    assert written["speedup"] == pytest.approx(report["speedup"])
    assert [row["model"] for row in written["models"]] == ["logreg", "gb"]
    gb = written["models"][1]
    assert gb["notebook"]["estimator"].startswith("GradientBoostingClassifier")
    assert gb["ours"]["library"] == "xgboost-cpu" and gb["ours"]["fit_seconds"] > 0
    for side in ("ours", "notebook"):
        spread = gb[side]["fit_seconds_spread"]
        assert spread["min"] == gb[side]["fit_seconds"] <= spread["median"] <= spread["max"]
    assert 0 <= written["ours_mean_macro_f1"] <= 1 and "speedup_met" in written["target"]


def test_cli_classical_runs_and_rejects_bad_models(trained_run) -> None:  # type: ignore[no-untyped-def]
    run_dir, _ = trained_run
    runner = CliRunner()
    ok = runner.invoke(main, ["--device", "cpu", "classical", "--run", str(run_dir), "--models", "logreg"])
    assert ok.exit_code == 0, ok.output
    assert "logreg" in ok.output and "macro-F1" in ok.output
    bad = runner.invoke(main, ["--device", "cpu", "classical", "--run", str(run_dir), "--models", "logreg,tree"])
    assert bad.exit_code == 2 and "tree" in bad.output
    missing = runner.invoke(main, ["--device", "cpu", "classical", "--run", str(run_dir / "nowhere")])
    assert missing.exit_code == 1 and "features.npz" in missing.output


def _copy_of_shared_run(tmp_path, tmp_path_factory):  # type: ignore[no-untyped-def]
    run_dir = tmp_path / "run"
    shutil.copytree(shared_feature_run(tmp_path_factory), run_dir)
    return run_dir


def test_features_of_another_index_are_recomputed_and_the_advice_redoes_stale_results(
    tmp_path, tmp_path_factory, backend, capsys
) -> None:  # type: ignore[no-untyped-def]
    """`prepare` rerun on other data, then `classical --force`: it used to train on the old
    features.npz and print old-dataset scores as new, and `analyze` advised --force, which looped."""
    from analysis.results import load_results

    run_dir = _copy_of_shared_run(tmp_path, tmp_path_factory)
    paths = RunPaths(run_dir)
    run_classical(run_dir, backend, models=["logreg", "knn"], config=FAST, progress=False)
    # Another index, as `prepare` would write it: group 8 is gone, group 5 moves from train to test.
    records = [r for r in read_videos_csv(paths.videos_csv) if not r.group.endswith("_g08")]
    records = [replace(r, split="test") if r.group.endswith("_g05") else r for r in records]
    write_videos_csv(paths.videos_csv, records)
    capsys.readouterr()
    logreg = run_classical(run_dir, backend, models=["logreg"], config=FAST, force=True, progress=False)[0]
    err = capsys.readouterr().err
    assert f"{paths.features_npz} was computed from another index" in err and "recomputing it" in err
    features = load_features(paths.features_npz)
    assert features.fingerprint == features_fingerprint(paths.videos_csv, small_spec())
    assert sorted(features.video_ids) == sorted(r.video_id for r in records)
    assert sorted(p.video_id for p in logreg.predictions) == sorted(r.video_id for r in records if r.split == "test")
    assert logreg.index_fingerprint == index_fingerprint(records)

    # knn was not retrained: the report leaves it out, and the command it names brings it back.
    results, notes = load_results(run_dir)
    assert [r.model for r in results] == ["logreg"]
    advice = f"python cli.py classical --run {run_dir} --models knn"
    assert len(notes) == 1 and notes[0].startswith("knn.json left out: made from another index") and advice in notes[0]
    redo = CliRunner().invoke(main, ["--device", "cpu", *advice.split()[2:], "--profile", "tiny"])
    assert redo.exit_code == 0, redo.output
    assert [r.model for r in load_results(run_dir)[0]] == ["knn", "logreg"] and load_results(run_dir)[1] == []


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_an_unreadable_result_is_set_aside_and_retrained(tmp_path, tmp_path_factory, backend, capsys, damage) -> None:  # type: ignore[no-untyped-def]
    run_dir = _copy_of_shared_run(tmp_path, tmp_path_factory)
    path = RunPaths(run_dir).result_json("logreg")
    first = run_classical(run_dir, backend, models=["logreg"], config=FAST, progress=False)[0]
    text = path.read_text()
    path.write_text("" if damage == "empty" else text[: len(text) // 2])
    capsys.readouterr()
    again = run_classical(run_dir, backend, models=["logreg"], config=FAST, progress=False)[0]
    err = capsys.readouterr().err
    assert f"{path} cannot be read (" in err and "kept as logreg.json.corrupt; retraining logreg" in err
    assert (path.parent / "logreg.json.corrupt").read_text() == ("" if damage == "empty" else text[: len(text) // 2])
    assert load_result(path) == again and again.predictions == first.predictions
