from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from core.runfiles import read_rejected
from core.schema import load_result
from pipelines.data.records import read_videos_csv, write_videos_csv
from tests.deep_data import make_run

REPO = Path(__file__).resolve().parents[2]


def test_ddp_with_two_gloo_processes_writes_one_result_covering_every_test_video(tmp_path):
    run_dir = make_run(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACTIONBENCH_DEVICE": "cpu"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(REPO / "cli.py"),
        "deep",
        "--run-dir",
        str(run_dir),
        "--model",
        "cnn2d",
        "--profile",
        "tiny",
        "--size",
        "16",
        "--epochs",
        "1",
        "--batch-size",
        "3",
    ]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("cnn2d: test accuracy") == 1  # only rank 0 reports

    assert [p.name for p in (run_dir / "results").iterdir()] == ["cnn2d.json"]
    result = load_result(run_dir / "results" / "cnn2d.json")
    test_ids = sorted(r.video_id for r in read_videos_csv(run_dir / "videos.csv") if r.split == "test")
    assert sorted(p.video_id for p in result.predictions) == test_ids  # every test video exactly once
    assert result.metrics.n_videos == len(test_ids)
    assert result.config["world_size"] == 2
    assert sorted(p.name for p in (run_dir / "checkpoints" / "cnn2d").iterdir()) == ["best.pt", "data.json", "last.pt"]


def test_features_under_torchrun_with_two_gloo_processes_match_one_process(tmp_path):
    """Two ranks share the videos (whole batches each) and rank 0 writes: features.npz is the same,
    array for array, as one process's; a broken video is rejected once, by rank 0 only."""
    run_dir = make_run(tmp_path)
    records = read_videos_csv(run_dir / "videos.csv")
    broken = tmp_path / "data" / "Left" / "v_Left_g06_c09.avi"
    broken.write_bytes(b"RIFF not a video" * 40)
    records.append(replace(records[0], video_id="Left/v_Left_g06_c09", path=str(broken), group="Left_g06"))
    write_videos_csv(run_dir / "videos.csv", records)
    single_dir = tmp_path / "single"
    shutil.copytree(run_dir, single_dir)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACTIONBENCH_DEVICE": "cpu"}
    features = [str(REPO / "cli.py"), "features", "--profile", "tiny", "--run-dir"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run([*torchrun, *features, str(run_dir)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("features.npz (numpy, 2 processes)") == 1, done.stdout  # rank 0 reports
    assert "decode routes (clips): dali-cpu 21" in done.stdout
    single = subprocess.run([sys.executable, *features, str(single_dir)], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]
    with np.load(run_dir / "features.npz") as shared, np.load(single_dir / "features.npz") as alone:
        assert sorted(shared.files) == sorted(alone.files)
        for name in alone.files:
            assert np.array_equal(shared[name], alone[name]), name
        assert len(alone["video_ids"]) == len(records) - 1
    for directory in (run_dir, single_dir):
        assert [row["path"] for row in read_rejected(directory)] == [str(broken)]
