"""Uncertainty and significance for test-set metrics: pure functions on labels, predictions, scores.

* Bootstrap 95 % confidence intervals resample the **test videos** with replacement. A resample is
  a vector of multiplicities (multinomial counts), so every metric is computed from weighted
  counts in one vectorised pass instead of 2000 calls into scikit-learn.
* Pairwise exact McNemar tests compare two models on the test videos both predicted, with a Holm
  correction over all pairs, and say in plain words when the test set is too small to tell two
  models apart.
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
MIN_DISCORDANT = 10  # below this many disagreements a McNemar test says little either way


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
    """(R, n) multiplicities of ``n`` videos in ``n_resamples`` bootstrap resamples."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(np.float64)


def bootstrap_intervals(
    y_true: Sequence[int],
    y_pred: Sequence[int],
    scores: np.ndarray,
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    chunk: int = 250,
) -> dict[str, Interval]:
    """Percentile bootstrap intervals of every metric in :data:`METRIC_NAMES` (resampling videos).

    The same ``seed`` gives every model the same resamples of a shared test set.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[0] != len(y_true) or len(y_pred) != len(y_true):
        raise ValueError(f"y_true {y_true.shape}, y_pred {y_pred.shape} and scores {scores.shape} do not align")
    if len(y_true) == 0:
        raise ValueError("no test videos to bootstrap")
    estimates = point_metrics(y_true, y_pred, scores)
    weights = bootstrap_weights(len(y_true), n_resamples, seed)
    samples: dict[str, list[np.ndarray]] = {name: [] for name in METRIC_NAMES}
    for start in range(0, n_resamples, chunk):  # bounded memory on large test sets
        part = weights[start : start + chunk]
        for name, values in weighted_label_metrics(y_true, y_pred, part, scores.shape[1]).items():
            samples[name].append(values)
        samples["roc_auc_macro_ovr"].append(weighted_macro_auc(y_true, scores, part))
    tail = 100 * (1 - confidence) / 2
    intervals = {}
    for name in METRIC_NAMES:
        values = np.concatenate(samples[name])
        values = values[~np.isnan(values)]
        if estimates[name] is None or len(values) == 0:
            intervals[name] = Interval(estimates[name], None, None, int(len(values)))
            continue
        low, high = np.percentile(values, [tail, 100 - tail])
        intervals[name] = Interval(estimates[name], float(low), float(high), int(len(values)))
    return intervals


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
    model_a: str
    model_b: str
    test: McNemar
    p_holm: float
    verdict: str  # plain words
    separable: bool  # False: the test set is too small to tell these two apart


def _verdict(a: str, b: str, test: McNemar, p_holm: float, alpha: float) -> tuple[str, bool]:
    if test.n_shared == 0:
        return f"{a} and {b} share no test videos: they cannot be compared.", False
    if test.discordant == 0:
        return (
            f"{a} and {b} are right and wrong on exactly the same {test.n_shared} videos: "
            "this test set cannot separate them.",
            False,
        )
    counts = f"{a} alone right on {test.only_a}, {b} alone right on {test.only_b} of {test.n_shared} shared videos"
    if p_holm < alpha:
        better, worse = (a, b) if test.only_a > test.only_b else (b, a)
        caveat = f" (only {test.discordant} disagreements: treat with care)" if test.discordant < MIN_DISCORDANT else ""
        return f"{better} is more accurate than {worse}: {counts}; Holm-adjusted p = {p_holm:.3g}{caveat}.", True
    if test.min_p_value > alpha or test.discordant < MIN_DISCORDANT:
        return (
            f"The test set is too small to separate {a} and {b}: they disagree on only {test.discordant} "
            f"video(s) ({counts}); even a one-sided split of that many could not reach p < {alpha}"
            if test.min_p_value > alpha
            else f"The test set is too small to separate {a} and {b}: only {test.discordant} disagreements "
            f"({counts}, Holm p = {p_holm:.3g})"
        ) + ".", False
    return f"No significant difference between {a} and {b}: {counts}; Holm-adjusted p = {p_holm:.3g}.", True


def pairwise_mcnemar(correct: Mapping[str, Mapping[str, bool]], *, alpha: float = 0.05) -> list[PairwiseTest]:
    """Exact McNemar for every pair of models on the videos both predicted, Holm-corrected.

    ``correct``: model -> {video_id: was the prediction right}.
    """
    names = list(correct)
    tests = []
    for a, b in combinations(names, 2):
        shared = sorted(set(correct[a]) & set(correct[b]))
        tests.append((a, b, mcnemar_exact([correct[a][v] for v in shared], [correct[b][v] for v in shared])))
    adjusted = holm([t.p_value for _, _, t in tests]) if tests else []
    out = []
    for (a, b, test), p_holm in zip(tests, adjusted, strict=True):
        verdict, separable = _verdict(a, b, test, p_holm, alpha)
        out.append(PairwiseTest(a, b, test, p_holm, verdict, separable))
    return out
