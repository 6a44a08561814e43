"""The whole-group assignment search on its own: covers, requested counts, seeds, step budget."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.data.split_search import assign_groups

COUNTS = {"test": 3, "val": 2, "train": 9}


def demo_plus_other_names() -> dict[str, frozenset[str]]:
    shared = {f"g{g:02d}": frozenset({"PullUps", "Punch", "PushUps"}) for g in range(1, 7)}
    own = {f"PullUps/clip{k}": frozenset({"PullUps"}) for k in range(8)}
    return shared | own


def test_every_split_holds_every_class_and_gets_its_count() -> None:
    groups = demo_plus_other_names()
    for seed in range(10):
        found = assign_groups(groups, COUNTS, np.random.default_rng(seed))
        assert found.split_of is not None and set(found.split_of) == set(groups)
        for split, count in COUNTS.items():
            chosen = [g for g, s in found.split_of.items() if s == split]
            assert len(chosen) == count
            assert set().union(*(groups[g] for g in chosen)) == {"PullUps", "Punch", "PushUps"}


def test_deterministic_per_seed_and_independent_of_group_order() -> None:
    groups = demo_plus_other_names()
    reversed_groups = dict(reversed(list(groups.items())))
    first = assign_groups(groups, COUNTS, np.random.default_rng(7)).split_of
    assert first == assign_groups(reversed_groups, COUNTS, np.random.default_rng(7)).split_of
    assert any(assign_groups(groups, COUNTS, np.random.default_rng(s)).split_of != first for s in range(8, 12))


def test_a_cover_larger_than_the_requested_count_is_kept() -> None:
    # Only per-class groups: each split needs one group of A and one of B, whatever its count asks.
    groups = {f"{c}{k}": frozenset({c}) for c in "AB" for k in range(4)}
    found = assign_groups(groups, {"test": 1, "val": 1, "train": 6}, np.random.default_rng(0))
    assert found.split_of is not None
    sizes = {s: sum(v == s for v in found.split_of.values()) for s in ("train", "val", "test")}
    assert sizes == {"train": 4, "val": 2, "test": 2}


def test_impossible_is_exhausted_and_a_short_budget_is_not() -> None:
    impossible = {"u1": frozenset("ABC"), "u2": frozenset("AB"), "u3": frozenset("AC"), "u4": frozenset("BC")}
    found = assign_groups(impossible, {"test": 1, "val": 1, "train": 2}, np.random.default_rng(0))
    assert found.split_of is None and found.exhausted
    possible = demo_plus_other_names()
    short = assign_groups(possible, COUNTS, np.random.default_rng(0), max_steps=1)
    assert short.split_of is None and not short.exhausted
    with pytest.raises(ValueError, match="rest split"):
        assign_groups(possible, {"test": 1, "val": 1}, np.random.default_rng(0))
