"""Search for a whole-group assignment that puts every class in every split.

The shuffled split (:func:`pipelines.data.splits.group_split`) draws whole groups at random. Where
groups hold several classes (UCF101 group numbers shared by every class) next to groups of one
class (files with other names), or where a class has few groups, a draw can leave a class out of
a split. :func:`assign_groups` then searches instead of failing:

1. a *cover*: for every split, groups that together hold every class, no group used twice. Depth
   first, the class with the fewest free groups first, groups that cover the most missing classes
   first, ties in a seeded random order. The search is exhaustive within ``max_steps``, so when it
   ends without a cover, none exists;
2. the groups left over are dealt in the same seeded order until each split has its requested
   number of groups (a split whose cover is larger keeps the cover); ``rest`` takes what remains.

Deterministic for a given random generator state, independent of the order of the groups.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

# Depth-first steps before giving up. Instances of a few hundred groups find a cover within a few
# hundred steps; only contrived overlaps of shared groups need a longer search.
SEARCH_STEPS = 20_000


@dataclass(frozen=True)
class GroupAssignment:
    """The split of each group, or None with ``exhausted`` True when no assignment exists
    (exhausted False: none was found within the step budget; another seed may find one)."""

    split_of: dict[str, str] | None
    exhausted: bool = False


class _OutOfSteps(Exception):
    pass


class _CoverSearch:
    """Depth-first search for one cover per split (see the module docstring)."""

    def __init__(
        self,
        group_classes: Mapping[str, frozenset[str]],
        splits: tuple[str, ...],
        rank: Mapping[str, int],
        max_steps: int,
    ) -> None:
        self.group_classes = group_classes
        self.splits = splits
        self.rank = rank
        self.max_steps = max_steps
        self.steps = 0
        self.classes = sorted(set().union(*group_classes.values()))
        self.groups_of = {c: [g for g in sorted(group_classes) if c in group_classes[g]] for c in self.classes}
        self.assigned: dict[str, str] = {}
        self.covered: dict[str, set[str]] = {split: set() for split in splits}

    def _free(self, class_name: str) -> int:
        return sum(group not in self.assigned for group in self.groups_of[class_name])

    def _missing(self, class_name: str) -> list[str]:
        return [split for split in self.splits if class_name not in self.covered[split]]

    def _still_possible(self) -> bool:
        return all(self._free(c) >= len(self._missing(c)) for c in self.classes)

    def search(self) -> bool:
        self.steps += 1
        if self.steps > self.max_steps:
            raise _OutOfSteps
        open_classes = [c for c in self.classes if self._missing(c)]
        if not open_classes:
            return True
        class_name = min(open_classes, key=lambda c: (self._free(c), c))
        split = self._missing(class_name)[0]
        candidates = sorted(
            (g for g in self.groups_of[class_name] if g not in self.assigned),
            key=lambda g: (-len(self.group_classes[g] - self.covered[split]), self.rank[g]),
        )
        for group in candidates:
            added = self.group_classes[group] - self.covered[split]
            self.assigned[group] = split
            self.covered[split] |= added
            if self._still_possible() and self.search():
                return True
            self.covered[split] -= added
            del self.assigned[group]
        return False


def assign_groups(
    group_classes: Mapping[str, frozenset[str]],
    counts: Mapping[str, int],
    rng: np.random.Generator,
    *,
    rest: str = "train",
    max_steps: int = SEARCH_STEPS,
) -> GroupAssignment:
    """Assign every group of ``group_classes`` (group -> the classes it holds) to a split of
    ``counts`` (split -> requested number of groups) so that every split holds every class."""
    if rest not in counts:
        raise ValueError(f"rest split {rest!r} is not one of {list(counts)}")
    ordered = sorted(group_classes)
    rank = {group: int(position) for group, position in zip(ordered, rng.permutation(len(ordered)), strict=True)}
    search = _CoverSearch(group_classes, tuple(counts), rank, max_steps)
    try:
        found = search.search()
    except _OutOfSteps:
        return GroupAssignment(None, exhausted=False)
    if not found:
        return GroupAssignment(None, exhausted=True)
    split_of = dict(search.assigned)
    sizes = {split: sum(s == split for s in split_of.values()) for split in counts}
    for group in sorted((g for g in ordered if g not in split_of), key=rank.__getitem__):
        split = next((s for s in counts if s != rest and sizes[s] < counts[s]), rest)
        split_of[group] = split
        sizes[split] += 1
    return GroupAssignment(split_of)
