from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from workflow.profiles import PROFILES

REPO = Path(__file__).resolve().parents[2]
MODELS = ("svm", "rf", "knn", "logreg", "gb", "cnn2d", "cnn3d")


def test_profiles_bundle_every_stage():
    assert set(PROFILES) == {"tiny", "cpu", "gpu"}
    for name, profile in PROFILES.items():
        assert profile.name == name and profile.description
        for model in ("cnn2d", "cnn3d"):
            config = profile.deep_config(model)
            assert config.model == model and config.profile == name
    tiny = PROFILES["tiny"]
    assert tiny.deep_config("cnn3d").weights == "none"  # tests never need downloaded weights
    assert len(tiny.demo.classes) * tiny.demo.groups * tiny.demo.clips_per_group <= 40


def _wait_for(path: Path, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(
                f"run exited ({process.returncode}) before {path.name} appeared:\n{process.stdout.read()}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"{path.name} did not appear within {timeout} s")
        time.sleep(0.2)


@pytest.mark.slow
def test_tiny_run_end_to_end_resumes_after_being_killed(tmp_path: Path):
    run_dir = tmp_path / "run"
    features = run_dir / "features.npz"
    env = {**os.environ, "ACTIONBENCH_DEVICE": "cpu", "MPLBACKEND": "Agg"}
    # 1. Start the whole comparison and kill it (SIGKILL, no clean-up) once the features stage is done.
    process = subprocess.Popen(
        [sys.executable, "cli.py", "run", "--run", str(run_dir), "--profile", "tiny"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        _wait_for(features, process, timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        process.stdout.close()
    stamp = features.stat().st_mtime_ns
    from pipelines.features.store import load_features

    fingerprint = load_features(features).fingerprint
    assert (run_dir / "videos.csv").exists() and (run_dir / "demo_data").is_dir()

    # 2. The same command again: finished stages are kept, the rest runs, the report lists every model.
    result = CliRunner().invoke(main, ["--device", "cpu", "run", "--run", str(run_dir), "--profile", "tiny"])
    assert result.exit_code == 0, result.output
    assert features.stat().st_mtime_ns == stamp
    assert load_features(features).fingerprint == fingerprint
    index = run_dir / "report" / "index.html"
    assert index.is_file() and f"Report: {index}" in result.output
    page = index.read_text()
    for model in MODELS:
        assert (run_dir / "results" / f"{model}.json").is_file()
        assert (run_dir / "report" / "statistics.json").is_file()
    assert "R3D-18 (3D CNN)" in page and "Gradient Boosting (XGBoost)" in page
    for stage in ("demo dataset", "prepare", "features", "classical", "cnn2d", "cnn3d", "analyze"):
        assert stage in result.output
    assert "macro-F1" in result.output  # the one-screen summary table
    assert (run_dir / "report" / "gradcam_cnn3d.png").is_file()


def test_run_rejects_an_unknown_profile(tmp_path: Path):
    result = CliRunner().invoke(main, ["run", "--run", str(tmp_path), "--profile", "huge"])
    assert result.exit_code == 2 and "huge" in result.output


def test_analyze_command_writes_the_report(tmp_path: Path):
    from tests.analysis.test_report import make_synthetic_run

    run_dir = make_synthetic_run(tmp_path / "run", n_test=12, with_models=False)
    result = CliRunner().invoke(
        main, ["--device", "cpu", "analyze", "--run", str(run_dir), "--resamples", "100", "--no-interpret"]
    )
    assert result.exit_code == 0, result.output
    assert f"report: {run_dir / 'report' / 'index.html'}" in result.output and "R3D-18 (3D CNN)" in result.output


def test_analyze_without_results_is_a_clear_error(tmp_path: Path):
    result = CliRunner().invoke(main, ["--device", "cpu", "analyze", "--run", str(tmp_path)])
    assert result.exit_code == 1 and "is not a run folder (no run.json, no results/)" in result.output
    (tmp_path / "results").mkdir()
    result = CliRunner().invoke(main, ["--device", "cpu", "analyze", "--run", str(tmp_path)])
    assert result.exit_code == 1 and "no valid result" in result.output
    assert not (tmp_path / "report").exists()


def test_run_reports_videos_that_fail_to_decode(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """A file that passed the pre-flight check but fails to decode later is skipped, counted in the
    stage line and in the run's closing line, and listed in rejected.csv."""
    from dataclasses import replace

    from core.backend import resolve_backend
    from core.runfiles import read_rejected
    from pipelines.data.records import read_videos_csv, write_videos_csv
    from workflow.run import run_comparison

    run_dir = tmp_path / "run"
    backend = resolve_backend("cpu")
    run_comparison(None, run_dir, profile="tiny", backend=backend, skip_deep=True, stop_after="prepare")
    records = read_videos_csv(run_dir / "videos.csv")
    broken = tmp_path / "broken.webm"
    broken.write_bytes(b"not a video" * 50)  # as if the file was damaged after `prepare`
    records.append(replace(records[0], video_id="x/broken", path=str(broken)))
    write_videos_csv(run_dir / "videos.csv", records)
    capsys.readouterr()
    run_comparison(None, run_dir, profile="tiny", backend=backend, skip_deep=True, stop_after="features")
    output = capsys.readouterr().out
    assert f"{len(records) - 1} videos x" in output and ", 1 video(s) rejected" in output
    assert f"1 video(s) rejected this run (see {run_dir / 'rejected.csv'})" in output
    assert [row["path"] for row in read_rejected(run_dir) if row["stage"] == "features"] == [str(broken)]


def test_missing_weights_are_repeated_in_the_closing_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from dataclasses import replace

    from core.backend import resolve_backend
    from workflow.run import _Run, closing_summary, weights_or_scratch

    run = _Run(tmp_path, PROFILES["tiny"], resolve_backend("cpu"), None, progress=True, split_seed=0)
    wanted = replace(PROFILES["tiny"].deep_config("cnn3d"), weights=str(tmp_path / "r3d_18.pth"))  # not there
    used, warning = weights_or_scratch(wanted)
    assert used.weights == "none" and warning is not None
    run.warn(warning)
    said_at_once = capsys.readouterr().out
    assert "WARNING R3D-18 (3D CNN)" in said_at_once and "r3d_18.pth" in said_at_once
    closing = closing_summary(run, None, 1.0)
    assert closing.startswith("WARNING R3D-18 (3D CNN)") and "trained from scratch (weights none)" in closing


@pytest.mark.slow
def test_quiet_run_prints_only_the_closing_summary(tmp_path: Path):
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(
        main, ["--quiet", "--device", "cpu", "run", "--run", str(run_dir), "--profile", "tiny", "--skip-deep"]
    )
    assert result.exit_code == 0, result.output
    output = result.output
    assert "\r" not in output and "===" not in output and "[analyze" not in output and "epoch" not in output
    assert output.startswith("Done in ") and f"Report: {run_dir / 'report' / 'index.html'}" in output
    assert "Gradient Boosting (XGBoost)" in output and "accuracy [95% CI]" in output
    assert len(output.splitlines()) <= 24  # one screen


def test_version_and_doctor_weights():
    version = CliRunner().invoke(main, ["--version"])
    assert version.exit_code == 0 and version.output.startswith("actionbench ")
    doctor = CliRunner().invoke(main, ["--device", "cpu", "doctor"])
    assert doctor.exit_code == 0, doctor.output
    assert "Stages:" in doctor.output and "Pretrained weights" in doctor.output
    assert "IMAGENET1K_V1" in doctor.output and "KINETICS400_V1" in doctor.output


def test_run_seed_chooses_the_split(tmp_path: Path):
    """`run --seed` is `prepare --seed`; without it the profile's split_seed (0) is used."""
    import json

    from core.backend import resolve_backend
    from pipelines.data.records import read_videos_csv
    from tests.pipelines.data.test_prepare_odd_inputs import ucf_tree
    from workflow.run import run_comparison

    root = ucf_tree(tmp_path / "data", groups=6)
    backend = resolve_backend("cpu")
    splits = {}
    for seed in (None, 0, 2):
        run_dir = tmp_path / f"run-{seed}"
        run_comparison(root, run_dir, profile="tiny", backend=backend, stop_after="prepare", seed=seed, progress=False)
        assert json.loads((run_dir / "run.json").read_text())["seed"] == (seed or 0)
        splits[seed] = [r.split for r in read_videos_csv(run_dir / "videos.csv")]
    assert splits[None] == splits[0] != splits[2]


@pytest.mark.slow
def test_cli_run_takes_a_seed(tmp_path: Path):
    import json

    from tests.pipelines.data.test_prepare_odd_inputs import ucf_tree

    root = ucf_tree(tmp_path / "data", groups=6)
    run_dir = tmp_path / "run"
    args = ["run", str(root), "--run", str(run_dir), "--profile", "tiny", "--skip-deep", "--seed", "2"]
    result = CliRunner().invoke(main, ["--device", "cpu", *args])
    assert result.exit_code == 0, result.output
    assert json.loads((run_dir / "run.json").read_text())["seed"] == 2
    assert (run_dir / "report" / "index.html").is_file()


def _run_until(args: list[str], marker: Path, log: Path) -> str:
    """Start ``cli.py ARGS`` and kill it (SIGKILL, no clean-up) as soon as ``marker`` exists; its output."""
    env = {**os.environ, "ACTIONBENCH_DEVICE": "cpu", "MPLBACKEND": "Agg"}
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "cli.py", *args], cwd=REPO, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
        try:
            deadline = time.monotonic() + 600
            while not marker.exists():
                assert process.poll() is None, f"exited ({process.returncode}) early:\n{log.read_text()}"
                assert time.monotonic() < deadline, f"{marker} did not appear:\n{log.read_text()}"
                time.sleep(0.05)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return log.read_text()


def _report_models(run_dir: Path) -> list[str]:
    """The models the report compares, in its order (the model column of table_all.csv)."""
    with open(run_dir / "report" / "table_all.csv", newline="") as handle:
        return [row["model"] for row in csv.DictReader(handle)]


def _epochs_done(checkpoint: Path) -> int:
    from models.deep.checkpoint import load_checkpoint

    return load_checkpoint(checkpoint)["train_state"]["epoch"] + 1


@pytest.mark.slow
def test_killed_cnns_resume_in_run_and_in_deep_and_stale_results_are_left_out(tmp_path: Path):
    """The issue's reproducer (5 groups x 1 clip: 9 training videos, so batches of 8 leave one clip,
    which used to crash R3D-18's BatchNorm), killed in the middle of each CNN's training."""
    from core.schema import load_result
    from pipelines.data.records import read_videos_csv
    from pipelines.video.codecs import read_frames, write_video

    data, run_dir = tmp_path / "X", tmp_path / "Y"
    made = CliRunner().invoke(main, ["demo-data", str(data), "--groups", "5", "--clips-per-group", "1", "--size",
                                     "64x48", "--seconds", "1-2"])  # fmt: skip
    assert made.exit_code == 0, made.output
    run_args = ["run", str(data), "--run", str(run_dir), "--profile", "tiny"]
    checkpoints = run_dir / "checkpoints"

    # 1. kill -9 once cnn2d finished its first epoch (of 2).
    _run_until(run_args, checkpoints / "cnn2d" / "last.pt", tmp_path / "first.log")
    assert _epochs_done(checkpoints / "cnn2d" / "last.pt") == 1
    # 2. `run` again continues cnn2d with epoch 2 (it used to restart at epoch 1); killed in cnn3d's epoch 2.
    second = _run_until(run_args, checkpoints / "cnn3d" / "last.pt", tmp_path / "second.log")
    assert f"cnn2d: resuming from {checkpoints / 'cnn2d' / 'last.pt'} after epoch 1" in second, second
    assert "cnn2d epoch 2:" in second and "cnn2d epoch 1:" not in second
    cnn2d = load_result(run_dir / "results" / "cnn2d.json")
    assert cnn2d.config["epochs_run"] == 2 and len(cnn2d.config["history"]) == 2
    assert _epochs_done(checkpoints / "cnn3d" / "last.pt") == 1
    # 3. `deep --profile tiny --resume` takes over the checkpoint `run` wrote: the same settings.
    deep = CliRunner().invoke(main, ["--device", "cpu", "deep", "--run", str(run_dir), "--model", "cnn3d",
                                     "--profile", "tiny", "--resume", "--learning-curve"])  # fmt: skip
    assert deep.exit_code == 0, deep.output
    assert f"cnn3d: resuming from {checkpoints / 'cnn3d' / 'last.pt'} after epoch 1" in deep.output, deep.output
    assert "cnn3d epoch 2:" in deep.output and "cnn3d epoch 1:" not in deep.output
    # 4. `run` once more finds every model done and writes the report with all seven.
    done = CliRunner().invoke(main, ["--device", "cpu", *run_args])
    assert done.exit_code == 0, done.output
    assert not re.search(r"epoch \d+:|resuming|retraining", done.output), done.output  # nothing trained
    assert _report_models(run_dir) == [*MODELS]

    # 5. A test video overwritten after the CNNs were scored, then `run --skip-deep`: the classical
    # models are redone on the new content; the CNN results scored the old one and are left out, named.
    test_video = Path(next(r.path for r in read_videos_csv(run_dir / "videos.csv") if r.split == "test"))
    write_video(test_video, read_frames(test_video)[::-1].copy(), 25.0, "vp9")
    again = CliRunner().invoke(main, ["--device", "cpu", *run_args, "--skip-deep"])
    assert again.exit_code == 0, again.output
    for model in ("cnn2d", "cnn3d"):
        assert f"{model}.json left out: made from another index" in again.output
        assert f"python cli.py deep --run {run_dir} --model {model} --profile tiny --learning-curve" in again.output
    assert _report_models(run_dir) == [*MODELS[:5]]
