from __future__ import annotations

import copy

import pytest

from core.metrics import classification_metrics
from core.schema import Cost, ModelResult, Prediction, SchemaError, load_result, save_result, validate_result

CLASSES = ["PullUps", "Punch", "PushUps"]


def make_result() -> ModelResult:
    y_true = [0, 1, 2, 0]
    scores = [[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4], [0.2, 0.5, 0.3]]
    y_pred = [max(range(3), key=row.__getitem__) for row in scores]
    return ModelResult(
        model="svm",
        family="classical",
        backend="sklearn",
        device="cpu",
        versions={"scikit-learn": "1.9"},
        seed=0,
        config={"C": 1.0},
        class_names=CLASSES,
        test_protocol="one feature vector per video",
        predictions=[
            Prediction(f"v{i}", t, p, s) for i, (t, p, s) in enumerate(zip(y_true, y_pred, scores, strict=True))
        ],
        metrics=classification_metrics(y_true, y_pred, scores, CLASSES),
        cost=Cost(fit_seconds=0.5, model_bytes=1024),
    )


def test_result_round_trips(tmp_path):
    result = make_result()
    save_result(result, tmp_path / "svm.json")
    loaded = load_result(tmp_path / "svm.json")
    assert loaded == result


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("metrics"), "missing"),
        (lambda d: d.update(family="quantum"), "family"),
        (lambda d: d["predictions"][0].update(scores=[0.5, 0.5]), "scores for 3 classes"),
        (lambda d: d["predictions"][0].update(scores=[0.9, 0.9, 0.9]), "sum"),
        (lambda d: d["predictions"].append(copy.deepcopy(d["predictions"][0])), "more than once"),
        (lambda d: d["cost"].update(tracemalloc_mb=0.005), "unknown keys"),
    ],
)
def test_invalid_results_are_rejected(mutate, message):
    data = make_result().to_dict()
    mutate(data)
    with pytest.raises(SchemaError, match=message):
        validate_result(data)
