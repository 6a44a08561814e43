"""Outer-fold properties on synthetic indexes (no video): whole groups, every video tested once."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.data.folds import group_kfold, min_groups_for_folds, outer_fold_splits
from pipelines.data.splits import TooFewGroupsError


@st.composite
def indexes(draw: st.DrawFn) -> tuple[list[str], list[str], int, float]:
    """(classes, groups, folds, val): per-class groups (class-prefixed) or UCF101-style numbers shared
    by every class, enough groups for the folds, 1..3 videos per group, shuffled."""
    folds = draw(st.integers(2, 6))
    val = draw(st.floats(0.05, 0.4))
    shared = draw(st.booleans())
    needed = min_groups_for_folds(folds)
    n_classes = draw(st.integers(2, 4))
    items: list[tuple[str, str]] = []
    n_shared = draw(st.integers(needed, needed + 8))
    for c in range(n_classes):
        n_groups = n_shared if shared else draw(st.integers(needed, needed + 8))
        for g in range(n_groups):
            group = f"g{g:02d}" if shared else f"C{c}_g{g:02d}"
            items += [(f"C{c}", group)] * draw(st.integers(1, 3))
    items = draw(st.permutations(items))
    return [c for c, _ in items], [g for _, g in items], folds, val


@settings(max_examples=60, deadline=None)
@given(indexes(), st.integers(0, 2**31))
def test_every_group_in_one_fold_every_video_tested_once(
    index: tuple[list[str], list[str], int, float], seed: int
) -> None:
    classes, groups, folds, val = index
    fold_of = group_kfold(classes, groups, folds=folds, seed=seed)
    assert set(fold_of) == set(range(folds))
    fold_of_group: dict[str, set[int]] = defaultdict(set)
    for group, fold in zip(groups, fold_of, strict=True):
        fold_of_group[group].add(fold)
    assert all(len(found) == 1 for found in fold_of_group.values())  # no group in two folds' test sets
    # Whole groups dealt evenly: per class, fold sizes in groups differ by at most one.
    per_class: dict[str, Counter[int]] = defaultdict(Counter)
    for group, found in fold_of_group.items():
        for c in {c for c, g in zip(classes, groups, strict=True) if g == group}:
            per_class[c][next(iter(found))] += 1
    for counts in per_class.values():
        sizes = [counts.get(k, 0) for k in range(folds)]
        assert max(sizes) - min(sizes) <= 1

    per_item = outer_fold_splits(classes, groups, fold_of, val=val, seed=seed)
    for fold_splits, fold in zip(per_item, fold_of, strict=True):
        assert len(fold_splits) == folds
        assert [k for k, split in enumerate(fold_splits) if split == "test"] == [fold]  # tested exactly once
    for k in range(folds):
        rows = [(c, g, splits[k]) for c, g, splits in zip(classes, groups, per_item, strict=True)]
        split_of_group: dict[str, set[str]] = defaultdict(set)
        for _, group, split in rows:
            split_of_group[group].add(split)
        assert all(len(found) == 1 for found in split_of_group.values())  # whole groups in every fold
        assert {(c, s) for c, _, s in rows} == {(c, s) for c in set(classes) for s in ("train", "val", "test")}

    # Deterministic for a seed, independent of the item order.
    order = sorted(range(len(groups)), key=lambda i: (groups[i], classes[i]))
    again = group_kfold([classes[i] for i in order], [groups[i] for i in order], folds=folds, seed=seed)
    assert again == [fold_of[i] for i in order]


def test_a_ucf101_group_number_is_one_unit_across_classes() -> None:
    classes = [c for c in ("A", "B", "C") for _ in range(10)]
    groups = [f"g{g:02d}" for _ in range(3) for g in range(10)]
    fold_of = group_kfold(classes, groups, folds=5, seed=7)
    fold_of_number = {g: {f for f, gg in zip(fold_of, groups, strict=True) if gg == g} for g in set(groups)}
    assert all(len(found) == 1 for found in fold_of_number.values())
    assert sorted(Counter(fold_of).values()) == [6] * 5  # two numbers x three classes per fold


def test_min_groups_for_folds() -> None:
    # one group per fold, and two left beside the largest fold for train and val
    assert [min_groups_for_folds(k) for k in (2, 3, 4, 5, 10)] == [4, 3, 4, 5, 10]
    with pytest.raises(ValueError, match="K >= 2"):
        min_groups_for_folds(1)


def test_too_few_groups_name_the_class_and_the_fix() -> None:
    classes = ["A"] * 5 + ["B"] * 3
    groups = [f"A{g}" for g in range(5)] + [f"B{g}" for g in range(3)]
    with pytest.raises(TooFewGroupsError, match="--folds 5.*B has 3.*use fewer --folds"):
        group_kfold(classes, groups, folds=5)


def test_a_fold_without_a_class_is_a_clear_error() -> None:
    # C's videos are all in group g00, shared with A and B: no other fold can test C.
    classes = ["A"] * 4 + ["B"] * 4 + ["C"]
    groups = [f"g{g:02d}" for g in range(4)] * 2 + ["g00"]
    fold_of = [int(g[1:]) % 2 for g in groups]
    with pytest.raises(TooFewGroupsError, match="outer fold 1 has no test video of C"):
        outer_fold_splits(classes, groups, fold_of, val=0.2)
