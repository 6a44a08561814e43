"""Split properties on synthetic indexes (no video): whole groups, every class everywhere, seeded."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from pipelines.data.splits import (
    SplitSpec,
    TooFewGroupsError,
    carve_val,
    group_counts,
    group_split,
    min_groups_needed,
    parse_split_spec,
)


@st.composite
def indexes(draw: st.DrawFn) -> tuple[list[str], list[str], float, float]:
    """(classes, groups, val, test): 2..5 classes, enough groups each, 1..4 videos per group, shuffled."""
    val = draw(st.floats(0.05, 0.4))
    test = draw(st.floats(0.05, 0.45))
    needed = min_groups_needed(val, test)
    items: list[tuple[str, str]] = []
    for c in range(draw(st.integers(2, 5))):
        for g in range(draw(st.integers(needed, needed + 12))):
            items += [(f"C{c}", f"C{c}_g{g:02d}")] * draw(st.integers(1, 4))
    items = draw(st.permutations(items))
    return [c for c, _ in items], [g for _, g in items], val, test


@settings(max_examples=60, deadline=None)
@given(indexes(), st.integers(0, 2**31))
def test_group_split_properties(index: tuple[list[str], list[str], float, float], seed: int) -> None:
    classes, groups, val, test = index
    splits = group_split(classes, groups, val=val, test=test, seed=seed)

    split_of_group: dict[str, set[str]] = {}
    for group, split in zip(groups, splits, strict=True):
        split_of_group.setdefault(group, set()).add(split)
    assert all(len(s) == 1 for s in split_of_group.values()), "a group crosses splits"
    assert {(c, s) for c, s in zip(classes, splits, strict=True)} == {
        (c, s) for c in set(classes) for s in ("train", "val", "test")
    }, "a class is missing from a split"
    assert splits == group_split(classes, groups, val=val, test=test, seed=seed)
    # Independent of item order.
    order = sorted(range(len(groups)), key=lambda i: groups[i])
    reordered = group_split([classes[i] for i in order], [groups[i] for i in order], val=val, test=test, seed=seed)
    assert all(reordered[k] == splits[i] for k, i in enumerate(order))


@settings(max_examples=40, deadline=None)
@given(st.integers(3, 60), st.floats(0.05, 0.4), st.floats(0.05, 0.45))
def test_group_counts_sum_and_cover(n: int, val: float, test: float) -> None:
    n_train, n_val, n_test = group_counts(n, val, test)
    assert n_train + n_val + n_test == n
    assert min(n_train, n_val, n_test) >= 1
    if n >= 40 and val + test < 0.8:  # large classes get close to the requested fractions
        assert abs(n_test / n - test) <= 0.5 / n + 1e-9 and abs(n_val / n - val) <= 0.5 / n + 1e-9


def test_seed_changes_the_split_and_subsets_keep_theirs() -> None:
    classes = [c for c in ("A", "B", "C") for _ in range(20)]
    groups = [f"{c}_g{i:02d}" for c in ("A", "B", "C") for i in range(20)]
    first = group_split(classes, groups, seed=0)
    assert first != group_split(classes, groups, seed=1)
    # Dropping class C does not move the groups of A and B.
    assert group_split(classes[:40], groups[:40], seed=0) == first[:40]
    # Rounded group fractions: 20 groups, val 0.15 -> 3, test 0.2 -> 4.
    assert [first[:20].count(s) for s in ("train", "val", "test")] == [13, 3, 4]


def test_too_few_groups_says_how_many() -> None:
    classes = ["A"] * 6 + ["B"] * 2
    groups = ["A_g01", "A_g02", "A_g03", "A_g04", "A_g05", "A_g06", "B_g01", "B_g02"]
    with pytest.raises(TooFewGroupsError, match=r"at least 3 groups.*B has 2"):
        group_split(classes, groups)


def test_group_numbers_shared_by_classes_go_to_one_split_for_every_class() -> None:
    # UCF101 layout: group g07 of every class is one actor/scene unit (as in the demo), so it must
    # not be in training for one class and in test for another.
    classes = [c for c in ("A", "B", "C") for g in range(20) for _ in range(2)]
    groups = [f"g{g:02d}" for _ in ("A", "B", "C") for g in range(20) for _ in range(2)]
    splits = group_split(classes, groups, seed=3)
    split_of_group: dict[str, set[str]] = {}
    for group, split in zip(groups, splits, strict=True):
        split_of_group.setdefault(group, set()).add(split)
    assert all(len(s) == 1 for s in split_of_group.values())
    # 20 group numbers, val 0.15 -> 3, test 0.2 -> 4, and every class has the same counts.
    for c in ("A", "B", "C"):
        mine = {g for g, s, k in zip(groups, splits, classes, strict=True) if k == c and s == "test"}
        assert len(mine) == 4
    assert [splits.count(s) for s in ("train", "val", "test")] == [2 * 3 * 13, 2 * 3 * 3, 2 * 3 * 4]


def _split_of_group(groups: list[str], splits: list[str]) -> dict[str, str]:
    found: dict[str, set[str]] = {}
    for group, split in zip(groups, splits, strict=True):
        found.setdefault(group, set()).add(split)
    assert all(len(s) == 1 for s in found.values()), "a group crosses splits"
    return {group: next(iter(s)) for group, s in found.items()}


def _every_class_everywhere(classes: list[str], splits: list[str], names=("train", "val", "test")) -> bool:
    return {(c, s) for c, s in zip(classes, splits, strict=True)} == {(c, s) for c in set(classes) for s in names}


def test_shared_groups_are_spread_so_that_every_class_is_in_every_split() -> None:
    # Class B has videos only in g00..g02 (shared with A): a shuffle of A's 10 group numbers often
    # puts all three in train; the search puts one in each split instead.
    classes = ["A"] * 10 + ["B"] * 3
    groups = [f"g{g:02d}" for g in range(10)] + ["g00", "g01", "g02"]
    for seed in range(20):
        splits = group_split(classes, groups, val=0.1, test=0.1, seed=seed)
        split_of = _split_of_group(groups, splits)
        assert sorted(split_of[g] for g in ("g00", "g01", "g02")) == ["test", "train", "val"]
        assert _every_class_everywhere(classes, splits)
        assert splits == group_split(classes, groups, val=0.1, test=0.1, seed=seed)


def _demo_plus_other_names(extra: dict[str, int]) -> tuple[list[str], list[str]]:
    """Issue 14: a 6-group demo (g01..g06 in every class) plus files with non-UCF names (one group each)."""
    classes = [c for c in ("PullUps", "Punch", "PushUps") for _ in range(6)]
    groups = [f"g{g:02d}" for _ in ("PullUps", "Punch", "PushUps") for g in range(1, 7)]
    for class_name, count in extra.items():
        classes += [class_name] * count
        groups += [f"{class_name}/clip{k}" for k in range(count)]
    return classes, groups


@pytest.mark.parametrize("extra", [{"PullUps": 8}, {"PullUps": 3, "Punch": 3, "PushUps": 2}])
def test_demo_plus_files_with_other_names_splits_for_every_seed(extra: dict[str, int]) -> None:
    classes, groups = _demo_plus_other_names(extra)
    for seed in range(10):  # seeds 0-2 failed with "leaves a class out of a split" before the search
        splits = group_split(classes, groups, seed=seed)
        split_of = _split_of_group(groups, splits)
        assert _every_class_everywhere(classes, splits)
        # 14 groups, val 0.15 -> 2, test 0.2 -> 3: the requested counts are kept.
        assert [list(split_of.values()).count(s) for s in ("train", "val", "test")] == [9, 2, 3]


RECORDED_SEED4_TEST = ["PullUps/clip2", "g01", "g02"]
RECORDED_SEED4_VAL = ["g04", "g06"]


def test_a_split_that_was_valid_before_the_search_is_unchanged() -> None:
    # Recorded with the shuffle-only group_split (commit b7b4544), seed 4, where it was valid:
    # runs prepared before the search keep their split.
    classes, groups = _demo_plus_other_names({"PullUps": 8})
    splits = group_split(classes, groups, seed=4)
    split_of = _split_of_group(groups, splits)
    assert sorted(g for g, s in split_of.items() if s == "test") == RECORDED_SEED4_TEST
    assert sorted(g for g, s in split_of.items() if s == "val") == RECORDED_SEED4_VAL


def test_no_possible_split_says_which_classes_and_that_a_seed_does_not_help() -> None:
    # Every class has 3 groups, but A needs u1, u2, u3 in three splits, B u1, u2, u4, and C u1, u3,
    # u4: u3 and u4 would share a split, so C cannot be in all three.
    classes = ["A", "A", "A", "B", "B", "B", "C", "C", "C"]
    groups = ["u1", "u2", "u3", "u1", "u2", "u4", "u1", "u3", "u4"]
    with pytest.raises(TooFewGroupsError, match=r"A is in 3 groups \(u1, u2, u3\).*another --seed does not help"):
        group_split(classes, groups)


def _brute_force_possible(classes: list[str], groups: list[str]) -> bool:
    names = sorted(set(groups))
    for choice in itertools.product(range(3), repeat=len(names)):
        split_of = dict(zip(names, choice, strict=True))
        if {(c, split_of[g]) for c, g in zip(classes, groups, strict=True)} == {
            (c, s) for c in set(classes) for s in range(3)
        }:
            return True
    return False


@st.composite
def mixed_indexes(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    """2..5 classes in 3 or 4 of the shared group numbers g0..g4, some with a group of their own:
    about one index in ten admits no split at all."""
    classes: list[str] = []
    groups: list[str] = []
    for c in range(draw(st.integers(2, 5))):
        shared = draw(st.sets(st.integers(0, 4), min_size=3, max_size=4))
        own = [f"C{c}/x"] if draw(st.integers(0, 9)) < 3 else []
        for group in [*(f"g{g}" for g in sorted(shared)), *own]:
            classes.append(f"C{c}")
            groups.append(group)
    return classes, groups


@settings(max_examples=200, deadline=None)
@given(mixed_indexes(), st.integers(0, 2**31))
def test_the_search_finds_a_split_exactly_when_one_exists(index: tuple[list[str], list[str]], seed: int) -> None:
    classes, groups = index
    try:
        splits = group_split(classes, groups, seed=seed)
    except TooFewGroupsError as exc:
        event("no split exists")
        assert "does not help" in str(exc)
        assert not _brute_force_possible(classes, groups)
        return
    _split_of_group(groups, splits)
    assert _every_class_everywhere(classes, splits)


def test_carve_val_searches_when_a_class_has_few_shared_train_groups() -> None:
    # B is in train groups g01 and g02 only (of A's six): val gets one of them for every seed.
    classes = ["A"] * 7 + ["B"] * 3
    groups = [f"g{g:02d}" for g in range(7)] + ["g00", "g01", "g02"]
    splits = ["test" if g in ("g00",) else "train" for g in groups]
    for seed in range(20):
        carved = carve_val(classes, groups, splits, val=0.15, seed=seed)
        assert {(c, s) for c, s in zip(classes, carved, strict=True)} == {
            (c, s) for c in ("A", "B") for s in ("train", "val", "test")
        }
        assert [s for s in carved if s == "test"] == [s for s in splits if s == "test"]
        _split_of_group(groups, carved)


def test_carve_val_keeps_shared_group_numbers_together() -> None:
    classes = [c for c in ("A", "B") for _ in range(10)]
    groups = [f"g{g:02d}" for _ in ("A", "B") for g in range(10)]
    splits = ["test" if int(g[1:]) < 3 else "train" for g in groups]
    carved = carve_val(classes, groups, splits, val=0.3, seed=0)
    val_groups = {g for g, s in zip(groups, carved, strict=True) if s == "val"}
    assert len(val_groups) == 2  # 7 train group numbers * 0.3 -> 2
    for g in val_groups:
        assert [s for gg, s in zip(groups, carved, strict=True) if gg == g] == ["val", "val"]


def test_fractions_are_checked() -> None:
    with pytest.raises(ValueError, match="--val"):
        group_split(["A"] * 3, ["a", "b", "c"], val=1.5)
    with pytest.raises(ValueError, match="sum below 1"):
        group_split(["A"] * 3, ["a", "b", "c"], val=0.5, test=0.5)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 15), st.integers(1, 8), st.floats(0.05, 0.6), st.integers(0, 1000))
def test_carve_val_moves_whole_train_groups(train_groups: int, test_groups: int, val: float, seed: int) -> None:
    classes, groups, splits = [], [], []
    for c in ("A", "B"):
        for g in range(train_groups + test_groups):
            for _ in range(3):
                classes.append(c)
                groups.append(f"{c}_g{g:02d}")
                splits.append("train" if g < train_groups else "test")
    carved = carve_val(classes, groups, splits, val=val, seed=seed)
    assert [s for s in carved if s == "test"] == [s for s in splits if s == "test"]
    for c in ("A", "B"):
        rows = list(zip(groups, carved, classes, strict=True))
        split_groups = {s: {g for g, k, cs in rows if k == s and cs == c} for s in ("train", "val")}
        assert split_groups["train"] and split_groups["val"]
        assert not split_groups["train"] & split_groups["val"]
    assert carved == carve_val(classes, groups, splits, val=val, seed=seed)


def test_parse_split_spec() -> None:
    assert parse_split_spec("group") == SplitSpec("group")
    assert parse_split_spec("official:2") == SplitSpec("official", 2)
    assert str(parse_split_spec("official:1")) == "official:1"
    for bad in ("foo", "official", "official:0", "official:x", "group:1"):
        with pytest.raises(ValueError, match="use 'group', 'official:N'"):
            parse_split_spec(bad)


def test_official_lists_saved_with_a_byte_order_mark_are_read_whole(tmp_path: Path) -> None:
    """Lists saved by Windows Notepad start with a UTF-8 BOM: it is no part of the first entry."""
    from pipelines.data.splits import load_official_split

    bom = "\ufeff"
    (tmp_path / "classInd.txt").write_text(bom + "1 PullUps\n2 Punch\n", encoding="utf-8")
    (tmp_path / "trainlist01.txt").write_text(bom + "PullUps/v_PullUps_g08_c01.avi 1\n", encoding="utf-8")
    (tmp_path / "testlist01.txt").write_text(bom + "Punch/v_Punch_g01_c01.avi\n", encoding="utf-8")
    split = load_official_split(tmp_path, 1)
    assert split.class_order == ("PullUps", "Punch")
    assert all(not key.startswith(bom) for key in split.train | split.test) and len(split.train) == 1
