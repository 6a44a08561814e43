"""Outer cross-validation: whole groups to K folds, so that every video is tested exactly once.

``prepare --folds K`` (K > 1) gives each group one outer fold, stratified like the fixed split
(:func:`~pipelines.data.splits.group_strata`: a UCF101 group number is one unit across classes;
per-file groups stratify by class): each stratum's groups are shuffled and dealt round-robin to
the folds from a random first fold, so the folds hold whole groups in near-equal numbers and, as in
the fixed split, the draw of a stratum depends only on the seed and its first class name. For fold
k, test = fold k's groups; val is carved by group out of the rest
(:func:`~pipelines.data.splits.carve_val`, as for the official lists); train = the rest.
``--split official:all`` takes the folds from UCF101's three test lists instead.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from pipelines.data.splits import TooFewGroupsError, carve_val, class_seed, group_strata, groups_per_class

FOLD_SALT = 3  # the random state of the fold draw, apart from those of the fixed split (0, 1) and of val (2)


def min_groups_for_folds(folds: int) -> int:
    """The fewest groups a class needs for ``folds`` outer folds: one per fold, and at least two
    left beside the largest fold (one for train, one for val)."""
    if folds < 2:
        raise ValueError(f"outer folds need K >= 2, got {folds}")
    n = folds
    while n - -(-n // folds) < 2:  # n minus the largest fold's share, ceil(n / K)
        n += 1
    return n


def check_enough_groups_for_folds(classes: Sequence[str], groups: Sequence[str], folds: int) -> None:
    """Raise :class:`TooFewGroupsError` naming every class with too few groups for ``folds`` folds."""
    needed = min_groups_for_folds(folds)
    short = {name: n for name, n in groups_per_class(classes, groups).items() if n < needed}
    if short:
        listed = ", ".join(f"{name} has {n}" for name, n in short.items())
        raise TooFewGroupsError(
            f"too few groups for --folds {folds}: each class needs at least {needed} groups (one per fold, whole "
            f"groups only, and train and val groups beside each fold), but {listed}; use fewer --folds, add videos "
            f"of other groups, or drop the class with --classes"
        )


def group_kfold(classes: Sequence[str], groups: Sequence[str], *, folds: int, seed: int = 0) -> list[int]:
    """The outer fold (0..folds-1) of each item; every group in one fold. Deterministic for a seed
    and independent of the item order."""
    check_enough_groups_for_folds(classes, groups, folds)
    stratum = group_strata(classes, groups)
    members: dict[str, set[str]] = defaultdict(set)
    for group, first_class in stratum.items():
        members[first_class].add(group)
    fold_of_group: dict[str, int] = {}
    for first_class, names in sorted(members.items()):
        rng = np.random.default_rng(class_seed(seed, first_class, FOLD_SALT))
        start = int(rng.integers(folds))
        for position, group in enumerate(rng.permutation(sorted(names))):
            fold_of_group[str(group)] = (start + position) % folds
    return [fold_of_group[group] for group in groups]


def outer_fold_splits(
    classes: Sequence[str], groups: Sequence[str], fold_of: Sequence[int], *, val: float, seed: int = 0
) -> list[tuple[str, ...]]:
    """Each item's split in every outer fold: "test" in its own fold; in the others "val" or
    "train", val carved by group from the training groups of that fold."""
    folds = max(fold_of) + 1
    per_fold = []
    for k in range(folds):
        labelled = ["test" if f == k else "train" for f in fold_of]
        missing = sorted(set(classes) - {c for c, s in zip(classes, labelled, strict=True) if s == "test"})
        if missing:
            raise TooFewGroupsError(
                f"outer fold {k} has no test video of {', '.join(missing)}: groups shared by several classes are "
                f"dealt to folds as units; use fewer --folds, add videos of that class to more groups, or drop it "
                f"with --classes"
            )
        try:
            per_fold.append(carve_val(classes, groups, labelled, val=val, seed=seed))
        except TooFewGroupsError as exc:
            raise TooFewGroupsError(f"outer fold {k}: {exc}") from None
    return [tuple(splits) for splits in zip(*per_fold, strict=True)]
