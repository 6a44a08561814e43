"""The stage functions on the odd inputs of issue 14: a video deleted after `prepare`, `analyze`
pointed at a dataset or failing after an earlier report, and temporaries left by `kill -9`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from cli import main
from core.runfiles import DEAD_WRITER_SECONDS, read_rejected
from tests.core.test_runfiles import age_file, killed_writer
from tests.pipelines.data.test_prepare_odd_inputs import ucf_tree


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, ["--device", "cpu", *args], catch_exceptions=False)


def test_features_after_a_video_was_deleted_rejects_it_and_goes_on(tmp_path: Path) -> None:
    root = ucf_tree(tmp_path / "data", groups=3)
    run = tmp_path / "run"
    assert invoke("prepare", str(root), "--run", str(run)).exit_code == 0
    deleted = root / "Punch" / "v_Punch_g02_c01.avi"
    deleted.unlink()
    result = invoke("features", "--run", str(run), "--profile", "tiny")
    assert result.exit_code == 0, result.output
    assert "8 videos x" in result.output
    assert f"1 video(s) rejected this run (see {run / 'rejected.csv'})" in result.output
    (row,) = [row for row in read_rejected(run) if row["stage"] == "features"]
    assert row["path"] == str(deleted)
    assert "cannot read it (No such file or directory)" in row["reason"]
    assert "rerun `python cli.py prepare`" in row["reason"]


def test_analyze_refuses_a_folder_that_is_not_a_run_before_writing_anything(tmp_path: Path) -> None:
    root = ucf_tree(tmp_path / "data", groups=3)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    result = invoke("analyze", "--run", str(root))
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: {root} is not a run folder (no run.json, no results/): pass the folder given to `prepare --run` "
        f"or `run --run`, e.g. runs/demo, not the dataset"
    ]
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # no report/ left behind


def test_analyze_of_a_run_without_results_leaves_no_empty_report(tmp_path: Path) -> None:
    root = ucf_tree(tmp_path / "data", groups=3)
    run = tmp_path / "run"
    assert invoke("prepare", str(root), "--run", str(run)).exit_code == 0
    result = invoke("analyze", "--run", str(run))
    assert result.exit_code == 1 and "no valid result" in result.output
    assert not (run / "report").exists()


def test_a_failed_analyze_marks_the_previous_report_stale(tmp_path: Path) -> None:
    from tests.analysis.test_report import make_synthetic_run

    run = make_synthetic_run(tmp_path / "run", n_test=12, with_models=False)
    report = run / "report"
    report.mkdir()
    (report / "index.html").write_text("<html>the report of an earlier analysis</html>")
    kept = tmp_path / "results-kept"
    shutil.move(run / "results", kept)
    (run / "results").mkdir()
    for result_file in kept.iterdir():  # every result unreadable: the analysis fails
        (run / "results" / result_file.name).write_text("{")

    args = ("analyze", "--run", str(run), "--profile", "tiny", "--resamples", "100", "--no-interpret")
    failed = invoke(*args)
    assert failed.exit_code == 1 and "no valid result" in failed.output
    assert not (report / "index.html").exists()
    assert (report / "index.stale.html").read_text() == "<html>the report of an earlier analysis</html>"
    note = (report / "STALE.txt").read_text()
    assert "has not finished" in note and f"python cli.py analyze --run {run}" in note

    shutil.rmtree(run / "results")
    shutil.move(kept, run / "results")
    assert invoke(*args).exit_code == 0
    assert "cnn3d" in (report / "index.html").read_text()
    assert not (report / "STALE.txt").exists() and not (report / "index.stale.html").exists()


def test_each_stage_removes_temporaries_left_by_a_killed_writer(tmp_path: Path) -> None:
    root = ucf_tree(tmp_path / "data", groups=3)
    run = tmp_path / "run"
    left = killed_writer(run / "videos.csv")
    age_file(left, DEAD_WRITER_SECONDS + 5)
    assert invoke("prepare", str(root), "--run", str(run)).exit_code == 0
    assert not left.exists()

    left = killed_writer(run / "results" / "svm.json")
    age_file(left, DEAD_WRITER_SECONDS + 5)
    assert invoke("features", "--run", str(run), "--profile", "tiny").exit_code == 0
    assert not left.exists()
    assert not list(run.rglob("*.tmp"))
    assert json.loads((run / "run.json").read_text())["n_videos"] == 9
