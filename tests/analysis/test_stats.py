from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import accuracy_score, precision_recall_fscore_support, roc_auc_score

from analysis.stats import (
    bootstrap_intervals,
    bootstrap_weights,
    holm,
    mcnemar_exact,
    pairwise_mcnemar,
    point_metrics,
    weighted_binary_auc,
    weighted_label_metrics,
    weighted_macro_auc,
)
from core.metrics import classification_metrics


def _data(n: int = 40, n_classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y_true = np.arange(n) % n_classes
    scores = rng.dirichlet(np.ones(n_classes), size=n)
    scores[np.arange(n), y_true] += rng.uniform(0, 0.6, n)  # better than chance, not perfect
    scores /= scores.sum(1, keepdims=True)
    return y_true, scores.argmax(1), scores


@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_point_metrics_match_scikit_learn_and_metrics_module(n_classes: int):
    y_true, y_pred, scores = _data(n_classes=n_classes)
    ours = point_metrics(y_true, y_pred, scores)
    p, r, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=range(n_classes), average="macro", zero_division=0
    )
    assert ours["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert ours["macro_precision"] == pytest.approx(p)
    assert ours["macro_recall"] == pytest.approx(r)
    assert ours["macro_f1"] == pytest.approx(f1)
    reference = classification_metrics(y_true, y_pred, scores, [str(c) for c in range(n_classes)])
    assert ours["roc_auc_macro_ovr"] == pytest.approx(reference.roc_auc_macro_ovr)


def test_weighted_metrics_equal_metrics_of_the_resampled_videos():
    y_true, y_pred, scores = _data(n=30, n_classes=4, seed=3)
    weights = bootstrap_weights(30, 5, seed=1)
    label_metrics = weighted_label_metrics(y_true, y_pred, weights, 4)
    aucs = weighted_macro_auc(y_true, scores, weights)
    for r, row in enumerate(weights.astype(int)):
        index = np.repeat(np.arange(30), row)
        t, p, s = y_true[index], y_pred[index], scores[index]
        _, _, f1, _ = precision_recall_fscore_support(t, p, average="macro", zero_division=0)
        assert label_metrics["accuracy"][r] == pytest.approx(accuracy_score(t, p))
        assert label_metrics["macro_f1"][r] == pytest.approx(f1)
        if len(np.unique(t)) == 4:
            assert aucs[r] == pytest.approx(roc_auc_score(t, s, multi_class="ovr", labels=range(4)))
        else:
            assert np.isnan(aucs[r])


def test_a_perfect_model_stays_perfect_in_resamples_that_miss_a_class():
    y_true = np.array([0, 1, 2, 0, 1, 2])
    scores = np.eye(3)[y_true]
    ci = bootstrap_intervals(y_true, y_true, scores * 0.8 + 0.2 / 3, n_resamples=300)
    assert ci["macro_f1"].low == pytest.approx(1.0)


def test_auc_with_ties_matches_scikit_learn():
    positive = np.array([1, 0, 1, 0, 1, 0, 0])
    score = np.array([0.5, 0.5, 0.9, 0.1, 0.5, 0.2, 0.9])
    assert weighted_binary_auc(positive, score, np.ones(7))[0] == pytest.approx(roc_auc_score(positive, score))


def test_perfect_scorer_gets_auc_one_and_constant_scorer_one_half():
    y_true = np.array([0, 1, 2, 0, 1, 2])
    perfect = np.eye(3)[y_true] * 0.7 + 0.1
    constant = np.full((6, 3), 1 / 3)
    assert point_metrics(y_true, y_true, perfect)["roc_auc_macro_ovr"] == pytest.approx(1.0)
    assert point_metrics(y_true, np.zeros(6, int), constant)["roc_auc_macro_ovr"] == pytest.approx(0.5)
    ci = bootstrap_intervals(y_true, y_true, perfect, n_resamples=200)
    assert ci["roc_auc_macro_ovr"].low == pytest.approx(1.0) and ci["accuracy"].high == pytest.approx(1.0)


def test_bootstrap_intervals_contain_the_estimate_and_are_seeded():
    y_true, y_pred, scores = _data(n=60)
    first = bootstrap_intervals(y_true, y_pred, scores, n_resamples=500, seed=7)
    again = bootstrap_intervals(y_true, y_pred, scores, n_resamples=500, seed=7)
    assert first == again
    for interval in first.values():
        assert interval.low <= interval.estimate <= interval.high
        assert interval.high - interval.low < 0.5
    # The accuracy interval is close to the normal approximation for a proportion.
    acc = first["accuracy"]
    half_width = 1.96 * np.sqrt(acc.estimate * (1 - acc.estimate) / 60)
    assert (acc.high - acc.low) / 2 == pytest.approx(half_width, rel=0.25)


def test_auc_interval_is_undefined_when_a_class_is_missing():
    y_true = np.array([0, 0, 1, 1])
    scores = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.3, 0.6, 0.1]])
    ci = bootstrap_intervals(y_true, scores.argmax(1), scores, n_resamples=100)
    assert ci["roc_auc_macro_ovr"].estimate is None and ci["roc_auc_macro_ovr"].format() == "n/a"


def test_mcnemar_on_a_known_table():
    # 2x2 table: both right 50, only A right 12, only B right 3, both wrong 5.
    a = np.array([1] * 50 + [1] * 12 + [0] * 3 + [0] * 5, dtype=bool)
    b = np.array([1] * 50 + [0] * 12 + [1] * 3 + [0] * 5, dtype=bool)
    result = mcnemar_exact(a, b)
    assert (result.only_a, result.only_b, result.discordant, result.n_shared) == (12, 3, 15, 70)
    assert result.p_value == pytest.approx(binomtest(3, 15, 0.5).pvalue)
    assert result.p_value == pytest.approx(0.03515625)  # 2 * sum_{k<=3} C(15,k) / 2^15
    assert result.min_p_value == pytest.approx(2 * 0.5**15)
    assert mcnemar_exact(a, a).p_value == 1.0


def test_holm_adjustment():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_pairwise_verdicts_say_when_the_test_set_is_too_small():
    ids = [f"v{i}" for i in range(100)]
    strong = {v: True for v in ids}
    weak = {v: i % 2 == 0 for i, v in enumerate(ids)}
    near = {v: i != 0 for i, v in enumerate(ids)}
    tests = {(t.model_a, t.model_b): t for t in pairwise_mcnemar({"strong": strong, "weak": weak, "near": near})}
    assert (
        tests[("strong", "weak")].separable and "strong is more accurate than weak" in tests[("strong", "weak")].verdict
    )
    small = tests[("strong", "near")]
    assert not small.separable and "too small to separate" in small.verdict
    assert small.test.discordant == 1


def test_pairwise_uses_only_shared_videos():
    tests = pairwise_mcnemar({"a": {"x": True, "y": False}, "b": {"y": True, "z": False}})
    assert tests[0].test.n_shared == 1 and tests[0].test.only_b == 1
