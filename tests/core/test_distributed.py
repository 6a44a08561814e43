from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from core.schema import load_result
from pipelines.data.records import read_videos_csv
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
