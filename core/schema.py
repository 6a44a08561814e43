"""THE result schema: every model writes a :class:`ModelResult`; the analysis reads only these.

A result file is JSON at ``RUN_DIR/results/<model>.json``. ``validate_result`` checks a loaded
dict before the analysis trusts it, so results written on other machines can be compared.
"""

from __future__ import annotations

import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from core.runfiles import atomic_write_json, read_json

SCHEMA_VERSION = 1
FAMILIES = ("classical", "deep")


@dataclass
class Prediction:
    """One test video: truth, prediction and the class scores (probabilities, summing to 1)."""

    video_id: str
    true_label: int
    pred_label: int
    scores: list[float]
    fold: int | None = None  # the outer fold whose test set held this video (None: one train/val/test split)


@dataclass
class ClassScores:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class Metrics:
    accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    roc_auc_macro_ovr: float | None  # None when a class is absent from the evaluated videos
    per_class: dict[str, ClassScores]
    n_videos: int


@dataclass
class Cost:
    """Measured costs. Times in seconds, sizes and memory in bytes. None = not applicable."""

    fit_seconds: float
    search_seconds: float | None = None
    epoch_seconds: list[float] | None = None
    inference_seconds_per_video_model: float | None = None
    inference_seconds_per_video_end_to_end: float | None = None
    model_bytes: int | None = None
    parameters: int | None = None
    flops_per_clip: float | None = None
    peak_memory_fit_bytes: int | None = None
    peak_memory_predict_bytes: int | None = None
    memory_kind: str = "process_rss_peak"  # what the peaks measure: core.cost.MEMORY_KINDS


@dataclass
class LearningCurvePoint:
    """Test scores after RETRAINING on a fraction of the training groups (several seeds)."""

    fraction: float
    n_train_videos: int
    seeds: list[int]
    macro_f1_mean: float
    macro_f1_std: float
    accuracy_mean: float
    accuracy_std: float
    epochs: int | None = None


@dataclass
class FoldMetrics:
    """Test metrics of the model trained for one outer fold (its predictions are in the pooled list)."""

    fold: int
    metrics: Metrics
    n_train_videos: int


@dataclass
class ModelResult:
    model: str  # "svm", "rf", "knn", "logreg", "gb", "cnn2d", "cnn3d"
    family: str  # classical | deep
    backend: str  # e.g. "sklearn", "cuml", "xgboost-cpu", "torch-cpu", "torch-cuda"
    device: str  # e.g. "cpu", "cuda (NVIDIA H100)"
    versions: dict[str, str | None]
    seed: int
    config: dict[str, Any]
    class_names: list[str]
    test_protocol: str  # how test scores were obtained, in words
    predictions: list[Prediction]
    metrics: Metrics
    cost: Cost
    validation: Metrics | None = None
    learning_curve: list[LearningCurvePoint] | None = None
    artifacts: dict[str, str] = field(default_factory=dict)  # name -> path relative to the run dir
    # With K outer folds: per-fold test metrics; ``predictions`` then pool every fold's test videos.
    folds: list[FoldMetrics] | None = None
    # The run index (videos.csv rows and video file signatures) the result was made from:
    # pipelines.data.records.index_fingerprint. The report leaves out results whose index is not current.
    index_fingerprint: str | None = None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SchemaError(ValueError):
    pass


def _check_keys(data: dict[str, Any], cls: type, where: str) -> None:
    names = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    missing = required - data.keys()
    unknown = data.keys() - names
    if missing:
        raise SchemaError(f"{where}: missing {sorted(missing)}")
    if unknown:
        raise SchemaError(f"{where}: unknown keys {sorted(unknown)}")


def _metrics_from_dict(data: dict[str, Any], where: str) -> Metrics:
    _check_keys(data, Metrics, where)
    per_class = {}
    for name, scores in data["per_class"].items():
        _check_keys(scores, ClassScores, f"{where}.per_class.{name}")
        per_class[name] = ClassScores(**scores)
    return Metrics(**{**data, "per_class": per_class})


def result_from_dict(data: dict[str, Any]) -> ModelResult:
    """Build a :class:`ModelResult` from a loaded dict, validating structure and invariants."""
    _check_keys(data, ModelResult, "result")
    if data.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise SchemaError(f"result: schema_version {data['schema_version']} != {SCHEMA_VERSION}")
    if data["family"] not in FAMILIES:
        raise SchemaError(f"result: family {data['family']!r} not in {FAMILIES}")
    n_classes = len(data["class_names"])
    predictions = []
    for i, row in enumerate(data["predictions"]):
        _check_keys(row, Prediction, f"result.predictions[{i}]")
        if len(row["scores"]) != n_classes:
            raise SchemaError(f"result.predictions[{i}]: {len(row['scores'])} scores for {n_classes} classes")
        if abs(sum(row["scores"]) - 1.0) > 1e-3:
            raise SchemaError(f"result.predictions[{i}]: scores sum to {sum(row['scores']):.4f}, not 1")
        predictions.append(Prediction(**row))
    ids = [p.video_id for p in predictions]
    if len(set(ids)) != len(ids):
        raise SchemaError("result.predictions: a video appears more than once")
    _check_keys(data["cost"], Cost, "result.cost")
    curve = None
    if data.get("learning_curve") is not None:
        curve = []
        for i, point in enumerate(data["learning_curve"]):
            _check_keys(point, LearningCurvePoint, f"result.learning_curve[{i}]")
            curve.append(LearningCurvePoint(**point))
    validation = data.get("validation")
    folds = None
    if data.get("folds") is not None:
        folds = []
        for i, fold in enumerate(data["folds"]):
            _check_keys(fold, FoldMetrics, f"result.folds[{i}]")
            folds.append(FoldMetrics(**{**fold, "metrics": _metrics_from_dict(fold["metrics"], f"result.folds[{i}]")}))
    return ModelResult(
        **{
            **data,
            "predictions": predictions,
            "metrics": _metrics_from_dict(data["metrics"], "result.metrics"),
            "validation": _metrics_from_dict(validation, "result.validation") if validation else None,
            "cost": Cost(**data["cost"]),
            "learning_curve": curve,
            "folds": folds,
        }
    )


def validate_result(data: dict[str, Any]) -> None:
    result_from_dict(data)


def save_result(result: ModelResult, path: str | os.PathLike[str]) -> None:
    data = result.to_dict()
    validate_result(data)
    atomic_write_json(path, data)


def load_result(path: str | os.PathLike[str]) -> ModelResult:
    """The result in ``path``; a ValueError naming the file when it is not a valid result
    (:class:`~core.runfiles.UnreadableFileError` when it is not even JSON)."""
    data = read_json(path)
    try:
        if not isinstance(data, dict):
            raise SchemaError(f"a JSON {type(data).__name__}, not a result object")
        return result_from_dict(data)
    except SchemaError as exc:
        raise SchemaError(f"{path}: {exc}") from exc
    except (TypeError, AttributeError, KeyError) as exc:  # a nested value of the wrong kind
        raise SchemaError(f"{path}: malformed result ({type(exc).__name__}: {exc})") from exc
