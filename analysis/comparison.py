"""The evidence of a run: group-bootstrap intervals per model, paired group-level tests between
models (Holm-corrected), per-fold spread, and the per-video McNemar view; ``statistics.json``.

The resampling unit is the test GROUP of each video (``videos.csv``'s ``group`` column): the
videos of one group share an actor and a scene, so they are near-copies and not independent
evidence. Without ``videos.csv`` every video is its own group and the unit is "video".
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

from analysis.stats import (
    HEADLINE_METRICS,
    METRIC_NAMES,
    Interval,
    PairwiseTest,
    SignFlipTest,
    group_codes,
    holm,
    metric_samples,
    pairwise_mcnemar,
    per_group_differences,
    percentile_interval,
    point_metrics,
    resample_weights,
    sign_flip_test,
)
from core.runfiles import RunPaths
from core.schema import ModelResult, Prediction
from pipelines.data.records import read_videos_csv

ALPHA = 0.05
PAIR_METRIC = "accuracy"  # what the paired test compares: videos each model got right, per group


def video_groups(run_dir: str | os.PathLike[str]) -> dict[str, str] | None:
    """video_id -> group from ``RUN_DIR/videos.csv``; None when the run has no index."""
    path = RunPaths(run_dir).videos_csv
    if not path.is_file():
        return None
    return {record.video_id: record.group for record in read_videos_csv(path)}


@dataclass(frozen=True)
class FoldSpread:
    """Mean and sample standard deviation over the outer folds of a K-fold run (None: undefined)."""

    n_folds: int
    mean: dict[str, float | None]
    sd: dict[str, float | None]


@dataclass(frozen=True)
class ModelEvidence:
    model: str
    intervals: dict[str, Interval]  # every metric of analysis.stats.METRIC_NAMES
    n_videos: int
    n_groups: int
    folds: FoldSpread | None = None


@dataclass(frozen=True)
class PairEvidence:
    """Model A against model B on the videos both predicted; differences are A - B."""

    model_a: str
    model_b: str
    test: SignFlipTest  # over per-group accuracy differences
    p_holm: float
    significant: bool  # p_holm < alpha: the one definition of "told apart"
    differences: dict[str, Interval]
    n_shared_videos: int

    @property
    def test_name(self) -> str:
        kind = "exact" if self.test.exact else "random (20000 flips)"
        return f"{kind} sign-flip permutation test over per-group {PAIR_METRIC} differences"


@dataclass(frozen=True)
class Comparison:
    unit: str  # "group" or "video"
    n_groups: int
    n_videos: int
    alpha: float
    n_resamples: int
    models: dict[str, ModelEvidence]
    pairs: list[PairEvidence]
    mcnemar: list[PairwiseTest]  # secondary: assumes independent videos

    def pair(self, a: str, b: str) -> PairEvidence | None:
        return next((p for p in self.pairs if {p.model_a, p.model_b} == {a, b}), None)

    def to_json(self) -> dict[str, Any]:
        """``report/statistics.json``: 95 % percentile intervals, resampling unit, paired tests."""
        models: dict[str, Any] = {}
        for name, evidence in self.models.items():
            models[name] = {metric: _interval_json(evidence.intervals[metric]) for metric in HEADLINE_METRICS}
            if evidence.folds is not None:
                models[name]["folds"] = {
                    "n_folds": evidence.folds.n_folds,
                    **{m: {"mean": evidence.folds.mean[m], "sd": evidence.folds.sd[m]} for m in HEADLINE_METRICS},
                }
        return {
            "resampling_unit": self.unit,
            "n_test_groups": self.n_groups,
            "n_test_videos": self.n_videos,
            "confidence": 0.95,
            "n_resamples": self.n_resamples,
            "alpha": self.alpha,
            "models": models,
            "pairs": [
                {
                    "a": p.model_a,
                    "b": p.model_b,
                    "test": p.test_name,
                    "p": p.test.p_value,
                    "p_holm": p.p_holm,
                    "metric": PAIR_METRIC,
                    "difference": _interval_json(p.differences[PAIR_METRIC]),
                    "differences": {m: _interval_json(p.differences[m]) for m in HEADLINE_METRICS},
                    "n_groups": p.test.n_groups,
                    "n_videos": p.n_shared_videos,
                }
                for p in self.pairs
            ],
        }


def _interval_json(interval: Interval) -> dict[str, float | None]:
    return {"estimate": interval.estimate, "low": interval.low, "high": interval.high}


@dataclass(frozen=True)
class _Scored:
    """One model's predictions as arrays, ordered by video id."""

    video_ids: list[str]
    truth: np.ndarray
    predicted: np.ndarray
    scores: np.ndarray

    @classmethod
    def of(cls, predictions: Sequence[Prediction]) -> _Scored:
        ordered = sorted(predictions, key=lambda p: p.video_id)
        return cls(
            [p.video_id for p in ordered],
            np.array([p.true_label for p in ordered], dtype=np.int64),
            np.array([p.pred_label for p in ordered], dtype=np.int64),
            np.array([p.scores for p in ordered], dtype=np.float64).reshape(len(ordered), -1),
        )

    def subset(self, video_ids: Sequence[str]) -> _Scored:
        index = {v: i for i, v in enumerate(self.video_ids)}
        rows = np.array([index[v] for v in video_ids], dtype=np.int64)
        return _Scored(list(video_ids), self.truth[rows], self.predicted[rows], self.scores[rows])


def fold_spread(result: ModelResult) -> FoldSpread | None:
    """Per-fold mean and sd of the headline metrics, from ``result.folds`` (None without folds)."""
    if not result.folds:
        return None
    mean: dict[str, float | None] = {}
    sd: dict[str, float | None] = {}
    for metric in HEADLINE_METRICS:
        values = [getattr(f.metrics, metric) for f in result.folds if getattr(f.metrics, metric) is not None]
        mean[metric] = float(np.mean(values)) if values else None
        sd[metric] = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return FoldSpread(len(result.folds), mean, sd)


def _groups_of(video_ids: Sequence[str], groups: Mapping[str, str] | None) -> list[str]:
    """Each video's group (a video missing from the index is its own group)."""
    if groups is None:
        return list(video_ids)
    return [groups.get(v, f"video:{v}") for v in video_ids]


class _Resampler:
    """Metric samples of each model on shared group resamples, computed once per video set
    (every model of a run normally predicts the same videos, so each model is resampled once)."""

    def __init__(self, groups: Mapping[str, str] | None, n_resamples: int, seed: int) -> None:
        self.groups = groups
        self.n_resamples = n_resamples
        self.seed = seed
        self._weights: dict[tuple[str, ...], np.ndarray | None] = {}
        self._samples: dict[tuple[str, tuple[str, ...]], dict[str, np.ndarray]] = {}

    def weights(self, video_ids: Sequence[str]) -> np.ndarray | None:
        key = tuple(video_ids)
        if key not in self._weights:
            unit_groups = _groups_of(video_ids, self.groups)
            self._weights[key] = resample_weights(len(key), unit_groups, self.n_resamples, self.seed)
        return self._weights[key]

    def samples(self, model: str, scored: _Scored) -> dict[str, np.ndarray] | None:
        key = (model, tuple(scored.video_ids))
        weights = self.weights(scored.video_ids)
        if weights is None:
            return None
        if key not in self._samples:
            self._samples[key] = metric_samples(scored.truth, scored.predicted, scored.scores, weights)
        return self._samples[key]


def _intervals(estimates: Mapping[str, float | None], samples: Mapping[str, np.ndarray] | None) -> dict[str, Interval]:
    if samples is None:
        return {m: Interval(estimates[m], None, None, 0) for m in METRIC_NAMES}
    return {m: percentile_interval(estimates[m], samples[m]) for m in METRIC_NAMES}


def _pair(
    a: tuple[str, _Scored], b: tuple[str, _Scored], resampler: _Resampler
) -> tuple[SignFlipTest, dict[str, Interval], int]:
    shared = sorted(set(a[1].video_ids) & set(b[1].video_ids))
    if not shared:
        return sign_flip_test([]), {m: Interval(None, None, None, 0) for m in METRIC_NAMES}, 0
    one, two = a[1].subset(shared), b[1].subset(shared)
    differences = per_group_differences(
        one.predicted == one.truth, two.predicted == one.truth, _groups_of(shared, resampler.groups)
    )
    point_a = point_metrics(one.truth, one.predicted, one.scores)
    point_b = point_metrics(one.truth, two.predicted, two.scores)
    estimates = {m: None if point_a[m] is None or point_b[m] is None else point_a[m] - point_b[m] for m in METRIC_NAMES}
    samples_a, samples_b = resampler.samples(a[0], one), resampler.samples(b[0], two)
    if samples_a is None or samples_b is None:
        intervals = _intervals(estimates, None)
    else:
        intervals = _intervals(estimates, {m: samples_a[m] - samples_b[m] for m in METRIC_NAMES})
    return sign_flip_test(differences, seed=resampler.seed), intervals, len(shared)


def compare_models(
    results: Sequence[ModelResult],
    groups: Mapping[str, str] | None,
    *,
    n_resamples: int = 2000,
    seed: int = 0,
    alpha: float = ALPHA,
) -> Comparison:
    """Intervals, paired group-level tests (Holm over all pairs) and McNemar for ``results``.

    ``groups``: video_id -> group (None: every video its own group, the unit is then "video").
    """
    resampler = _Resampler(groups, n_resamples, seed)
    scored = {r.model: _Scored.of(r.predictions) for r in results}
    models = {}
    for r in results:
        mine = scored[r.model]
        estimates = point_metrics(mine.truth, mine.predicted, mine.scores)
        intervals = _intervals(estimates, resampler.samples(r.model, mine))
        n_groups = group_codes(_groups_of(mine.video_ids, groups))[1] if mine.video_ids else 0
        models[r.model] = ModelEvidence(r.model, intervals, len(mine.video_ids), n_groups, fold_spread(r))
    raw = [(a, b, *_pair((a, scored[a]), (b, scored[b]), resampler)) for a, b in combinations(scored, 2)]
    adjusted = holm([test.p_value for _, _, test, _, _ in raw]) if raw else []
    pairs = [
        PairEvidence(a, b, test, p_holm, p_holm < alpha, differences, shared)
        for (a, b, test, differences, shared), p_holm in zip(raw, adjusted, strict=True)
    ]
    correct = {r.model: {p.video_id: p.true_label == p.pred_label for p in r.predictions} for r in results}
    video_ids = sorted({p.video_id for r in results for p in r.predictions})
    return Comparison(
        unit="video" if groups is None else "group",
        n_groups=group_codes(_groups_of(video_ids, groups))[1] if video_ids else 0,
        n_videos=len(video_ids),
        alpha=alpha,
        n_resamples=n_resamples,
        models=models,
        pairs=pairs,
        mcnemar=pairwise_mcnemar(correct, alpha=alpha),
    )
