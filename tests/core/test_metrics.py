from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from core.metrics import classification_metrics, macro_roc_auc

CLASSES = ["a", "b", "c"]


def test_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    y_true = np.repeat([0, 1, 2], 10)
    scores = rng.dirichlet([1, 1, 1], size=30)
    y_pred = scores.argmax(1)
    metrics = classification_metrics(y_true, y_pred, scores, CLASSES)
    assert metrics.accuracy == pytest.approx(np.mean(y_true == y_pred))
    assert metrics.macro_f1 == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert metrics.roc_auc_macro_ovr == pytest.approx(roc_auc_score(y_true, scores, multi_class="ovr"))
    assert sum(c.support for c in metrics.per_class.values()) == 30


def test_auc_uses_scores_not_hard_labels():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    perfect = np.eye(3)[y_true] * 0.6 + 0.4 / 3
    assert macro_roc_auc(y_true, perfect, 3) == pytest.approx(1.0)
    constant = np.full((6, 3), 1 / 3)
    assert macro_roc_auc(y_true, constant, 3) == pytest.approx(0.5)


def test_auc_is_none_when_a_class_is_missing():
    assert macro_roc_auc(np.array([0, 0, 1]), np.full((3, 3), 1 / 3), 3) is None


def test_scores_shape_is_checked():
    with pytest.raises(ValueError, match="scores have shape"):
        classification_metrics([0, 1], [0, 1], [[1.0, 0.0]], CLASSES)
