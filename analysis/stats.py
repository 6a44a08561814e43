"""Uncertainty and significance for test-set metrics: pure functions on labels, predictions, scores.

* Bootstrap 95 % percentile intervals resample the **test groups** with replacement (a cluster
  bootstrap: videos of one group, near-copies of one actor and scene, stay together), or the
  videos when no groups are given. A resample is a vector of video multiplicities, so every
  metric is computed from weighted counts in one vectorised pass instead of 2000 calls into
  scikit-learn. Paired differences between two models use the same resamples for both.
* Paired tests at the group level: an exact sign-flip permutation test over per-group
  differences, Holm-corrected over all pairs by the caller (:func:`holm`).
* Exact McNemar tests treat videos as independent: a secondary view only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy.stats import binom

METRIC_NAMES = ("accuracy", "macro_precision", "macro_recall", "macro_f1", "roc_auc_macro_ovr")
METRIC_LABELS = {
    "accuracy": "Accuracy",
    "macro_precision": "Macro precision",
    "macro_recall": "Macro recall",
    "macro_f1": "Macro F1",
    "roc_auc_macro_ovr": "Macro ROC-AUC (OvR)",
}
HEADLINE_METRICS = ("accuracy", "macro_f1", "roc_auc_macro_ovr")  # the metrics of report/statistics.json


@dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile bootstrap interval (None where undefined)."""

    estimate: float | None
    low: float | None
    high: float | None
    n_resamples: int  # resamples where the metric was defined

    def format(self, digits: int = 3) -> str:
        if self.estimate is None:
            return "n/a"
        if self.low is None or self.high is None:
            return f"{self.estimate:.{digits}f}"
        return f"{self.estimate:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


# ----------------------------------------------------------------------------- weighted metrics


def _one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    out = np.zeros((len(labels), n_classes), dtype=np.float64)
    out[np.arange(len(labels)), labels] = 1.0
    return out


def weighted_label_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray, n_classes: int
) -> dict[str, np.ndarray]:
    """Accuracy and macro precision/recall/F1 for each row of ``weights`` (R, N) of video multiplicities.

    Matches scikit-learn's defaults with ``zero_division=0``: the macro average runs over the classes
    that occur in the truth or the predictions of that resample (a class absent from both says
    nothing about the model and would otherwise count as a score of 0); a class that is never
    predicted has precision 0, one that never occurs has recall 0. On a test set where every class
    occurs this equals core.metrics.
    """
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    true_hot = _one_hot(y_true, n_classes)
    pred_hot = _one_hot(y_pred, n_classes)
    correct = (y_true == y_pred).astype(np.float64)
    tp = weights @ (true_hot * correct[:, None])
    n_true = weights @ true_hot
    n_pred = weights @ pred_hot
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(n_pred > 0, tp / n_pred, 0.0)
        recall = np.where(n_true > 0, tp / n_true, 0.0)
        f1 = np.where(n_pred + n_true > 0, 2 * tp / (n_pred + n_true), 0.0)
    total = weights.sum(axis=1)
    present = (n_true + n_pred) > 0
    n_present = np.maximum(present.sum(axis=1), 1)
    return {
        "accuracy": (weights @ correct) / total,
        "macro_precision": (precision * present).sum(axis=1) / n_present,
        "macro_recall": (recall * present).sum(axis=1) / n_present,
        "macro_f1": (f1 * present).sum(axis=1) / n_present,
    }


def weighted_binary_auc(positive: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC-AUC (ties count one half) for each row of ``weights`` (R, N); NaN where a side is empty.

    The scores are sorted once; each resample only changes the weight of every video.
    """
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    order = np.argsort(score, kind="mergesort")
    sorted_score = score[order]
    is_pos = positive[order].astype(np.float64)
    w = weights[:, order]
    starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])  # tie groups
    w_pos = np.add.reduceat(w * is_pos, starts, axis=1)
    w_neg = np.add.reduceat(w * (1.0 - is_pos), starts, axis=1)
    neg_below = np.cumsum(w_neg, axis=1) - w_neg
    pairs = w_pos.sum(axis=1) * w_neg.sum(axis=1)
    wins = (w_pos * (neg_below + 0.5 * w_neg)).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(pairs > 0, wins / pairs, np.nan)


def weighted_macro_auc(y_true: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Macro one-vs-rest ROC-AUC per resample; NaN where some class is absent (as metrics.py: None).

    Two classes: the AUC of the positive class's score, as scikit-learn computes it.
    """
    n_classes = scores.shape[1]
    if n_classes == 2:
        return weighted_binary_auc(y_true == 1, scores[:, 1], weights)
    per_class = [weighted_binary_auc(y_true == c, scores[:, c], weights) for c in range(n_classes)]
    return np.mean(np.stack(per_class, axis=1), axis=1)  # NaN propagates: undefined when a class is missing


def point_metrics(y_true: Sequence[int], y_pred: Sequence[int], scores: np.ndarray) -> dict[str, float | None]:
    """The five headline metrics on the full test set (same values as core.metrics)."""
    y_true, y_pred, scores = np.asarray(y_true), np.asarray(y_pred), np.asarray(scores, dtype=np.float64)
    ones = np.ones((1, len(y_true)))
    values: dict[str, float | None] = {
        k: float(v[0]) for k, v in weighted_label_metrics(y_true, y_pred, ones, scores.shape[1]).items()
    }
    auc = float(weighted_macro_auc(y_true, scores, ones)[0])
    values["roc_auc_macro_ovr"] = None if np.isnan(auc) else auc
    return values


def bootstrap_weights(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """(R, n) multiplicities of ``n`` videos in ``n_resamples`` bootstrap resamples of the videos."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(np.float64)


def group_codes(groups: Sequence[str]) -> tuple[np.ndarray, int]:
    """Each video's group as an integer 0..G-1 (sorted group names), and G."""
    names, codes = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    return codes.astype(np.int64), len(names)


def group_bootstrap_weights(groups: Sequence[str], n_resamples: int, seed: int) -> np.ndarray:
    """(R, n) video multiplicities of a cluster bootstrap: each resample draws G of the G groups
    with replacement and keeps every video of a drawn group (near-copies stay together)."""
    codes, n_groups = group_codes(groups)
    rng = np.random.default_rng(seed)
    drawn = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_resamples)
    return drawn[:, codes].astype(np.float64)


def metric_samples(
    y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray, weights: np.ndarray, chunk: int = 250
) -> dict[str, np.ndarray]:
    """Every metric of :data:`METRIC_NAMES` for each row of ``weights`` (R, N), in bounded memory."""
    samples: dict[str, list[np.ndarray]] = {name: [] for name in METRIC_NAMES}
    for start in range(0, len(weights), chunk):
        part = weights[start : start + chunk]
        for name, values in weighted_label_metrics(y_true, y_pred, part, scores.shape[1]).items():
            samples[name].append(values)
        samples["roc_auc_macro_ovr"].append(weighted_macro_auc(y_true, scores, part))
    return {name: np.concatenate(values) for name, values in samples.items()}


def percentile_interval(estimate: float | None, samples: np.ndarray, confidence: float = 0.95) -> Interval:
    """``estimate`` with the percentile interval of the defined (non-NaN) ``samples``."""
    values = samples[~np.isnan(samples)]
    if estimate is None or len(values) == 0:
        return Interval(estimate, None, None, int(len(values)))
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return Interval(estimate, float(low), float(high), int(len(values)))


def _aligned(y_true: Sequence[int], y_pred: Sequence[int], scores: np.ndarray) -> tuple[np.ndarray, ...]:
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] != len(y_true) or len(y_pred) != len(y_true):
        raise ValueError(f"y_true {y_true.shape}, y_pred {y_pred.shape} and scores {scores.shape} do not align")
    if len(y_true) == 0:
        raise ValueError("no test videos to bootstrap")
    return y_true, y_pred, scores


def resample_weights(n_videos: int, groups: Sequence[str] | None, n_resamples: int, seed: int) -> np.ndarray | None:
    """Bootstrap multiplicities by group (each video its own group when ``groups`` is None); None
    when there are fewer than two units to resample (then no interval can be estimated)."""
    if groups is not None and len(groups) != n_videos:
        raise ValueError(f"{len(groups)} groups for {n_videos} videos")
    n_units = n_videos if groups is None else group_codes(groups)[1]
    if n_units < 2:
        return None
    if groups is None:
        return bootstrap_weights(n_videos, n_resamples, seed)
    return group_bootstrap_weights(groups, n_resamples, seed)


def bootstrap_intervals(
    y_true: Sequence[int],
    y_pred: Sequence[int],
    scores: np.ndarray,
    *,
    groups: Sequence[str] | None = None,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Interval]:
    """Percentile bootstrap intervals of every metric in :data:`METRIC_NAMES`.

    ``groups`` (one name per video): a cluster bootstrap over groups; None resamples videos, which
    is right only when videos are independent. The same ``seed`` and groups give every model the
    same resamples of a shared test set. Fewer than two groups: estimates without intervals.
    """
    y_true, y_pred, scores = _aligned(y_true, y_pred, scores)
    estimates = point_metrics(y_true, y_pred, scores)
    weights = resample_weights(len(y_true), groups, n_resamples, seed)
    if weights is None:
        return {name: Interval(estimates[name], None, None, 0) for name in METRIC_NAMES}
    samples = metric_samples(y_true, y_pred, scores, weights)
    return {name: percentile_interval(estimates[name], samples[name], confidence) for name in METRIC_NAMES}


def paired_difference_intervals(
    y_true: Sequence[int],
    predictions: tuple[Sequence[int], Sequence[int]],
    scores: tuple[np.ndarray, np.ndarray],
    *,
    groups: Sequence[str] | None = None,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Interval]:
    """Intervals of metric(A) - metric(B) on the same videos: both models are scored on the same
    group resamples, so what the two share (the hard groups) cancels out."""
    y_true_a, pred_a, scores_a = _aligned(y_true, predictions[0], scores[0])
    _, pred_b, scores_b = _aligned(y_true, predictions[1], scores[1])
    point_a = point_metrics(y_true_a, pred_a, scores_a)
    point_b = point_metrics(y_true_a, pred_b, scores_b)
    estimates = {
        name: None if point_a[name] is None or point_b[name] is None else point_a[name] - point_b[name]
        for name in METRIC_NAMES
    }
    weights = resample_weights(len(y_true_a), groups, n_resamples, seed)
    if weights is None:
        return {name: Interval(estimates[name], None, None, 0) for name in METRIC_NAMES}
    samples_a = metric_samples(y_true_a, pred_a, scores_a, weights)
    samples_b = metric_samples(y_true_a, pred_b, scores_b, weights)
    return {
        name: percentile_interval(estimates[name], samples_a[name] - samples_b[name], confidence)
        for name in METRIC_NAMES
    }


# ----------------------------------------------------------------------------- group-level paired test


@dataclass(frozen=True)
class SignFlipTest:
    """Paired permutation test of two models over groups: under "no difference" the sign of each
    group's difference (videos only A got right minus videos only B got right) is a coin flip."""

    statistic: int  # sum of the per-group differences: (A right) - (B right) over all shared videos
    p_value: float  # two-sided
    n_groups: int
    n_informative: int  # groups whose difference is not zero (the others cannot flip)
    exact: bool  # every sign assignment enumerated (else a seeded random sample of them)
    min_p_value: float  # the smallest p-value this many informative groups could ever give


MAX_EXACT_GROUPS = 16  # 2^16 sign assignments enumerated; more groups: random sign flips


def min_sign_flip_p(n_groups: int) -> float:
    """The smallest two-sided p-value of an exact sign-flip test over ``n_groups`` groups: 2 / 2^n
    (only the observed signs and their mirror image are as extreme)."""
    return 1.0 if n_groups < 1 else min(1.0, 2.0 * 0.5**n_groups)


def per_group_differences(correct_a: Sequence[bool], correct_b: Sequence[bool], groups: Sequence[str]) -> np.ndarray:
    """For each group (sorted names): videos model A got right minus videos model B got right."""
    a = np.asarray(correct_a, dtype=np.int64)
    b = np.asarray(correct_b, dtype=np.int64)
    if not len(a) == len(b) == len(groups):
        raise ValueError("both models must be scored on the same videos, with one group per video")
    codes, n_groups = group_codes(groups)
    return np.bincount(codes, weights=a - b, minlength=n_groups).astype(np.int64)


def sign_flip_test(differences: Sequence[int], *, n_random: int = 20000, seed: int = 0) -> SignFlipTest:
    """Two-sided sign-flip permutation test of ``differences`` (one per group) against zero.

    Exact (all 2^m sign assignments of the m non-zero differences) up to :data:`MAX_EXACT_GROUPS`,
    else ``n_random`` seeded random assignments with p = (1 + as extreme) / (1 + n_random).
    """
    d = np.asarray(differences, dtype=np.int64)
    informative = d[d != 0]
    m = len(informative)
    observed = int(d.sum())
    if m == 0:
        return SignFlipTest(observed, 1.0, len(d), 0, True, 1.0)
    if m <= MAX_EXACT_GROUPS:
        bits = (np.arange(2**m)[:, None] >> np.arange(m)) & 1
        totals = (1 - 2 * bits) @ informative
        p = float(np.mean(np.abs(totals) >= abs(observed)))
        return SignFlipTest(observed, p, len(d), m, True, min_sign_flip_p(m))
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1, 1]), size=(n_random, m))
    extreme = int(np.sum(np.abs(signs @ informative) >= abs(observed)))
    return SignFlipTest(observed, (1 + extreme) / (1 + n_random), len(d), m, False, min_sign_flip_p(m))


# ----------------------------------------------------------------------------- McNemar and Holm


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test of two models on the same videos.

    ``only_a``: videos model A got right and B wrong; ``only_b`` the reverse.
    """

    n_shared: int
    only_a: int
    only_b: int
    p_value: float
    min_p_value: float  # the smallest p-value this many disagreements could ever give

    @property
    def discordant(self) -> int:
        return self.only_a + self.only_b


def mcnemar_exact(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> McNemar:
    """Two-sided exact McNemar test: binomial test of the discordant pairs against p = 1/2."""
    correct_a = np.asarray(correct_a, dtype=bool)
    correct_b = np.asarray(correct_b, dtype=bool)
    if correct_a.shape != correct_b.shape:
        raise ValueError("both models must be scored on the same videos")
    only_a = int(np.sum(correct_a & ~correct_b))
    only_b = int(np.sum(~correct_a & correct_b))
    n = only_a + only_b
    if n == 0:
        return McNemar(int(len(correct_a)), 0, 0, 1.0, 1.0)
    p = min(1.0, 2.0 * float(binom.cdf(min(only_a, only_b), n, 0.5)))
    return McNemar(int(len(correct_a)), only_a, only_b, p, min(1.0, 2.0 * 0.5**n))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (family-wise error control), in the input order."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="mergesort")
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


@dataclass(frozen=True)
class PairwiseTest:
    """Per-video exact McNemar of two models, Holm-adjusted; ``significant`` is p_holm < alpha (the
    one definition of "told apart" the report uses for every test)."""

    model_a: str
    model_b: str
    test: McNemar
    p_holm: float
    significant: bool


def pairwise_mcnemar(correct: Mapping[str, Mapping[str, bool]], *, alpha: float = 0.05) -> list[PairwiseTest]:
    """Exact McNemar for every pair of models on the videos both predicted, Holm-corrected.

    ``correct``: model -> {video_id: was the prediction right}. It treats videos as independent.
    """
    names = list(correct)
    tests = []
    for a, b in combinations(names, 2):
        shared = sorted(set(correct[a]) & set(correct[b]))
        tests.append((a, b, mcnemar_exact([correct[a][v] for v in shared], [correct[b][v] for v in shared])))
    adjusted = holm([t.p_value for _, _, t in tests]) if tests else []
    return [
        PairwiseTest(a, b, test, p_holm, p_holm < alpha) for (a, b, test), p_holm in zip(tests, adjusted, strict=True)
    ]
