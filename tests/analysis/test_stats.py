from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import accuracy_score, precision_recall_fscore_support, roc_auc_score

from analysis.stats import (
    bootstrap_intervals,
    bootstrap_weights,
    group_bootstrap_weights,
    holm,
    mcnemar_exact,
    min_sign_flip_p,
    paired_difference_intervals,
    pairwise_mcnemar,
    per_group_differences,
    point_metrics,
    sign_flip_test,
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


def test_pairwise_mcnemar_is_holm_adjusted_and_significant_means_p_holm_below_alpha():
    ids = [f"v{i}" for i in range(100)]
    strong = {v: True for v in ids}
    weak = {v: i % 2 == 0 for i, v in enumerate(ids)}
    near = {v: i != 0 for i, v in enumerate(ids)}
    tests = {(t.model_a, t.model_b): t for t in pairwise_mcnemar({"strong": strong, "weak": weak, "near": near})}
    assert tests[("strong", "weak")].significant and tests[("strong", "weak")].test.only_a == 50
    small = tests[("strong", "near")]
    assert not small.significant and small.test.discordant == 1
    raw = [t.test.p_value for t in tests.values()]
    assert [t.p_holm for t in tests.values()] == pytest.approx(holm(raw))
    assert all(t.significant == (t.p_holm < 0.05) for t in tests.values())


def test_pairwise_uses_only_shared_videos():
    tests = pairwise_mcnemar({"a": {"x": True, "y": False}, "b": {"y": True, "z": False}})
    assert tests[0].test.n_shared == 1 and tests[0].test.only_b == 1


# ----------------------------------------------------------------------------- groups


def _near_copies(n_groups: int = 6, per_group: int = 10, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Every video of a group is a near-copy: a model is right on all of a group or on none."""
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"g{g:02d}" for g in range(n_groups)], per_group)
    y_true = np.tile(np.arange(per_group) % 3, n_groups)
    group_right = rng.permutation([True, False] * (n_groups // 2))
    right = np.repeat(group_right, per_group)
    y_pred = np.where(right, y_true, (y_true + 1) % 3)
    scores = np.full((len(y_true), 3), 0.1)
    scores[np.arange(len(y_true)), y_pred] = 0.8
    return y_true, y_pred, scores, groups


def test_group_bootstrap_keeps_videos_of_a_group_together():
    groups = np.array(["b", "a", "b", "c", "a", "b"])
    weights = group_bootstrap_weights(groups, 200, seed=3)
    assert weights.shape == (200, 6)
    for row in weights:
        for g in "abc":
            assert len(set(row[groups == g])) == 1  # one multiplicity per group
        assert row[[1, 0, 3]].sum() == 3  # three groups drawn per resample (a, b, c one video each)


def test_near_copies_make_group_intervals_much_wider_than_video_intervals():
    y_true, y_pred, scores, groups = _near_copies()
    by_video = bootstrap_intervals(y_true, y_pred, scores, n_resamples=2000, seed=0)["accuracy"]
    by_group = bootstrap_intervals(y_true, y_pred, scores, groups=groups, n_resamples=2000, seed=0)["accuracy"]
    assert by_video.estimate == by_group.estimate == pytest.approx(0.5)
    video_width, group_width = by_video.high - by_video.low, by_group.high - by_group.low
    # 60 "independent" videos: about +-0.13; 6 groups of copies: the evidence of 6 videos, about +-0.4.
    assert video_width < 0.3 and group_width > 0.6
    assert group_width > 2.5 * video_width


def test_one_group_gives_no_interval():
    y_true, y_pred, scores, _ = _near_copies()
    one = bootstrap_intervals(y_true, y_pred, scores, groups=["g"] * len(y_true), n_resamples=100)
    assert one["accuracy"].estimate == pytest.approx(0.5)
    assert one["accuracy"].low is None and one["accuracy"].high is None and one["accuracy"].format() == "0.500"


def test_group_bootstrap_matches_a_plain_loop_over_drawn_groups():
    y_true, y_pred, scores = _data(n=48, seed=5)
    groups = np.array([f"g{i % 8}" for i in range(48)])
    ours = bootstrap_intervals(y_true, y_pred, scores, groups=groups, n_resamples=3000, seed=1)
    rng = np.random.default_rng(11)
    names = np.unique(groups)
    accuracies, f1s = [], []
    for _ in range(3000):
        rows = np.concatenate([np.flatnonzero(groups == g) for g in rng.choice(names, len(names))])
        accuracies.append(accuracy_score(y_true[rows], y_pred[rows]))
        f1s.append(precision_recall_fscore_support(y_true[rows], y_pred[rows], average="macro", zero_division=0)[2])
    for name, values in (("accuracy", accuracies), ("macro_f1", f1s)):
        low, high = np.percentile(values, [2.5, 97.5])
        assert ours[name].low == pytest.approx(low, abs=0.03) and ours[name].high == pytest.approx(high, abs=0.03)


def test_paired_difference_of_a_model_with_itself_is_exactly_zero_and_shared_luck_cancels():
    y_true, y_pred, scores, groups = _near_copies(n_groups=8)
    same = paired_difference_intervals(y_true, (y_pred, y_pred), (scores, scores), groups=groups, n_resamples=300)
    assert (same["accuracy"].estimate, same["accuracy"].low, same["accuracy"].high) == (0.0, 0.0, 0.0)
    # B is A plus one more right video in every group: the difference is small and always negative,
    # although each model's own interval is wide.
    better = y_pred.copy()
    for g in np.unique(groups):
        wrong = np.flatnonzero((groups == g) & (y_pred != y_true))
        if len(wrong):
            better[wrong[0]] = y_true[wrong[0]]
    diff = paired_difference_intervals(y_true, (y_pred, better), (scores, scores), groups=groups, n_resamples=2000)
    assert diff["accuracy"].estimate == pytest.approx(-4 / 80)
    assert diff["accuracy"].high < 0 and diff["accuracy"].high - diff["accuracy"].low < 0.1


def test_sign_flip_test_exact_p_values():
    # Six groups all favouring A: only these signs and their mirror are as extreme, p = 2/64.
    six = sign_flip_test([3, 1, 2, 1, 4, 2])
    assert six.exact and six.p_value == pytest.approx(2 / 64) == six.min_p_value
    assert six.statistic == 13 and six.n_informative == 6
    # Zero differences cannot flip: five informative groups give at best 2/32 > 0.05.
    five = sign_flip_test([1, 1, 1, 1, 1, 0])
    assert five.p_value == pytest.approx(2 / 32) and five.n_informative == 5 and five.n_groups == 6
    # Mixed signs: |sum| = 1 with differences (2, -1): the assignments give 1, -3, 3, -1 -> p = 1.
    assert sign_flip_test([2, -1]).p_value == pytest.approx(1.0)
    # Brute force on a small case.
    d = np.array([5, -1, 2, 3, -2, 4, 1])
    totals = [sum(s * x for s, x in zip(signs, d, strict=True)) for signs in itertools.product([-1, 1], repeat=7)]
    assert sign_flip_test(d).p_value == pytest.approx(np.mean(np.abs(totals) >= abs(d.sum())))
    assert sign_flip_test([0, 0]).p_value == 1.0


def test_sign_flip_test_with_many_groups_is_random_and_seeded():
    d = np.r_[np.ones(30, dtype=int), -np.ones(10, dtype=int)]
    first, again = sign_flip_test(d, seed=4), sign_flip_test(d, seed=4)
    assert not first.exact and first == again
    # Exact two-sided binomial p for 30 of 40 signs positive, which the random test approximates.
    assert first.p_value == pytest.approx(binomtest(30, 40).pvalue, abs=0.005)


def test_min_sign_flip_p_and_per_group_differences():
    assert min_sign_flip_p(5) == pytest.approx(0.0625) and min_sign_flip_p(6) == pytest.approx(0.03125)
    assert min_sign_flip_p(0) == 1.0
    a = [True, True, False, True, False]
    b = [False, True, True, False, False]
    assert per_group_differences(a, b, ["x", "x", "y", "y", "z"]).tolist() == [1, 0, 0]
