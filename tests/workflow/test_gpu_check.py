from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check_deep.py"


def test_gpu_check_script_smoke_runs_on_the_cpu(tmp_path):
    out = tmp_path / "check.json"
    command = [
        sys.executable,
        str(SCRIPT),
        "--device",
        "cpu",
        "--steps",
        "1",
        "--warmup",
        "1",
        "--batch",
        "2",
        "--frames",
        "4",
        "--size",
        "16",
        "--classes",
        "3",
        "--out",
        str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert set(report["results"]) == {"fp32", "fp32_tf32", "amp_bf16_channels_last_3d"}
    assert report["results"]["amp_bf16_channels_last_3d"]["amp_dtype"] == "bfloat16"
    assert all(r["clips_per_second"] > 0 for r in report["results"].values())
    assert set(report["targets"]) == {"speedup_vs_fp32_at_least_2x", "amp_at_least_1000_clips_per_second"}
