"""`predict` and the Python API on a real trained run: the stored test scores come back, every input
gets a row, `best` is the report's first model."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.metrics import f1_score

from cli import main
from core.runfiles import RunPaths, read_json
from core.schema import load_result
from pipelines.data.records import read_videos_csv, records_in_split
from workflow.predict import VideoPrediction, load_model

MODELS = ("svm", "rf", "knn", "logreg", "gb", "cnn2d", "cnn3d")
TOLERANCE = {"svm": 1e-4, "rf": 1e-4, "knn": 1e-4, "logreg": 1e-4, "gb": 1e-4, "cnn2d": 1e-3, "cnn3d": 1e-3}


def _test_videos(run_dir: Path) -> dict[str, str]:
    """path -> video id of the run's test videos."""
    return {r.path: r.video_id for r in records_in_split(read_videos_csv(RunPaths(run_dir).videos_csv), "test")}


def _predict(run_dir: Path, out: Path, *args: str) -> tuple[str, list[dict[str, str]]]:
    result = CliRunner().invoke(main, ["--device", "cpu", "predict", "--run", str(run_dir), "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    with open(out, newline="", encoding="utf-8") as handle:
        return result.output, list(csv.DictReader(handle))


@pytest.mark.parametrize("model", MODELS)
def test_predict_reproduces_the_stored_test_predictions(trained_run: Path, tmp_path: Path, model: str) -> None:
    videos = _test_videos(trained_run)
    output, rows = _predict(trained_run, tmp_path / "p.csv", "--model", model, *videos)
    stored = load_result(RunPaths(trained_run).result_json(model))
    by_id = {p.video_id: p for p in stored.predictions}
    assert f"model: {model} (as asked)" in output
    assert [row["path"] for row in rows] == list(videos)  # one row per video, in the order given
    assert list(rows[0])[:2 + len(stored.class_names)] == [
        "path", "predicted_class", *[f"score_{name}" for name in stored.class_names]
    ]  # fmt: skip
    for row in rows:
        expected = by_id[videos[row["path"]]]
        assert row["error"] == "" and float(row["seconds"]) > 0
        assert row["predicted_class"] == stored.class_names[expected.pred_label]
        scores = [float(row[f"score_{name}"]) for name in stored.class_names]
        np.testing.assert_allclose(scores, expected.scores, rtol=0, atol=TOLERANCE[model])
        assert row["top1_class"] == row["predicted_class"] and float(row["top1_score"]) == max(scores)


def test_best_is_the_model_with_the_highest_test_macro_f1(trained_run: Path, tmp_path: Path) -> None:
    f1 = {}
    for model in MODELS:  # every class is in the test split, so scikit-learn's macro-F1 is the report's
        result = load_result(RunPaths(trained_run).result_json(model))
        truth, predicted = [p.true_label for p in result.predictions], [p.pred_label for p in result.predictions]
        f1[model] = f1_score(truth, predicted, average="macro")
    winner = max(MODELS, key=lambda name: f1[name])  # first of the report's order on a tie
    output, rows = _predict(trained_run, tmp_path / "p.csv", next(iter(_test_videos(trained_run))))
    assert f"model: {winner} (best: the report ranks it first on test macro-F1 ({f1[winner]:.3f})" in output
    assert "among 7 valid result(s)" in output and len(rows) == 1


def test_unreadable_files_are_listed_with_the_reason(trained_run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "incoming" / "nested"
    folder.mkdir(parents=True)
    good = next(iter(_test_videos(trained_run)))
    shutil.copy(good, folder / "good.avi")
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "text.webm").write_text("not a video at all")
    os.symlink(tmp_path / "gone.avi", folder / "dangling.avi")
    (folder / "notes.txt").write_text("not a video name: not an input")
    output, rows = _predict(trained_run, tmp_path / "p.csv", "--model", "logreg", str(tmp_path / "incoming"))
    by_name = {Path(row["path"]).name: row for row in rows}
    assert sorted(by_name) == ["dangling.avi", "empty.mp4", "good.avi", "text.webm"]
    assert by_name["good.avi"]["error"] == "" and by_name["good.avi"]["predicted_class"]
    assert by_name["empty.mp4"]["error"] == "pre-flight: empty file: 0 bytes"
    assert by_name["text.webm"]["error"].startswith("pre-flight: not a video file")
    assert by_name["dangling.avi"]["error"].startswith("pre-flight: unreadable file")
    for name in ("empty.mp4", "text.webm", "dangling.avi"):
        assert by_name[name]["predicted_class"] == "" and by_name[name]["score_Punch"] == ""
    assert "3 video(s) could not be classified" in output


def test_no_video_classified_is_a_failure_with_the_csv_written(trained_run: Path, tmp_path: Path) -> None:
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.webm").write_text("not a video at all")
    out = tmp_path / "p.csv"
    result = CliRunner().invoke(
        main,
        [
            "--device",
            "cpu",
            "predict",
            "--run",
            str(trained_run),
            "--model",
            "logreg",
            "--out",
            str(out),
            str(tmp_path / "empty.mp4"),
            str(tmp_path / "text.webm"),
        ],
    )
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        f"Error: none of the 2 video(s) could be classified; the reasons are in the error column of {out}"
    )
    with open(out, newline="", encoding="utf-8") as handle:
        assert [row["error"].split(":")[0] for row in csv.DictReader(handle)] == ["pre-flight", "pre-flight"]


def test_a_missing_input_is_one_line_naming_it(trained_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--device", "cpu", "predict", "--run", str(trained_run), str(tmp_path / "no")])
    assert result.exit_code == 1 and result.output == f"Error: {tmp_path / 'no'}: no such file or folder\n"


def test_the_python_api(trained_run: Path) -> None:
    videos = _test_videos(trained_run)
    stored = load_result(RunPaths(trained_run).result_json("cnn3d"))
    model = load_model(trained_run, "cnn3d", device="cpu")
    assert (model.name, model.family, model.class_names) == ("cnn3d", "deep", stored.class_names)
    predictions = model.predict(list(videos))
    assert all(isinstance(row, VideoPrediction) and not row.error for row in predictions)
    by_id = {p.video_id: p for p in stored.predictions}
    for row in predictions:
        expected = by_id[videos[row.path]]
        assert row.predicted_class == stored.class_names[expected.pred_label]
        assert list(row.scores) == stored.class_names
        assert row.top(1)[0][0] == row.predicted_class


def test_bench_predict_writes_videos_per_second(trained_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "predict.json"
    result = CliRunner().invoke(
        main, ["--device", "cpu", "bench", "predict", "--run", str(trained_run), "--models", "rf,cnn2d", "--passes",
               "1", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = read_json(out)
    assert [row["model"] for row in report["models"]] == ["rf", "cnn2d"]
    n_test = len(_test_videos(trained_run))
    for row in report["models"]:
        assert row["videos"] == row["classified"] == n_test and len(row["videos_per_second"]) == 1
        assert row["videos_per_second"][0] > 0 and row["evaluation_videos_per_second"] > 0


def test_a_classical_model_on_features_of_older_code_predicts_with_a_warning(trained_run: Path, tmp_path: Path) -> None:
    """A run whose features.npz no longer matches this version's feature code (or its index): the model
    learnt from those features, new videos get this version's, and `predict` says so with the fix."""
    from pipelines.features.store import load_features, save_features

    videos = list(_test_videos(trained_run))[:2]
    output, _ = _predict(trained_run, tmp_path / "current.csv", "--model", "logreg", *videos)
    assert "older version of the feature code" not in output
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("cache"))
    features = load_features(run / "features.npz")
    features.fingerprint = "made-by-an-older-version"
    save_features(run / "features.npz", features)
    output, rows = _predict(run, tmp_path / "older.csv", "--model", "logreg", *videos)
    assert "older version of the feature code" in output and f"python cli.py features --run {run}" in output
    assert [row["error"] for row in rows] == ["", ""]
