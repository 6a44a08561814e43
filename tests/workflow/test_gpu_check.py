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


GPU_CHECK = SCRIPT.parent / "gpu_check.py"
EXPECTED_CHECKS = [
    "doctor", "pytest_gpu", "cnn_train_step", "ddp_step", "r3d18_throughput", "feature_kernel", "nvdec_decode",
    "augmentation_gpu_vs_cpu", "classical_gpu", "cache_vs_nvdec",
]  # fmt: skip


def test_the_one_shot_gpu_check_runs_every_check_in_smoke_mode_on_the_cpu(tmp_path):
    """The same code as on a GPU at toy sizes: one JSON, one line per check; what needs a GPU (or
    CuPy) is skipped with its reason, the rest passes, and the decode routes are the CPU's."""
    out = tmp_path / "gpu_check.json"
    command = [sys.executable, str(GPU_CHECK), "--smoke", "--out", str(out)]
    command += ["--pytest-paths", "tests/core/test_backend.py"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=SCRIPT.parents[1])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["mode"] == "smoke" and list(report["checks"]) == EXPECTED_CHECKS
    lines = done.stdout.splitlines()
    assert [line.split()[1] for line in lines[: len(EXPECTED_CHECKS)]] == EXPECTED_CHECKS
    checks = report["checks"]
    skipped = {name for name, check in checks.items() if check["status"] == "skip"}
    assert skipped == {"feature_kernel", "augmentation_gpu_vs_cpu"}
    assert "GPU" in checks["augmentation_gpu_vs_cpu"]["reason"]
    assert checks["pytest_gpu"]["skipped"] >= 1 and checks["pytest_gpu"]["failed"] == 0
    assert all(model["amp_dtype"] == "bfloat16" and model["channels_last"] for model in
               checks["cnn_train_step"]["models"].values())  # fmt: skip
    assert checks["ddp_step"]["backend"] == "gloo"
    routes = {case: c["expected_route"] for case, c in checks["nvdec_decode"]["cases"].items()}
    assert routes["vp9 320x240"] == "dali-cpu" and routes["h264 320x240"] == "pyav"
    assert all(c["ok"] for c in checks["nvdec_decode"]["cases"].values())
    assert set(checks["classical_gpu"]["models"]) == {"svm", "rf", "knn", "logreg", "gb"}
    assert checks["cache_vs_nvdec"]["cache"]["decode_routes"].keys() == {"pyav", "cache"}
    assert checks["cache_vs_nvdec"]["no_cache"]["decode_routes"].keys() == {"dali-cpu"}
