"""The ``prepare`` stage: index a UCF101-layout folder, check every video, split by group.

Writes ``RUN_DIR/videos.csv`` (usable videos with their split and, with ``folds`` K > 1, their
outer fold and their split in every fold: :mod:`pipelines.data.folds`), ``RUN_DIR/rejected.csv`` (unusable
ones with the reason, stage "prepare") and, last, ``RUN_DIR/run.json`` (config, library versions,
seed, input fingerprint, duplicate sets). A rerun whose inputs have the same fingerprint does nothing.

Rejected here, each with its reason: files the pre-flight check refuses (damaged, too short,
rotated; :mod:`pipelines.data.preflight`), byte-identical copies (:mod:`pipelines.data.duplicates`:
the first copy is kept) and video files the scan does not read (dangling links, nested folders;
:func:`pipelines.data.dataset.misplaced_videos`).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from core.backend import library_versions
from core.runfiles import (
    RunPaths,
    atomic_write_json,
    file_signature,
    fingerprint,
    read_json,
    read_rejected,
    write_rejected,
)
from pipelines.data.dataset import DatasetError, SkippedFile, VideoFile, misplaced_videos, scan_dataset
from pipelines.data.duplicates import DuplicateSet, duplicate_reasons, find_duplicates
from pipelines.data.folds import check_enough_groups_for_folds, group_kfold, outer_fold_splits
from pipelines.data.keyframes import save_keyframe_indexes
from pipelines.data.preflight import ProbeResult, preflight
from pipelines.data.records import SPLITS, VideoRecord, fold_count, read_videos_csv, write_videos_csv
from pipelines.data.splits import (
    OFFICIAL_SPLIT_NUMBERS,
    OfficialSplit,
    SplitSpec,
    carve_val,
    check_enough_groups,
    check_fraction,
    check_fractions,
    group_split,
    list_file_names,
    load_official_split,
    official_key,
    parse_split_spec,
)

STAGE = "prepare"
# Bump when the pre-flight check or the split logic changes, so old runs are redone.
# 2: UCF101 group numbers are split units across classes. 3: too short and rotated videos,
# byte-identical copies and misplaced files are rejected (a clean dataset gets the same videos.csv,
# so features and results made from it stay valid). 4: prepare also writes keyframes.npz (the same
# videos.csv again; without the file the loaders index each video on first use, slower).
# 5: frames are what the decoder shows (edit lists, streams recorded mid-GOP), a copy's suffix keeps
# the UCF101 group, of byte-identical files the UCF101-named one is kept (runs made before could hold
# a group of one that leaks its actor; a clean dataset gets the same videos.csv again); official
# splits name their unlisted files in rejected.csv and their list entries with no file in run.json.
# 6: a header frame rate that the timestamps contradict (variable-rate video, a lying header) is
# replaced by the timestamps' average: clips now step by time (a clean CFR dataset keeps its videos.csv).
# 7: no keyframe index where the timestamps do not identify frames (an AVI with B-frames); videos with
# non-square pixels named in run.json; videos.csv names the codec (av1), not the decoder (libdav1d).
# 8: keyframes.npz keeps each keyframe's packet size (MPEG program streams seek; a clean dataset gets
# the same videos.csv), and the scan reads .mpg, .vob, .ts, .mts, .m2ts, .wmv, .asf, .flv, .3gp, .ogv.
PREPARE_VERSION = 8


class NoUsableVideoError(DatasetError):
    """Every video of a class was rejected by the pre-flight check."""


@dataclass(frozen=True)
class Rejection:
    """One row of rejected.csv written by this stage; ``class_name`` is empty outside a class."""

    path: str
    reason: str
    class_name: str = ""


# Writes a square-pixel copy of IN: the width scaled by the pixel aspect, both sides rounded down to
# even numbers (H.264 in 4:2:0 needs them).
SQUARE_PIXELS_COMMAND = "ffmpeg -i IN -vf 'scale=trunc(iw*sar/2)*2:trunc(ih/2)*2,setsar=1' -c:v libx264 -crf 18 OUT.mp4"


def listed_missing_text(missing: Sequence[str], limit: int = 5) -> str:
    """What ``prepare`` and the report say of official-list entries of the run's classes with no file
    in the data folder (``run.json``'s ``listed_missing``): how many, the first ``limit``, the effect."""
    shown = ", ".join(missing[:limit]) + (", ..." if len(missing) > limit else "")
    return (
        f"the official lists name {len(missing)} video(s) of these classes that are not in the data folder "
        f"({shown}): train and test are smaller than the official ones"
    )


@dataclass
class PrepareSummary:
    """What ``prepare`` produced (or found up to date)."""

    run_dir: Path
    videos_csv: Path
    rejected_csv: Path
    run_json: Path
    class_names: list[str]
    counts: dict[str, dict[str, int]]  # split -> class -> videos (with outer folds: fold 0's splits)
    group_counts: dict[str, int]  # split -> groups
    n_rejected: int
    n_unlisted: int = 0  # official split: videos in no list (named in rejected.csv)
    listed_missing: list[str] = field(default_factory=list)  # official split: list entries with no file
    up_to_date: bool = False
    split: str = "group"
    duplicates: list[DuplicateSet] = field(default_factory=list)  # byte-identical sets (rejected copies)
    folds: int = 1  # K outer folds (1: one fixed train/val/test split)
    fold_counts: dict[int, dict[str, int]] = field(default_factory=dict)  # fold -> class -> test videos
    fold_group_counts: dict[int, int] = field(default_factory=dict)  # fold -> groups in its test set
    # Re-prepared into a run that had a split: (groups now in another split or fold, groups in both splits)
    split_changed: tuple[int, int] | None = None
    non_square: dict[str, float] = field(default_factory=dict)  # path -> pixel aspect, of videos kept

    @property
    def n_videos(self) -> int:
        return sum(sum(per_class.values()) for per_class in self.counts.values())

    def split_sizes(self) -> dict[str, int]:
        return {split: sum(self.counts.get(split, {}).values()) for split in SPLITS}

    def duplicate_lines(self, limit: int = 10) -> list[str]:
        """One line per byte-identical set (``Class/file`` names), at most ``limit`` and a count of the rest."""

        def short(path: str) -> str:
            return "/".join(Path(path).parts[-2:])

        lines = [
            f"duplicate: kept {short(d.kept)}, rejected {', '.join(map(short, d.rejected))} (same bytes)"
            if d.kept
            else f"duplicate with conflicting labels: rejected {', '.join(map(short, d.rejected))} (same bytes)"
            for d in self.duplicates[:limit]
        ]
        if len(self.duplicates) > limit:
            lines.append(f"... and {len(self.duplicates) - limit} more duplicate sets (see {self.rejected_csv})")
        return lines

    def missing_lines(self) -> list[str]:
        """Official split: the list entries of the chosen classes that name no file under DATA_ROOT."""
        if not self.listed_missing:
            return []
        return [
            f"WARNING {listed_missing_text(self.listed_missing)} (all in {self.run_json.name} 'listed_missing'): "
            f"scores are not comparable with published ones; restore the files, or use --split group"
        ]

    def non_square_lines(self, limit: int = 5) -> list[str]:
        """Videos whose pixels players show non-square: the loaders use the stored frames as they are."""
        if not self.non_square:
            return []
        shown = list(self.non_square.items())[:limit]
        names = ", ".join(f"{'/'.join(Path(path).parts[-2:])} ({aspect:.3g}:1)" for path, aspect in shown)
        more = f" and {len(self.non_square) - limit} more" if len(self.non_square) > limit else ""
        furthest = max(self.non_square.values(), key=lambda aspect: abs(aspect - 1))
        return [
            f"WARNING {len(self.non_square)} video(s) have non-square pixels: {names}{more} (all in "
            f"{self.run_json.name} 'non_square_pixels'). Their frames are used as stored, where players scale "
            f"the width by up to {furthest:.3g}x, so shapes and motion directions differ from square-pixel videos; "
            "if the dataset mixes both, write square-pixel copies with "
            f"`{SQUARE_PIXELS_COMMAND}`"
        ]

    def split_changed_lines(self) -> list[str]:
        """A re-prepare that moved groups of the run's previous split elsewhere."""
        if self.split_changed is None or not self.split_changed[0]:
            return []
        moved, common = self.split_changed
        return [
            f"WARNING the split changed: {moved} of the {common} groups this run had before are in another split "
            "now (other split options, or videos added or removed: the seeded split is drawn again); what was made "
            "from the old split is redone, and its scores cannot be compared with the new ones"
        ]

    def table(self) -> str:
        """Videos per class and split (with outer folds: test videos per class and fold), one line per class."""
        if self.folds > 1:
            columns = [f"fold{k}" for k in range(self.folds)]
            cells = {name: [self.fold_counts[k].get(name, 0) for k in range(self.folds)] for name in self.class_names}
        else:
            columns = list(SPLITS)
            cells = {name: [self.counts.get(s, {}).get(name, 0) for s in SPLITS] for name in self.class_names}
        width = max([len("class"), *map(len, self.class_names)])
        lines = [f"{'class':<{width}} " + " ".join(f"{column:>6}" for column in columns)]
        lines += [f"{name:<{width}} " + " ".join(f"{n:>6}" for n in cells[name]) for name in self.class_names]
        return "\n".join(lines)

    def __str__(self) -> str:
        if self.folds > 1:
            tests = "/".join(str(sum(self.fold_counts[k].values())) for k in range(self.folds))
            groups = "/".join(str(self.fold_group_counts[k]) for k in range(self.folds))
            sizes = f"{self.folds} outer folds: test videos {tests}, groups {groups}; val carved from the rest"
        else:
            sizes = ", ".join(
                f"{split} {n} ({self.group_counts.get(split, 0)} groups)" for split, n in self.split_sizes().items()
            )
        text = f"{self.n_videos} videos in {len(self.class_names)} classes ({sizes}), {self.n_rejected} rejected"
        if self.duplicates:
            text += f" ({sum(len(d.rejected) for d in self.duplicates)} byte-identical duplicate(s))"
        if self.n_unlisted:
            text += f", {self.n_unlisted} in neither official list (left out, named in {self.rejected_csv.name})"
        if self.listed_missing:
            text += f", {len(self.listed_missing)} listed video(s) of these classes not found"
        if self.split_changed is not None and self.split_changed[0]:
            text += f", split changed for {self.split_changed[0]} of {self.split_changed[1]} earlier groups"
        return ("up to date: " if self.up_to_date else "") + text


def _summarize(
    paths: RunPaths,
    records: list[VideoRecord],
    class_names: list[str],
    n_rejected: int,
    n_unlisted: int,
    split: str,
    up_to_date: bool,
    duplicates: list[DuplicateSet],
    listed_missing: list[str],
    non_square: dict[str, float],
) -> PrepareSummary:
    counts: dict[str, dict[str, int]] = {s: dict.fromkeys(class_names, 0) for s in SPLITS}
    groups: dict[str, set[str]] = {s: set() for s in SPLITS}
    folds = fold_count(records)
    fold_counts = {k: dict.fromkeys(class_names, 0) for k in range(folds if folds > 1 else 0)}
    fold_groups: dict[int, set[str]] = {k: set() for k in fold_counts}
    for record in records:
        counts[record.split][record.class_name] += 1
        groups[record.split].add(record.group)
        if record.fold is not None:
            fold_counts[record.fold][record.class_name] += 1
            fold_groups[record.fold].add(record.group)
    return PrepareSummary(
        run_dir=paths.root,
        videos_csv=paths.videos_csv,
        rejected_csv=paths.rejected_csv,
        run_json=paths.run_json,
        class_names=class_names,
        counts=counts,
        group_counts={s: len(g) for s, g in groups.items()},
        n_rejected=n_rejected,
        n_unlisted=n_unlisted,
        up_to_date=up_to_date,
        split=split,
        duplicates=duplicates,
        listed_missing=listed_missing,
        non_square=non_square,
        folds=folds,
        fold_counts=fold_counts,
        fold_group_counts={k: len(g) for k, g in fold_groups.items()},
    )


@dataclass
class _Lists:
    """UCF101's official lists and their verdict on each scanned file: its split ("train" | "test")
    for ``official:N``, its outer fold (the test list that names it) for ``official:all``; None
    when no list names it."""

    splits: list[OfficialSplit]
    verdicts: list[str | int | None]

    def signatures(self) -> list[dict[str, Any]]:
        return [file_signature(o.folder / name) for o in self.splits for name in list_file_names(o.number)]

    def unlisted_reason(self) -> str:
        names = (
            [list_file_names(o.number)[1] for o in self.splits]
            if len(self.splits) > 1
            else list(list_file_names(self.splits[0].number)[:2])
        )
        return (
            f"in none of {', '.join(names)} in {self.splits[0].folder}: left out of the official split; "
            f"add it to a list, or use --split group"
        )

    def missing(self, files: list[VideoFile], classes: list[str]) -> list[str]:
        """List entries of ``classes`` that name none of ``files`` (as official keys, sorted)."""
        wanted = {name.lower() for name in classes}
        found = {official_key(f"{f.class_name}/{f.path.name}") for f in files}
        listed = set().union(*(o.train | o.test for o in self.splits))
        return sorted(key for key in listed if key.split("/", 1)[0] in wanted and key not in found)


def _check_classes_listed(classes: list[str], official: OfficialSplit) -> None:
    missing = [name for name in classes if name not in official.class_order]
    if missing:
        raise DatasetError(
            f"class(es) {', '.join(missing)} are not in {official.folder / 'classInd.txt'}; "
            f"pick classes from it with --classes, or use --split group"
        )


def _fold_of(splits: list[OfficialSplit], file: VideoFile) -> int | None:
    """The official test list that names ``file`` (0 for testlist01), None if none does."""
    found = [k for k, official in enumerate(splits) if official.split_of(file.class_name, file.path.name) == "test"]
    if len(found) > 1:
        names = ", ".join(list_file_names(splits[k].number)[1] for k in found)
        raise DatasetError(
            f"{file.path} is in several official test lists ({names} in {splits[0].folder}); the lists of "
            f"--split official:all must not overlap: check them, or use --split group --folds 3"
        )
    return found[0] if found else None


def _read_lists(data_root: Path, files: list[VideoFile], spec: SplitSpec, classes: list[str]) -> _Lists:
    numbers = OFFICIAL_SPLIT_NUMBERS if spec.all_lists else (spec.number,)
    splits = [load_official_split(data_root, number) for number in numbers if number is not None]
    _check_classes_listed(classes, splits[0])
    if spec.all_lists:
        return _Lists(splits, [_fold_of(splits, f) for f in files])
    return _Lists(splits, [splits[0].split_of(f.class_name, f.path.name) for f in files])


def _check_official_coverage(
    classes: list[str], verdicts: Sequence[str | int | None], files: list[VideoFile], lists: _Lists
) -> None:
    """Every class has listed videos in the train and test list (official:N) or in every test list (official:all)."""
    present = Counter((f.class_name, v) for f, v in zip(files, verdicts, strict=True) if v is not None)
    if len(lists.splits) > 1:  # official:all: verdicts are folds, one per test list
        parts = {k: list_file_names(o.number)[1] for k, o in enumerate(lists.splits)}
        which = "all"
    else:
        train, test, _ = list_file_names(lists.splits[0].number)
        parts, which = {"train": train, "test": test}, str(lists.splits[0].number)
    lacking = [f"{name} ({part})" for name in classes for key, part in parts.items() if not present[(name, key)]]
    if lacking:
        raise DatasetError(
            f"official split {which}: no listed video for {', '.join(lacking)}; the lists in "
            f"{lists.splits[0].folder} ({', '.join(parts.values())}) name files that are not under DATA_ROOT; "
            f"check the file names, or use --split group"
        )


def _input_fingerprint(
    data_root: Path, files: list[VideoFile], config: dict[str, Any], lists: _Lists | None, misplaced: list[SkippedFile]
) -> str:
    signatures = [file_signature(f.path) for f in files]
    skipped = [(str(item.path), item.reason) for item in misplaced]
    return fingerprint(
        PREPARE_VERSION, str(data_root), config, signatures, [] if lists is None else lists.signatures(), skipped
    )


def _is_up_to_date(paths: RunPaths, input_fingerprint: str) -> bool:
    if not (paths.run_json.exists() and paths.videos_csv.exists()):
        return False
    try:
        previous = read_json(paths.run_json)
    except (OSError, ValueError):
        return False
    return isinstance(previous, dict) and previous.get("input_fingerprint") == input_fingerprint


def changed_groups(before: Sequence[VideoRecord], after: Sequence[VideoRecord]) -> tuple[int, int]:
    """How many of the groups in both ``before`` and ``after`` changed place (split; with outer folds,
    test fold or the splits within the folds), and how many groups both have."""
    old = {record.group: (record.split, record.fold, record.fold_splits) for record in before}
    new = {record.group: (record.split, record.fold, record.fold_splits) for record in after}
    common = old.keys() & new.keys()
    return sum(old[group] != new[group] for group in common), len(common)


def _previous_records(paths: RunPaths) -> list[VideoRecord]:
    """The run's current ``videos.csv``, if it has a readable one (else nothing to compare with)."""
    try:
        return read_videos_csv(paths.videos_csv)
    except (OSError, ValueError):
        return []


def _write_rejected(paths: RunPaths, rejected: list[Rejection]) -> None:
    """Replace this stage's rows in rejected.csv, keeping rows that later stages added."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    rows = [row for row in read_rejected(paths.root) if row.get("stage") != STAGE]
    rows += [{"path": r.path, "reason": r.reason, "stage": STAGE, "time": now} for r in rejected]
    write_rejected(paths.rejected_csv, rows)


def _misplaced_rejections(data_root: Path, misplaced: list[SkippedFile]) -> list[Rejection]:
    rows = []
    for item in misplaced:
        parts = item.path.relative_to(data_root).parts
        rows.append(Rejection(str(item.path), item.reason, parts[0] if len(parts) > 1 else ""))
    return rows


def _check_every_class_usable(
    class_names: list[str], usable: list[VideoFile], rejected: list[Rejection], data_root: Path, paths: RunPaths
) -> None:
    empty = [name for name in class_names if not any(f.class_name == name for f in usable)]
    if not empty:
        return
    failed = [f"{Path(r.path).name}: {r.reason}" for r in rejected if r.class_name in empty]
    reasons = "; ".join(failed[:5]) + (f"; and {len(failed) - 5} more" if len(failed) > 5 else "")
    raise NoUsableVideoError(
        f"no usable video in class(es) {', '.join(empty)} under {data_root} (reasons: {reasons}); "
        f"fix or replace the files, or leave the class out with --classes (details in {paths.rejected_csv})"
    )


def _resolve_folds(spec: SplitSpec, folds: int | None) -> int:
    """K: 3 for official:all (its three test lists), else ``folds`` (default 1, one fixed split)."""
    if spec.all_lists:
        if folds not in (None, len(OFFICIAL_SPLIT_NUMBERS)):
            raise ValueError(
                f"--split official:all takes UCF101's {len(OFFICIAL_SPLIT_NUMBERS)} test lists as the outer folds; "
                f"drop --folds {folds}, or use --split group --folds {folds}"
            )
        return len(OFFICIAL_SPLIT_NUMBERS)
    folds = 1 if folds is None else folds
    if folds < 1:
        raise ValueError(f"--folds must be at least 1 (1: one fixed train/val/test split), got {folds}")
    if folds > 1 and spec.kind == "official":
        raise ValueError(
            f"--split {spec} is one fixed split; for outer folds use --split official:all (the three official "
            f"test lists) or --split group --folds {folds}"
        )
    return folds


@dataclass(frozen=True)
class _Assignment:
    """Each item's split and, with outer folds, its fold and its split in every fold."""

    splits: list[str]
    folds: list[int] | None = None
    fold_splits: list[tuple[str, ...]] | None = None


def _assign(
    classes: list[str],
    groups: list[str],
    verdicts: Sequence[str | int | None] | None,
    *,
    spec: SplitSpec,
    folds: int,
    val: float,
    test: float,
    seed: int,
) -> _Assignment:
    """Splits (and outer folds) of the items; with official lists every item has a verdict."""
    listed = list(verdicts or [])
    if spec.all_lists or folds > 1:
        if spec.all_lists:
            fold_of = [int(v) for v in listed if v is not None]
        else:
            fold_of = group_kfold(classes, groups, folds=folds, seed=seed)
        per_fold = outer_fold_splits(classes, groups, fold_of, val=val, seed=seed)
        return _Assignment([splits[0] for splits in per_fold], fold_of, per_fold)
    if spec.kind == "official":
        return _Assignment(carve_val(classes, groups, [str(v) for v in listed], val=val, seed=seed))
    return _Assignment(group_split(classes, groups, val=val, test=test, seed=seed))


def _up_to_date_summary(paths: RunPaths, class_names: list[str], split: str) -> PrepareSummary:
    previous = read_json(paths.run_json)
    duplicates = [DuplicateSet(str(d["kept"]), tuple(d["rejected"])) for d in previous.get("duplicates", [])]
    return _summarize(
        paths,
        read_videos_csv(paths.videos_csv),
        list(previous.get("class_names", class_names)),
        int(previous.get("n_rejected", 0)),
        int(previous.get("n_unlisted", 0)),
        split,
        up_to_date=True,
        duplicates=duplicates,
        listed_missing=list(previous.get("listed_missing", [])),
        non_square={str(p): float(a) for p, a in previous.get("non_square_pixels", {}).items()},
    )


def prepare_run(
    data_root: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    *,
    classes: Sequence[str] | None = None,
    split: str = "group",
    val: float = 0.15,
    test: float = 0.2,
    seed: int = 0,
    folds: int | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> PrepareSummary:
    """Index ``data_root``, pre-flight check every video, split by group and write the run files.

    ``split``: "group" (stratified train/val/test by group; ``val``/``test`` are fractions of each
    class's groups), "official:N" (UCF101 lists; val is ``val`` of each class's train groups,
    ``test`` is ignored) or "official:all" (the three test lists as outer folds).
    ``folds``: K > 1 outer folds of whole groups (:mod:`pipelines.data.folds`; ``test`` is ignored,
    each fold is the test set once); default 1, or 3 for official:all.
    Labels follow the sorted class names, or classInd.txt for official splits.
    Raises :class:`ValueError` / :class:`FileNotFoundError` subclasses naming the problem and the fix;
    the input errors are raised before any video is decoded.
    """
    spec: SplitSpec = parse_split_spec(split)
    n_folds = _resolve_folds(spec, folds)
    if spec.kind == "group" and n_folds == 1:
        check_fractions(val, test)
    else:
        check_fraction("val", val)
    data_root = Path(data_root).resolve()
    paths = RunPaths(run_dir)

    scanned = scan_dataset(data_root, classes)
    misplaced = misplaced_videos(data_root, classes)
    class_names = sorted({f.class_name for f in scanned})
    files, verdicts, lists = scanned, None, None
    if spec.kind == "official":
        lists = _read_lists(data_root, scanned, spec, class_names)
        order = lists.splits[0].class_order
        class_names = [name for name in order if name in set(class_names)] + [n for n in class_names if n not in order]
        _check_official_coverage(class_names, lists.verdicts, scanned, lists)
        listed = [i for i, v in enumerate(lists.verdicts) if v is not None]
        files, verdicts = [scanned[i] for i in listed], [lists.verdicts[i] for i in listed]
    assign = partial(_assign, spec=spec, folds=n_folds, val=val, test=test, seed=seed)
    # Too few groups: fail now, before any video is decoded.
    if spec.kind == "group" and n_folds == 1:
        check_enough_groups([f.class_name for f in files], [f.group for f in files], val=val, test=test)
    elif spec.kind == "group":
        check_enough_groups_for_folds([f.class_name for f in files], [f.group for f in files], n_folds)
    else:
        assign([f.class_name for f in files], [f.group for f in files], verdicts)

    config = {
        "data_root": str(data_root),
        "classes": list(classes) if classes else None,
        "split": str(spec),
        "val": val,
        "test": test if spec.kind == "group" and n_folds == 1 else None,
        "seed": seed,
        # Only with outer folds, so that runs prepared before --folds existed stay up to date.
        **({"folds": n_folds} if n_folds > 1 else {}),
    }
    input_fingerprint = _input_fingerprint(data_root, scanned, config, lists, misplaced)
    if _is_up_to_date(paths, input_fingerprint):
        return _up_to_date_summary(paths, class_names, str(spec))

    unlisted = (
        []
        if lists is None
        else [
            Rejection(str(f.path), lists.unlisted_reason(), f.class_name)
            for f, verdict in zip(scanned, lists.verdicts, strict=True)
            if verdict is None
        ]
    )
    listed_missing = [] if lists is None else lists.missing(scanned, class_names)
    duplicates = find_duplicates(files)
    dropped = duplicate_reasons(scanned, duplicates)
    candidates = [
        (f, v) for f, v in zip(files, verdicts or [None] * len(files), strict=True) if str(f.path) not in dropped
    ]
    probes = preflight([f.path for f, _ in candidates], workers=workers, progress=progress)
    class_of = {str(f.path): f.class_name for f in scanned}
    rejected = (
        _misplaced_rejections(data_root, misplaced)
        + [Rejection(path, reason, class_of[path]) for path, reason in dropped.items()]
        + [Rejection(p.path, p.reason, class_of[str(p.path)]) for p in probes if not p.ok]
    )
    usable = [(f, probe, v) for (f, v), probe in zip(candidates, probes, strict=True) if probe.ok]
    _write_rejected(paths, rejected + unlisted)
    _check_every_class_usable(class_names, [f for f, _, _ in usable], rejected, data_root, paths)

    if lists is not None:
        _check_official_coverage(class_names, [v for _, _, v in usable], [f for f, _, _ in usable], lists)
    try:
        assignment = assign(
            [f.class_name for f, _, _ in usable],
            [f.group for f, _, _ in usable],
            None if lists is None else [v for _, _, v in usable],
        )
    except ValueError as exc:
        note = f"after {len(rejected)} file(s) were rejected, see {paths.rejected_csv}"
        raise type(exc)(f"{exc} ({note})") from None
    records = _records([(f, probe) for f, probe, _ in usable], assignment, class_names)
    previous = _previous_records(paths)
    write_videos_csv(paths.videos_csv, records)
    save_keyframe_indexes(
        paths.keyframes_npz, {probe.path: probe.keyframes for _, probe, _ in usable if probe.keyframes is not None}
    )
    summary = _summarize(
        paths,
        records,
        class_names,
        len(rejected),
        len(unlisted),
        str(spec),
        up_to_date=False,
        duplicates=duplicates,
        listed_missing=listed_missing,
        non_square={probe.path: probe.pixel_aspect for _, probe, _ in usable if abs(probe.pixel_aspect - 1) > 0.01},
    )
    summary.split_changed = changed_groups(previous, records) if previous else None
    _write_run_json(paths, summary, config, seed, lists, input_fingerprint)
    return summary


def _write_run_json(
    paths: RunPaths,
    summary: PrepareSummary,
    config: dict[str, Any],
    seed: int,
    lists: _Lists | None,
    input_fingerprint: str,
) -> None:
    """Last, so that a run.json says the files before it are complete."""
    atomic_write_json(
        paths.run_json,
        {
            "stage": STAGE,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "config": config,
            "seed": seed,
            "class_names": summary.class_names,
            "official_lists": None if lists is None else str(lists.splits[0].folder),
            "counts": summary.counts,
            "group_counts": summary.group_counts,
            "folds": summary.folds,
            "fold_counts": summary.fold_counts,
            "n_videos": summary.n_videos,
            "n_rejected": summary.n_rejected,
            "n_unlisted": summary.n_unlisted,
            "listed_missing": summary.listed_missing,
            "split_changed": None
            if summary.split_changed is None
            else dict(zip(("groups_moved", "groups_before"), summary.split_changed, strict=True)),
            "duplicates": [asdict(found) for found in summary.duplicates],
            "non_square_pixels": summary.non_square,
            "versions": library_versions(),
            "input_fingerprint": input_fingerprint,
            "prepare_version": PREPARE_VERSION,
        },
    )


def _records(
    usable: list[tuple[VideoFile, ProbeResult]], assignment: _Assignment, class_names: list[str]
) -> list[VideoRecord]:
    label_of = {name: index for index, name in enumerate(class_names)}
    return [
        VideoRecord(
            video_id=f.video_id,
            path=str(f.path),
            class_name=f.class_name,
            label=label_of[f.class_name],
            group=f.group,
            split=assignment.splits[i],
            codec=probe.codec,
            frames=probe.frames,
            fps=probe.fps,
            width=probe.width,
            height=probe.height,
            fold=None if assignment.folds is None else assignment.folds[i],
            fold_splits="" if assignment.fold_splits is None else " ".join(assignment.fold_splits[i]),
        )
        for i, (f, probe) in enumerate(usable)
    ]


def summary_dict(summary: PrepareSummary) -> dict[str, Any]:
    """JSON-friendly form of a :class:`PrepareSummary`."""
    return {key: str(value) if isinstance(value, Path) else value for key, value in asdict(summary).items()}
