"""The GPU-vs-CPU part of the classical benchmark: what runs on the CPU without cuML or a GPU."""

from __future__ import annotations

import warnings
from dataclasses import replace

import pytest

from core.backend import resolve_backend
from core.runfiles import RunPaths, read_json
from pipelines.features.store import save_features
from tests.classical_data import synthetic_features
from workflow.bench.classical import bench_classical, cpu_counterpart, gpu_vs_cpu_totals


def test_gpu_libraries_have_a_cpu_counterpart_and_cpu_ones_none():
    assert [cpu_counterpart(name, "cuml") for name in ("svm", "rf", "knn", "logreg")] == ["sklearn"] * 4
    assert cpu_counterpart("gb", "xgboost-cuda") == "xgboost-cpu"
    assert cpu_counterpart("svm", "sklearn") is None and cpu_counterpart("gb", "xgboost-cpu") is None


def test_totals_cover_only_models_timed_on_both_libraries():
    def row(model, gpu_seconds, gpu_f1, cpu=None):
        data = {"model": model, "ours": {"fit_seconds": gpu_seconds, "test_macro_f1": gpu_f1}}
        if cpu is not None:
            data["ours_cpu"] = {"fit_seconds": cpu[0], "test_macro_f1": cpu[1]}
        return data

    assert gpu_vs_cpu_totals([row("svm", 1.0, 0.5)]) == {}
    totals = gpu_vs_cpu_totals([row("svm", 1.0, 0.8, (6.0, 0.7)), row("gb", 1.0, 0.6, (2.0, 0.9)), row("knn", 9, 0.1)])
    assert totals["ours_cpu_models"] == ["svm", "gb"]
    assert (totals["ours_gpu_fit_seconds_total"], totals["ours_cpu_fit_seconds_total"]) == (2.0, 8.0)
    assert totals["gpu_speedup_over_cpu"] == pytest.approx(4.0)
    assert totals["ours_gpu_mean_macro_f1"] == pytest.approx(0.7)
    assert totals["ours_cpu_mean_macro_f1"] == pytest.approx(0.8)


def test_a_gpu_boosting_library_is_also_timed_on_the_cpu(tmp_path):
    # XGBoost with device="cuda" falls back to the CPU (with a warning) where no GPU is visible,
    # so the wiring of the GPU path runs here; cuML needs a GPU and is not exercised.
    save_features(RunPaths(tmp_path).features_npz, synthetic_features())
    cpu = resolve_backend("cpu")
    cuda_boosting = replace(cpu, boosting=replace(cpu.boosting, name="xgboost-cuda", device="gpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        report = bench_classical(tmp_path, cuda_boosting, models=["logreg", "gb"], repeats=1, progress=False)
    logreg, gb = report["models"]
    assert "ours_cpu" not in logreg  # already on its CPU library
    assert gb["ours"]["library"] == "xgboost-cuda" and gb["ours_cpu"]["library"] == "xgboost-cpu"
    assert gb["ours_cpu"]["params"] == gb["ours"]["params"] and gb["ours_cpu"]["fit_seconds"] > 0
    written = read_json(RunPaths(tmp_path).bench_dir / "classical.json")
    assert written["ours_cpu_models"] == ["gb"] and written["gpu_speedup_over_cpu"] > 0

    on_cpu = bench_classical(tmp_path, cpu, models=["gb"], repeats=1, progress=False)
    assert "ours_cpu" not in on_cpu["models"][0] and "gpu_speedup_over_cpu" not in on_cpu
