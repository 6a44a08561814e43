from __future__ import annotations

import numpy as np
import pytest

from analysis.comparison import compare_models
from tests.analysis.test_report import synthetic_result


def _results(n: int = 30) -> tuple[list, dict[str, str]]:
    labels = np.arange(n) % 3
    ids = [f"v{i:02d}" for i in range(n)]
    groups = {v: f"g{i // 6}" for i, v in enumerate(ids)}
    row_groups = [groups[v] for v in ids]
    return [
        synthetic_result(m, s, ids, labels, i, row_groups) for i, (m, s) in enumerate((("svm", 0.8), ("gb", 0.9)))
    ], groups


def test_without_an_index_every_video_is_its_own_group():
    results, groups = _results()
    by_group = compare_models(results, groups, n_resamples=500)
    by_video = compare_models(results, None, n_resamples=500)
    assert (by_group.unit, by_group.n_groups, by_group.n_videos) == ("group", 5, 30)
    assert (by_video.unit, by_video.n_groups) == ("video", 30)
    assert by_video.to_json()["resampling_unit"] == "video"


def test_pairs_are_holm_adjusted_and_paired_differences_match_the_model_intervals():
    results, groups = _results()
    c = compare_models(results, groups, n_resamples=1000)
    (pair,) = c.pairs
    assert pair.p_holm == pytest.approx(pair.test.p_value)  # one pair: Holm changes nothing
    a, b = c.models["svm"].intervals, c.models["gb"].intervals
    assert pair.differences["accuracy"].estimate == pytest.approx(a["accuracy"].estimate - b["accuracy"].estimate)
    assert pair.test.n_groups == 5 and pair.test.exact and pair.test.min_p_value >= 2 / 32
    assert not pair.significant  # five groups can never reach p < 0.05
    assert len(c.mcnemar) == 1 and c.mcnemar[0].test.n_shared == 30


def test_models_tested_on_different_videos_are_compared_on_the_shared_ones():
    results, groups = _results()
    results[1].predictions = results[1].predictions[:18]  # only the first three groups
    c = compare_models(results, groups, n_resamples=300)
    assert c.models["gb"].n_videos == 18 and c.models["gb"].n_groups == 3
    assert c.pairs[0].n_shared_videos == 18 and c.pairs[0].test.n_groups == 3
