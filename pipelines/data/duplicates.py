"""Byte-identical videos under different names, found at ``prepare`` and kept once.

An exact copy adds no information and harms the comparison wherever it lands: across train and
test it leaks (the model is scored on a video it was trained on, so every model looks perfect),
inside test it counts one prediction twice and narrows the confidence intervals, inside train it
doubles a video's weight. So of each set of identical files one is kept and the others are rejected
with the name of the kept one: the first in scan order (class, then file name) of those whose UCF101
name gives their group, else the first. A copy under another name ("a copy.avi") is a group of its
own: kept instead of ``v_Punch_g01_c01.avi``, it could land in test while the rest of g01, same actor
and scene, trains. Copies in different class folders carry conflicting labels: all of them are rejected.

Cheap: only files that share their size with another are read and hashed (SHA-256).
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from pipelines.data.dataset import VideoFile

DUPLICATE = "duplicate"
CONFLICTING_DUPLICATE = "duplicate with conflicting labels"


@dataclass(frozen=True)
class DuplicateSet:
    """Files with identical bytes: ``kept`` (empty when their classes disagree) and the rejected ones."""

    kept: str
    rejected: tuple[str, ...]


def _digest(path: str | os.PathLike[str]) -> str | None:
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError:
        return None  # unreadable: the pre-flight check rejects it with the reason


def find_duplicates(files: Sequence[VideoFile]) -> list[DuplicateSet]:
    """Sets of byte-identical files among ``files`` (in scan order), empty files left to the pre-flight check."""
    by_size: dict[int, list[VideoFile]] = defaultdict(list)
    for file in files:
        try:
            size = file.path.stat().st_size
        except OSError:
            continue
        if size > 0:
            by_size[size].append(file)
    by_content: dict[str, list[VideoFile]] = defaultdict(list)
    for same_size in by_size.values():
        if len(same_size) > 1:
            for file in same_size:
                digest = _digest(file.path)
                if digest is not None:
                    by_content[digest].append(file)
    order = {file.path: index for index, file in enumerate(files)}
    found: list[tuple[int, DuplicateSet]] = []
    for copies in by_content.values():
        if len(copies) < 2:
            continue
        copies = sorted(copies, key=lambda f: order[f.path])
        paths = tuple(str(f.path) for f in copies)
        if len({f.class_name for f in copies}) > 1:
            duplicate_set = DuplicateSet("", paths)
        else:
            kept = str(min(copies, key=lambda f: (not f.named_group, order[f.path])).path)
            duplicate_set = DuplicateSet(kept, tuple(path for path in paths if path != kept))
        found.append((order[copies[0].path], duplicate_set))
    return [duplicate_set for _, duplicate_set in sorted(found, key=lambda item: item[0])]


def duplicate_reasons(files: Sequence[VideoFile], duplicates: Sequence[DuplicateSet]) -> dict[str, str]:
    """The rejected path of each duplicate set -> the reason for rejected.csv."""
    class_of = {str(f.path): f.class_name for f in files}
    reasons: dict[str, str] = {}
    for found in duplicates:
        if found.kept:
            for path in found.rejected:
                reasons[path] = (
                    f"{DUPLICATE}: byte-identical to {found.kept} (kept); an exact copy would count twice "
                    f"or leak between train and test"
                )
            continue
        for path in found.rejected:
            others = [f"{other} ({class_of[other]})" for other in found.rejected if other != path]
            reasons[path] = (
                f"{CONFLICTING_DUPLICATE}: byte-identical to {', '.join(others)} in another class; one video "
                f"cannot have two labels, keep it only in the folder of its class"
            )
    return reasons
