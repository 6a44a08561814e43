from __future__ import annotations

from analysis.comparison import ModelEvidence, compare_models
from analysis.stats import Interval
from analysis.verdicts import detectability, headline, near_chance, pair_verdict
from tests.analysis.test_report import CLASSES, synthetic_result


def _evidence(acc: Interval, auc: Interval) -> ModelEvidence:
    return ModelEvidence("cnn3d", {"accuracy": acc, "roc_auc_macro_ovr": auc}, 60, 5)


def test_detectability_in_one_plain_sentence():
    five = detectability(5, 21, 0.05)
    assert five is not None and "With 5 test groups no difference between two models can be detected" in five
    assert "2/2^5 = 0.0625" in five
    seven = detectability(7, 21, 0.05)  # 2/128 = 0.016 < 0.05, but x 21 pairs = 0.33
    assert seven is not None and "after the Holm correction over 21 pairs" in seven
    assert detectability(7, 1, 0.05) is None  # one pair: 0.016 can be reached
    assert detectability(10, 21, 0.05) is None  # 21 x 2/1024 = 0.041
    assert "no interval can be estimated" in (detectability(1, 21, 0.05) or "")


def test_near_chance_by_interval_or_by_estimate():
    assert near_chance(_evidence(Interval(0.4, 0.2, 0.6, 100), Interval(0.48, 0.3, 0.7, 100)), 3)
    assert not near_chance(_evidence(Interval(0.8, 0.6, 0.95, 100), Interval(0.9, 0.8, 0.98, 100)), 3)
    assert near_chance(_evidence(Interval(0.8, 0.6, 0.95, 100), Interval(0.7, 0.45, 0.9, 100)), 3)
    assert near_chance(_evidence(Interval(0.4, None, None, 0), Interval(0.9, None, None, 0)), 3)  # 0.4 <= 1/3 + 0.1
    assert not near_chance(_evidence(Interval(0.9, None, None, 0), Interval(0.95, None, None, 0)), 3)


def test_no_winner_is_crowned_over_a_near_chance_model_without_saying_so():
    import numpy as np

    labels = np.arange(30) % 3
    ids = [f"v{i:02d}" for i in range(30)]
    groups = {v: f"g{i // 3}" for i, v in enumerate(ids)}
    results = [
        synthetic_result("gb", 0.95, ids, labels, 0, [groups[v] for v in ids]),
        synthetic_result("cnn3d", 0.0, ids, labels, 1, [groups[v] for v in ids]),
    ]
    comparison = compare_models(results, groups, n_resamples=300)
    text = " ".join(headline(comparison, len(CLASSES)).sentences)
    assert text.startswith("Gradient Boosting (XGBoost) has the highest test macro-F1")
    assert "Near chance" in text and "R3D-18 (3D CNN)" in text and "says nothing about its family" in text
    verdict = pair_verdict(comparison.pairs[0], 0.05)
    assert "over 10 group(s)" in verdict and "Holm p" in verdict
