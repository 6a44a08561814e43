"""Leak-free train/val/test splits: whole groups go to one split, every class is in every split.

``--split group`` assigns whole groups with scikit-learn's
:class:`~sklearn.model_selection.GroupShuffleSplit` given exact group counts, stratified by the
classes that share groups (:func:`group_strata`). A UCF101 group number (``g01``) is one unit
across all classes, as in the official lists, so every class's ``g01`` lands in the same split;
per-file groups of other names stratify by class. The random state of a stratum depends only on
the seed and its first class name, so choosing a subset of classes does not move the other
classes' groups. ``--split official:N`` reads the UCF101 lists
(``trainlistNN.txt``, ``testlistNN.txt``, ``classInd.txt``) and carves val out of train by group;
``--split official:all`` takes the three test lists as outer folds (:mod:`pipelines.data.folds`).
"""

from __future__ import annotations

import math
import os
import zlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from sklearn.model_selection import GroupShuffleSplit

from pipelines.data.records import SPLITS
from pipelines.data.split_search import SEARCH_STEPS, assign_groups

SPLIT_KINDS = ("group", "official")
OFFICIAL_LIST_FOLDER = "ucfTrainTestlist"


class TooFewGroupsError(ValueError):
    """A class has fewer groups than the requested split needs."""


class OfficialListsNotFoundError(FileNotFoundError):
    """The UCF101 split lists were not found beside the data."""


@dataclass(frozen=True)
class SplitSpec:
    """``group``, or ``official`` with the UCF101 split number (1..3 for UCF101); ``official`` without a
    number is ``official:all``: the three official test lists as outer folds."""

    kind: str = "group"
    number: int | None = None

    @property
    def all_lists(self) -> bool:
        return self.kind == "official" and self.number is None

    def __str__(self) -> str:
        if self.kind == "group":
            return "group"
        return f"official:{'all' if self.number is None else self.number}"


OFFICIAL_SPLIT_NUMBERS = (1, 2, 3)  # official:all reads these lists; their test lists are the folds


def parse_split_spec(text: str) -> SplitSpec:
    """``"group"``, ``"official:N"`` or ``"official:all"`` -> :class:`SplitSpec`; ValueError with the accepted forms."""
    kind, _, number = text.strip().partition(":")
    if kind == "group" and not number:
        return SplitSpec("group")
    if kind == "official" and number.isdigit() and int(number) >= 1:
        return SplitSpec("official", int(number))
    if kind == "official" and number == "all":
        return SplitSpec("official")
    raise ValueError(
        f"unknown split {text!r}; use 'group', 'official:N' (N = 1, 2 or 3 for UCF101) or 'official:all' "
        f"(the three official test lists as outer folds)"
    )


def check_fraction(name: str, value: float) -> None:
    if not 0 < value < 1:
        raise ValueError(f"--{name} must be a fraction between 0 and 1 (exclusive), got {value}")


def check_fractions(val: float, test: float) -> None:
    """Val and test are fractions of the groups: each in (0, 1), together below 1."""
    check_fraction("val", val)
    check_fraction("test", test)
    if val + test >= 1:
        raise ValueError(f"--val {val} + --test {test} leave no training data; keep their sum below 1")


def _round(x: float) -> int:
    return math.floor(x + 0.5)


def group_counts(n_groups: int, val: float, test: float) -> tuple[int, int, int]:
    """(train, val, test) group counts for a class with ``n_groups`` groups: the fractions rounded
    to whole groups, clamped so that every split keeps at least one group (given >= 3 groups)."""
    n_test = min(max(1, _round(test * n_groups)), n_groups - 2)
    n_val = min(max(1, _round(val * n_groups)), n_groups - n_test - 1)
    return n_groups - n_val - n_test, n_val, n_test


def min_groups_needed(val: float, test: float) -> int:
    """The fewest groups per class for which train, val and test each get at least one group."""
    check_fractions(val, test)
    return 3


def class_seed(seed: int, class_name: str, salt: int = 0) -> int:
    """The random state of one stratum's draw: from the seed, its first class name and a salt per draw."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, zlib.crc32(class_name.encode("utf-8")), salt])
    return int(state.generate_state(1)[0])


def group_strata(classes: Sequence[str], groups: Sequence[str]) -> dict[str, str]:
    """The stratum of each group: the first class name of its connected component, where two
    classes are connected when a group holds videos of both.

    Class-specific groups (one file per group, say) make one stratum per class, so a split
    stratified by stratum is stratified by class. UCF101 group numbers hold videos of every class
    and make one stratum, so each number goes to one split for all classes at once.
    """
    if len(classes) != len(groups):
        raise ValueError(f"classes ({len(classes)}) and groups ({len(groups)}) differ in length")
    parent = {name: name for name in classes}

    def root(name: str) -> str:
        while parent[name] != name:
            name = parent[name]
        return name

    first_class: dict[str, str] = {}
    for class_name, group in zip(classes, groups, strict=True):
        other = first_class.setdefault(group, class_name)
        a, b = root(other), root(class_name)
        if a != b:
            parent[max(a, b)] = min(a, b)  # the root is the smallest class name of the component
    return {group: root(class_name) for group, class_name in first_class.items()}


def _items_by_stratum(classes: Sequence[str], groups: Sequence[str]) -> dict[str, list[int]]:
    """Item indices bucketed by the stratum of their group (:func:`group_strata`)."""
    stratum = group_strata(classes, groups)
    members: dict[str, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        members[stratum[group]].append(index)
    return dict(members)


def groups_per_class(classes: Sequence[str], groups: Sequence[str]) -> dict[str, int]:
    """Distinct groups of each class, by class name."""
    found: dict[str, set[str]] = defaultdict(set)
    for class_name, group in zip(classes, groups, strict=True):
        found[class_name].add(group)
    return {name: len(found[name]) for name in sorted(found)}


def _check_every_class_in(classes: Sequence[str], splits: Sequence[str], names: Sequence[str]) -> None:
    missing = [
        f"{class_name} has no {name} video"
        for class_name in sorted(set(classes))
        for name in names
        if not any(c == class_name and s == name for c, s in zip(classes, splits, strict=True))
    ]
    if missing:
        raise TooFewGroupsError(
            f"whole-group split leaves a class out of a split: {', '.join(missing)}; groups shared by "
            f"several classes are split as units, so add videos of that class to more groups or drop it with --classes"
        )


def check_enough_groups(classes: Sequence[str], groups: Sequence[str], *, val: float, test: float) -> None:
    """Raise :class:`TooFewGroupsError` naming every class with fewer groups than the split needs."""
    needed = min_groups_needed(val, test)
    short = {name: n for name, n in groups_per_class(classes, groups).items() if n < needed}
    if short:
        listed = ", ".join(f"{name} has {n}" for name, n in short.items())
        raise TooFewGroupsError(
            f"too few groups: each class needs at least {needed} groups (one per split, whole groups only, "
            f"whatever --val/--test), but {listed}; add videos of other groups, or drop the class with --classes"
        )


def _shuffle_split(
    indices: np.ndarray, groups: np.ndarray, n_first: int, n_second: int, random_state: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``indices`` into two parts holding exactly ``n_first`` and ``n_second`` whole groups."""
    splitter = GroupShuffleSplit(n_splits=1, train_size=n_first, test_size=n_second, random_state=random_state)
    first, second = next(splitter.split(indices, groups=groups[indices]))
    return indices[first], indices[second]


def _classes_of_groups(
    classes: Sequence[str], groups: Sequence[str], members: Sequence[int]
) -> dict[str, frozenset[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for index in members:
        found[groups[index]].add(classes[index])
    return {group: frozenset(names) for group, names in found.items()}


def _covers_every_class(
    split_of: Mapping[str, str], group_classes: Mapping[str, frozenset[str]], names: Sequence[str]
) -> bool:
    present = {(c, split_of[g]) for g, held in group_classes.items() for c in held}
    return all((c, name) in present for c in set().union(*group_classes.values()) for name in names)


def _no_split_message(group_classes: Mapping[str, frozenset[str]], names: Sequence[str], exhausted: bool) -> str:
    """Which classes bind (the fewest groups) and what to change."""
    all_classes = set().union(*group_classes.values())
    groups_of = {c: sorted(g for g, held in group_classes.items() if c in held) for c in all_classes}
    fewest = sorted(groups_of, key=lambda c: (len(groups_of[c]), c))[:3]
    listed = "; ".join(
        f"{c} is in {len(groups_of[c])} groups ({', '.join(groups_of[c][:6])}{', ...' * (len(groups_of[c]) > 6)})"
        for c in fewest
    )
    where = "/".join(names)
    if exhausted:
        return (
            f"no whole-group split puts every class in {where}: {listed}; a group shared by several classes goes "
            f"to one split for all of them, and these groups cannot be spread so that every split holds every class "
            f"(another --seed does not help); add videos of these classes from other groups, or drop one with --classes"
        )
    return (
        f"no whole-group split that puts every class in {where} was found within {SEARCH_STEPS} search steps "
        f"({listed}); try another --seed, add videos of these classes from other groups, or drop one with --classes"
    )


def _searched_split(
    group_classes: Mapping[str, frozenset[str]], counts: dict[str, int], seed: int, names: Sequence[str]
) -> dict[str, str]:
    """The split of each group from :func:`~pipelines.data.split_search.assign_groups`, or
    :class:`TooFewGroupsError` saying what to change."""
    found = assign_groups(group_classes, counts, np.random.default_rng(seed), rest="train")
    if found.split_of is None:
        raise TooFewGroupsError(_no_split_message(group_classes, names, found.exhausted))
    return found.split_of


def group_split(
    classes: Sequence[str], groups: Sequence[str], *, val: float = 0.15, test: float = 0.2, seed: int = 0
) -> list[str]:
    """Split name ("train" | "val" | "test") for each item, whole groups per split.

    ``classes`` and ``groups`` are parallel (one entry per video). ``val`` and ``test`` are
    fractions of the groups of each stratum (:func:`group_strata`), rounded to whole groups, at
    least one group each. Deterministic for a seed and independent of the item order.

    Each stratum is first split by a seeded shuffle of its groups; when that leaves one of its
    classes out of a split, a seeded search (:func:`~pipelines.data.split_search.assign_groups`)
    finds an assignment that keeps every class in every split (a split gets more groups than
    requested only when its classes need them), or :class:`TooFewGroupsError` says what to change.
    """
    check_fractions(val, test)
    check_enough_groups(classes, groups, val=val, test=test)
    group_array = np.asarray(groups, dtype=object)
    splits = [""] * len(groups)
    for class_name, members in sorted(_items_by_stratum(classes, groups).items()):
        indices = np.asarray(members)
        group_classes = _classes_of_groups(classes, groups, members)
        n_train, n_val, n_test = group_counts(len(group_classes), val, test)
        rest, test_idx = _shuffle_split(indices, group_array, n_train + n_val, n_test, class_seed(seed, class_name, 0))
        train_idx, val_idx = _shuffle_split(rest, group_array, n_train, n_val, class_seed(seed, class_name, 1))
        split_of = {
            groups[i]: name
            for name, chosen in (("train", train_idx), ("val", val_idx), ("test", test_idx))
            for i in chosen
        }
        if not _covers_every_class(split_of, group_classes, SPLITS):
            counts = {"test": n_test, "val": n_val, "train": n_train}
            split_of = _searched_split(group_classes, counts, class_seed(seed, class_name, 3), SPLITS)
        for index in members:
            splits[index] = split_of[groups[index]]
    _check_every_class_in(classes, splits, SPLITS)
    return splits


def carve_val(
    classes: Sequence[str], groups: Sequence[str], splits: Sequence[str], *, val: float = 0.15, seed: int = 0
) -> list[str]:
    """Move a ``val`` fraction of each class's train groups (at least one, whole groups) to "val".

    For fixed train/test lists (``--split official:N``). Items not in "train" keep their split.
    As in :func:`group_split`, a seeded search replaces a shuffle that leaves a class out of train or val.
    """
    check_fraction("val", val)
    train = [i for i, split in enumerate(splits) if split == "train"]
    train_classes = [classes[i] for i in train]
    members = _items_by_stratum(train_classes, [groups[i] for i in train])
    short = {name: n for name, n in groups_per_class(train_classes, [groups[i] for i in train]).items() if n < 2}
    if short:
        listed = ", ".join(f"{name} has {n}" for name, n in short.items())
        raise TooFewGroupsError(
            f"cannot carve val out of train: each class needs at least 2 train groups, but {listed}; "
            f"check the official lists or use --split group"
        )
    group_array = np.asarray(groups, dtype=object)
    result = list(splits)
    for class_name, local in sorted(members.items()):
        chosen = [train[j] for j in local]
        indices = np.asarray(chosen)
        group_classes = _classes_of_groups(classes, groups, chosen)
        n_groups = len(group_classes)
        n_val = min(max(1, _round(val * n_groups)), n_groups - 1)
        _, val_idx = _shuffle_split(indices, group_array, n_groups - n_val, n_val, class_seed(seed, class_name, 2))
        val_groups = {groups[i] for i in val_idx}
        split_of = {g: "val" if g in val_groups else "train" for g in group_classes}
        if not _covers_every_class(split_of, group_classes, ("train", "val")):
            counts = {"val": n_val, "train": n_groups - n_val}
            split_of = _searched_split(group_classes, counts, class_seed(seed, class_name, 4), ("train", "val"))
        for index in chosen:
            result[index] = split_of[groups[index]]
    _check_every_class_in([classes[i] for i in train], [result[i] for i in train], ("train", "val"))
    return result


# --- UCF101 official split lists -------------------------------------------------------------


@dataclass(frozen=True)
class OfficialSplit:
    """One UCF101 train/test split: class order from classInd.txt, clip keys per list."""

    number: int
    folder: Path
    class_order: tuple[str, ...]
    train: frozenset[str]  # keys from :func:`official_key`
    test: frozenset[str]

    def split_of(self, class_name: str, filename: str) -> str | None:
        key = official_key(f"{class_name}/{filename}")
        return "train" if key in self.train else "test" if key in self.test else None


def official_key(relative_path: str) -> str:
    """``Class/v_Class_g01_c01.avi`` -> ``class/v_class_g01_c01``: case and extension do not matter
    (UCF101's lists spell some names differently from the files, and users transcode)."""
    path = PurePosixPath(relative_path.strip().replace("\\", "/"))
    return f"{path.parent.name}/{path.stem}".lower()


def list_file_names(number: int) -> tuple[str, str, str]:
    return f"trainlist{number:02d}.txt", f"testlist{number:02d}.txt", "classInd.txt"


def parse_class_index(text: str) -> tuple[str, ...]:
    """``classInd.txt`` ("1 ApplyEyeMakeup" per line) -> class names in index order."""
    entries: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[0].isdigit():
            raise ValueError(f"classInd.txt line {number}: expected 'INDEX ClassName', got {line.strip()!r}")
        entries.append((int(parts[0]), parts[1]))
    return tuple(name for _, name in sorted(entries))


def parse_split_list(text: str) -> frozenset[str]:
    """``trainlistNN.txt`` ("Class/v_..._c01.avi 1") or ``testlistNN.txt`` ("Class/v_..._c01.avi") -> keys."""
    return frozenset(official_key(line.split()[0]) for line in text.splitlines() if line.strip())


def official_list_folders(data_root: str | os.PathLike[str]) -> list[Path]:
    """Where the lists are looked for, in order: ROOT, its parent, and ucfTrainTestlist in either."""
    root = Path(data_root).resolve()
    return [root, root.parent, root / OFFICIAL_LIST_FOLDER, root.parent / OFFICIAL_LIST_FOLDER]


def load_official_split(data_root: str | os.PathLike[str], number: int) -> OfficialSplit:
    """Read split ``number``'s lists from the first folder that holds all three files."""
    names = list_file_names(number)
    folders = official_list_folders(data_root)
    for folder in folders:
        if all((folder / name).is_file() for name in names):
            train_text, test_text, index_text = (
                (folder / name).read_text(encoding="utf-8-sig", errors="replace")
                for name in names  # BOM: Notepad
            )
            return OfficialSplit(
                number=number,
                folder=folder,
                class_order=parse_class_index(index_text),
                train=parse_split_list(train_text),
                test=parse_split_list(test_text),
            )
    partial = [
        f"{folder} has only {', '.join(n for n in names if (folder / n).is_file())}"
        for folder in folders
        if any((folder / n).is_file() for n in names)
    ]
    raise OfficialListsNotFoundError(
        f"official split {number}: {', '.join(names)} not found together; looked in "
        f"{', '.join(str(f) for f in dict.fromkeys(folders))}"
        + (f" ({'; '.join(partial)})" if partial else "")
        + f"; unzip UCF101's {OFFICIAL_LIST_FOLDER} folder beside DATA_ROOT, or use --split group"
    )
