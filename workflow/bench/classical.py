"""Benchmark: our five classical models against the notebook study's configuration.

Both sides fit the same five model kinds on the same train split of ``features.npz`` and are
scored on the same test split. "Ours" is :class:`models.classical.estimators.ClassicalModel` on the
backend's libraries (cuML / XGBoost on a GPU, scikit-learn / XGBoost-hist on the CPU) with the
tuned hyper-parameters from ``RUN_DIR/results/<model>.json`` where present (defaults
otherwise). "Notebook" is scikit-learn with the study's settings: ``GradientBoostingClassifier()``
defaults and ``SVC(probability=True)`` (deprecated in scikit-learn 1.9; where a later release has
removed it, its documented equivalent ``CalibratedClassifierCV(SVC(), ensemble=False)`` with 5
folds), ``RandomForestClassifier()``, ``KNeighborsClassifier()`` and ``LogisticRegression``
defaults, with a ``StandardScaler`` in front of SVC, k-NN and logistic regression. Only the final
fits are timed (no search on either side); the target is >= 10x faster with macro-F1 not lower.

When a model runs on a GPU library (cuML, XGBoost on CUDA), the same tuned model is also fitted
with its CPU library (scikit-learn, XGBoost on the CPU) on the same features: the ``ours_cpu``
block of each model and the ``ours_cpu_*``/``gpu_speedup_over_cpu`` totals answer "cuML/XGBoost
vs scikit-learn". On a CPU backend there is no such block.
"""

from __future__ import annotations

import inspect
import os
import platform
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.metrics import f1_score

from core.backend import Backend, library_versions
from core.console import progress_bar
from core.cost import timed
from core.runfiles import RunPaths, atomic_write_json
from core.schema import load_result
from models.classical.estimators import MODEL_NAMES, ClassicalModel, library_for, thread_limit
from models.classical.train import SplitData, split_features
from pipelines.features.store import load_features

SPEEDUP_TARGET = 10.0


def notebook_estimator(name: str, seed: int = 0) -> tuple[Any, str]:
    """The notebook study's scikit-learn estimator for ``name`` and a one-line description."""
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    if name == "svm":
        if "probability" in inspect.signature(SVC).parameters:
            return make_pipeline(
                StandardScaler(), SVC(probability=True, random_state=seed)
            ), "StandardScaler + SVC(probability=True)"
        from sklearn.calibration import CalibratedClassifierCV

        return (
            make_pipeline(StandardScaler(), CalibratedClassifierCV(SVC(), ensemble=False, cv=5)),
            "StandardScaler + CalibratedClassifierCV(SVC(), ensemble=False, cv=5) (SVC(probability=True) removed)",
        )
    if name == "rf":
        return RandomForestClassifier(random_state=seed), "RandomForestClassifier() defaults"
    if name == "knn":
        return make_pipeline(
            StandardScaler(), KNeighborsClassifier()
        ), "StandardScaler + KNeighborsClassifier() defaults"
    if name == "logreg":
        return make_pipeline(
            StandardScaler(), LogisticRegression(max_iter=1000)
        ), "StandardScaler + LogisticRegression(max_iter=1000)"
    if name == "gb":
        return GradientBoostingClassifier(random_state=seed), "GradientBoostingClassifier() defaults"
    raise ValueError(f"unknown model {name!r}")


def _fit_and_score(
    estimator: Any, train: SplitData, test: SplitData, groups: bool, repeats: int, n_jobs: int | None
) -> tuple[list[float], float]:
    """Seconds of each of ``repeats`` fits (the fastest, least disturbed by other load, counts)
    and the test macro-F1.

    Both sides run under the same BLAS/OpenMP thread cap, so the speed-up reflects the models'
    configuration, not thread oversubscription.
    """
    seconds = []
    with warnings.catch_warnings(), thread_limit(n_jobs):
        warnings.simplefilter("ignore", FutureWarning)  # SVC(probability=True) deprecation, on purpose
        for _ in range(repeats):
            fitted = clone(estimator)
            with timed() as clock:
                if groups:
                    fitted.fit(train.X, train.y, groups=train.groups)
                else:
                    fitted.fit(train.X, train.y)
            seconds.append(clock.seconds)
        predicted = fitted.predict(test.X)
    return seconds, float(f1_score(test.y, predicted, average="macro", zero_division=0))


def _tuned_params(paths: RunPaths, name: str) -> tuple[dict[str, Any] | None, float | None, dict[str, Any] | None]:
    """Tuned parameters, search seconds and how they were selected, from ``results/<name>.json``."""
    path = paths.result_json(name)
    if not path.exists():
        return None, None, None
    try:
        result = load_result(path)
    except (ValueError, OSError):
        return None, None, None
    config = result.config
    selection = {
        key: config.get(key)
        for key in ("selection_rule", "cv_macro_f1", "cv_macro_f1_best", "best_cv_params", "selection_threshold")
    }
    return config.get("params"), result.cost.search_seconds, selection


def _spread(seconds: list[float]) -> dict[str, float]:
    return {"min": min(seconds), "median": float(np.median(seconds)), "max": max(seconds)}


def cpu_counterpart(name: str, library: str) -> str | None:
    """The CPU library of ``name`` when ``library`` is a GPU one ("cuml" -> "sklearn",
    "xgboost-cuda" -> "xgboost-cpu"), else None (already on the CPU)."""
    cpu_library = library_for(name, "sklearn")
    return cpu_library if cpu_library != library else None


def gpu_vs_cpu_totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over the models timed on both their GPU and CPU library ({} when none was)."""
    both = [row for row in rows if row.get("ours_cpu") is not None]
    if not both:
        return {}
    gpu_total = sum(row["ours"]["fit_seconds"] for row in both)
    cpu_total = sum(row["ours_cpu"]["fit_seconds"] for row in both)
    return {
        "ours_cpu_models": [row["model"] for row in both],
        "ours_gpu_fit_seconds_total": gpu_total,
        "ours_cpu_fit_seconds_total": cpu_total,
        "gpu_speedup_over_cpu": cpu_total / gpu_total if gpu_total > 0 else None,
        "ours_gpu_mean_macro_f1": float(np.mean([row["ours"]["test_macro_f1"] for row in both])),
        "ours_cpu_mean_macro_f1": float(np.mean([row["ours_cpu"]["test_macro_f1"] for row in both])),
    }


def bench_classical(
    run_dir: str | os.PathLike[str],
    backend: Backend,
    *,
    out: str | os.PathLike[str] | None = None,
    models: list[str] | None = None,
    seed: int = 0,
    n_jobs: int | None = 1,
    repeats: int = 3,
    progress: bool = True,
) -> dict[str, Any]:
    """Time fitting the selected models, ours vs the notebook's; write and return the JSON dict.

    Written to ``out`` or ``RUN_DIR/bench/classical.json``. ``n_jobs``: threads for our rf/knn/gb
    and the BLAS/OpenMP cap for both sides; ``repeats`` fits per model, the fastest counts.
    """

    paths = RunPaths(run_dir)
    if not paths.features_npz.exists():
        raise FileNotFoundError(f"{paths.features_npz} not found; run `python cli.py features --run {run_dir}` first")
    names = list(models or MODEL_NAMES)
    unknown = [name for name in names if name not in MODEL_NAMES]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODEL_NAMES)}")
    features = load_features(paths.features_npz)
    splits = split_features(features)
    train, test = splits["train"], splits["test"]

    rows = []
    for name in progress_bar(names, desc="bench classical", unit="model", enabled=progress):
        params, search_seconds, selection = _tuned_params(paths, name)
        library = library_for(name, backend)
        ours = ClassicalModel(name, library, params, seed, n_jobs)
        ours_runs, ours_f1 = _fit_and_score(ours, train, test, groups=True, repeats=repeats, n_jobs=n_jobs)
        notebook, description = notebook_estimator(name, seed)
        notebook_runs, notebook_f1 = _fit_and_score(notebook, train, test, groups=False, repeats=repeats, n_jobs=n_jobs)
        ours_seconds, notebook_seconds = min(ours_runs), min(notebook_runs)
        ours_cpu = None
        cpu_library = cpu_counterpart(name, library)
        if cpu_library is not None:  # a GPU library: the same tuned model on the CPU, same features
            on_cpu = ClassicalModel(name, cpu_library, params, seed, n_jobs)
            cpu_runs, cpu_f1 = _fit_and_score(on_cpu, train, test, groups=True, repeats=repeats, n_jobs=n_jobs)
            ours_cpu = {
                "library": cpu_library,
                "params": on_cpu.resolved_params(),
                "fit_seconds": min(cpu_runs),
                "fit_seconds_spread": _spread(cpu_runs),
                "test_macro_f1": cpu_f1,
                "gpu_speedup": min(cpu_runs) / ours_seconds if ours_seconds > 0 else None,
            }
        rows.append(
            {
                "model": name,
                "ours": {
                    "library": library,
                    "params": ours.resolved_params(),
                    "params_source": f"results/{name}.json (tuned)"
                    if params is not None
                    else "defaults (no tuned result yet)",
                    "selection": selection,
                    "fit_seconds": ours_seconds,
                    "fit_seconds_spread": _spread(ours_runs),
                    "search_seconds_from_result": search_seconds,
                    "test_macro_f1": ours_f1,
                },
                "notebook": {
                    "estimator": description,
                    "fit_seconds": notebook_seconds,
                    "fit_seconds_spread": _spread(notebook_runs),
                    "test_macro_f1": notebook_f1,
                },
                "speedup": notebook_seconds / ours_seconds if ours_seconds > 0 else None,
            }
        )
        if ours_cpu is not None:
            rows[-1]["ours_cpu"] = ours_cpu

    ours_total = sum(row["ours"]["fit_seconds"] for row in rows)
    notebook_total = sum(row["notebook"]["fit_seconds"] for row in rows)
    ours_f1 = float(np.mean([row["ours"]["test_macro_f1"] for row in rows]))
    notebook_f1 = float(np.mean([row["notebook"]["test_macro_f1"] for row in rows]))
    speedup = notebook_total / ours_total if ours_total > 0 else None
    ours_median = sum(row["ours"]["fit_seconds_spread"]["median"] for row in rows)
    notebook_median = sum(row["notebook"]["fit_seconds_spread"]["median"] for row in rows)
    report = {
        "benchmark": "classical",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_dir": str(Path(run_dir)),
        "device": {
            "classical": backend.classical.name,
            "boosting": backend.boosting.name,
            "gpu": backend.gpu_name,
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
        },
        "versions": library_versions(),
        "data": {
            "n_train": len(train),
            "n_test": len(test),
            "n_features": int(train.X.shape[1]),
            "n_classes": len(features.class_names),
        },
        "timed": (
            "final fit on the train split only (no hyper-parameter search on either side); "
            f"fastest of {repeats} wall-clock runs"
        ),
        "n_jobs": n_jobs,
        "threads": f"BLAS/OpenMP pools capped at {n_jobs} thread(s) for both sides; our rf/knn/gb use n_jobs={n_jobs}"
        if n_jobs is not None
        else "library defaults on both sides",
        "models": rows,
        "ours_fit_seconds_total": ours_total,
        "notebook_fit_seconds_total": notebook_total,
        "speedup": speedup,
        "speedup_of_medians": notebook_median / ours_median if ours_median > 0 else None,
        "ours_mean_macro_f1": ours_f1,
        "notebook_mean_macro_f1": notebook_f1,
        "target": {
            "speedup_at_least": SPEEDUP_TARGET,
            "speedup_met": bool(speedup is not None and speedup >= SPEEDUP_TARGET),
            "macro_f1_not_lower_met": bool(ours_f1 >= notebook_f1),
        },
        **gpu_vs_cpu_totals(rows),
    }
    atomic_write_json(default_out(run_dir, out), report)
    return report


def default_out(run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None) -> Path:
    return Path(out) if out else RunPaths(run_dir).bench_dir / "classical.json"


def summarize(report: dict[str, Any], out: Path) -> str:
    """The lines ``bench classical`` prints: both totals, the speed-up and macro-F1 on each side."""
    lines = [
        f"fit all {len(report['models'])}: ours {report['ours_fit_seconds_total']:.2f}s vs notebook "
        f"{report['notebook_fit_seconds_total']:.2f}s ({report['speedup']:.1f}x); mean macro-F1 "
        f"{report['ours_mean_macro_f1']:.3f} vs {report['notebook_mean_macro_f1']:.3f}"
    ]
    if report.get("gpu_speedup_over_cpu"):
        lines.append(
            f"GPU vs CPU libraries ({','.join(report['ours_cpu_models'])}): "
            f"{report['ours_gpu_fit_seconds_total']:.2f}s vs {report['ours_cpu_fit_seconds_total']:.2f}s "
            f"({report['gpu_speedup_over_cpu']:.1f}x); mean macro-F1 "
            f"{report['ours_gpu_mean_macro_f1']:.3f} vs {report['ours_cpu_mean_macro_f1']:.3f}"
        )
    lines.append(f"wrote {out}")
    return "\n".join(lines)
