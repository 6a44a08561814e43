"""Throughput of ``predict``: videos/s of each trained model of a run on the run's test videos,
end to end (pre-flight check, decoding, features or clips, model), next to the inference cost the
evaluation measured (``results/<model>.json``: seconds per video, end to end)."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from analysis.names import MODEL_ORDER
from core.backend import Backend, library_versions
from core.runfiles import RunPaths, atomic_write_json
from core.schema import load_result
from models.classical.persist import model_file
from pipelines.data.records import read_videos_csv, records_in_split
from workflow.predict import load_model


def saved_models(run_dir: str | os.PathLike[str]) -> list[str]:
    """The models of the run with a saved model file, in the report's order."""
    models_dir = RunPaths(run_dir).models_dir
    return [
        name for name in MODEL_ORDER if model_file(models_dir, name).is_file() or (models_dir / f"{name}.pt").is_file()
    ]


def default_out(run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    return Path(out) if out else RunPaths(run_dir).bench_dir / "predict.json"


def _evaluation_rate(run_dir: str | os.PathLike[str], model: str) -> float | None:
    """Videos/s implied by the evaluation's end-to-end seconds per video (None when not recorded)."""
    try:
        seconds = load_result(RunPaths(run_dir).result_json(model)).cost.inference_seconds_per_video_end_to_end
    except (ValueError, OSError):
        return None
    return 1.0 / seconds if seconds else None


def bench_predict(
    run_dir: str | os.PathLike[str],
    backend: Backend,
    *,
    models: Sequence[str] | None = None,
    passes: int = 2,
    out: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Time ``passes`` predict passes per model over the run's test videos; write JSON to ``out``
    (default ``RUN_DIR/bench/predict.json``) and return it. The first pass includes building the
    decoding pipelines (and, for a CNN evaluated through the clip cache, reading it); loading the
    model is timed apart."""
    paths = RunPaths(run_dir)
    videos = [record.path for record in records_in_split(read_videos_csv(paths.videos_csv), "test")]
    if not videos:
        raise ValueError(f"{paths.videos_csv} has no test video to time predict on")
    names = list(models) if models else saved_models(run_dir)
    if not names:
        raise ValueError(f"{paths.models_dir} holds no saved model; run the comparison first")
    rows = []
    for name in names:
        start = time.perf_counter()
        predictor = load_model(run_dir, name, backend=backend)
        load_seconds = time.perf_counter() - start
        timings = []
        for _ in range(passes):
            start = time.perf_counter()
            predictions = predictor.predict(videos, progress=False)
            timings.append(time.perf_counter() - start)
        classified = sum(1 for row in predictions if not row.error)
        rows.append(
            {
                "model": name,
                "family": predictor.family,
                "videos": len(videos),
                "classified": classified,
                "load_seconds": load_seconds,
                "pass_seconds": timings,
                "videos_per_second": [len(videos) / seconds for seconds in timings],
                "evaluation_videos_per_second": _evaluation_rate(run_dir, name),
                "batch_size": predictor.batch_size,
            }
        )
        if progress:
            print(_line(rows[-1]), flush=True)
    report = {
        "what": "predict end to end on the run's test videos: pre-flight, decoding, features or clips, model",
        "run_dir": str(run_dir),
        "device": backend.device_description(),
        "decode": backend.decode.name,
        "passes": passes,
        "models": rows,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "versions": library_versions(),
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    atomic_write_json(default_out(run_dir, out), report)
    return report


def _line(row: dict[str, Any]) -> str:
    rates = ", ".join(f"{rate:.1f}" for rate in row["videos_per_second"])
    evaluation = row["evaluation_videos_per_second"]
    seen = f"; evaluation measured {evaluation:.1f}" if evaluation else ""
    passes = f"passes over {row['videos']} videos; load {row['load_seconds']:.1f} s"
    return f"{row['model']:<7} {rates} videos/s ({passes}){seen}"
