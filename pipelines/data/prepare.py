"""The ``prepare`` stage: index a UCF101-layout folder, check every video, split by group.

Writes ``RUN_DIR/videos.csv`` (usable videos with their split), ``RUN_DIR/rejected.csv`` (unusable
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
from pipelines.data.keyframes import save_keyframe_indexes
from pipelines.data.preflight import preflight
from pipelines.data.records import SPLITS, VideoRecord, read_videos_csv, write_videos_csv
from pipelines.data.splits import (
    OfficialSplit,
    SplitSpec,
    carve_val,
    check_enough_groups,
    check_fraction,
    check_fractions,
    group_split,
    list_file_names,
    load_official_split,
    parse_split_spec,
)

STAGE = "prepare"
# Bump when the pre-flight check or the split logic changes, so old runs are redone.
# 2: UCF101 group numbers are split units across classes. 3: too short and rotated videos,
# byte-identical copies and misplaced files are rejected (a clean dataset gets the same videos.csv,
# so features and results made from it stay valid). 4: prepare also writes keyframes.npz (the same
# videos.csv again; without the file the loaders index each video on first use, slower).
PREPARE_VERSION = 4


class NoUsableVideoError(DatasetError):
    """Every video of a class was rejected by the pre-flight check."""


@dataclass(frozen=True)
class Rejection:
    """One row of rejected.csv written by this stage; ``class_name`` is empty outside a class."""

    path: str
    reason: str
    class_name: str = ""


@dataclass
class PrepareSummary:
    """What ``prepare`` produced (or found up to date)."""

    run_dir: Path
    videos_csv: Path
    rejected_csv: Path
    run_json: Path
    class_names: list[str]
    counts: dict[str, dict[str, int]]  # split -> class -> videos
    group_counts: dict[str, int]  # split -> groups
    n_rejected: int
    n_unlisted: int = 0  # official split: videos in neither list
    up_to_date: bool = False
    split: str = "group"
    duplicates: list[DuplicateSet] = field(default_factory=list)  # byte-identical sets (rejected copies)

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

    def table(self) -> str:
        """Videos per class and split, one line per class."""
        width = max([len("class"), *map(len, self.class_names)])
        lines = [f"{'class':<{width}} " + " ".join(f"{split:>6}" for split in SPLITS)]
        for name in self.class_names:
            lines.append(f"{name:<{width}} " + " ".join(f"{self.counts.get(s, {}).get(name, 0):>6}" for s in SPLITS))
        return "\n".join(lines)

    def __str__(self) -> str:
        sizes = ", ".join(
            f"{split} {n} ({self.group_counts.get(split, 0)} groups)" for split, n in self.split_sizes().items()
        )
        text = f"{self.n_videos} videos in {len(self.class_names)} classes ({sizes}), {self.n_rejected} rejected"
        if self.duplicates:
            text += f" ({sum(len(d.rejected) for d in self.duplicates)} byte-identical duplicate(s))"
        if self.n_unlisted:
            text += f", {self.n_unlisted} in neither official list (left out)"
        return ("up to date: " if self.up_to_date else "") + text


def _summarize(paths: RunPaths, records: list[VideoRecord], class_names: list[str], n_rejected: int,
               n_unlisted: int, split: str, up_to_date: bool,
               duplicates: list[DuplicateSet]) -> PrepareSummary:
    counts: dict[str, dict[str, int]] = {s: dict.fromkeys(class_names, 0) for s in SPLITS}
    groups: dict[str, set[str]] = {s: set() for s in SPLITS}
    for record in records:
        counts[record.split][record.class_name] += 1
        groups[record.split].add(record.group)
    return PrepareSummary(
        run_dir=paths.root, videos_csv=paths.videos_csv, rejected_csv=paths.rejected_csv, run_json=paths.run_json,
        class_names=class_names, counts=counts, group_counts={s: len(g) for s, g in groups.items()},
        n_rejected=n_rejected, n_unlisted=n_unlisted, up_to_date=up_to_date, split=split, duplicates=duplicates,
    )


def _official_assignment(files: list[VideoFile], official: OfficialSplit, classes: list[str]) -> list[str | None]:
    missing = [name for name in classes if name not in official.class_order]
    if missing:
        raise DatasetError(
            f"class(es) {', '.join(missing)} are not in {official.folder / 'classInd.txt'}; "
            f"pick classes from it with --classes, or use --split group"
        )
    return [official.split_of(f.class_name, f.path.name) for f in files]


def _check_official_coverage(classes: list[str], splits: Sequence[str | None], files: list[VideoFile],
                             official: OfficialSplit) -> None:
    present = Counter((f.class_name, s) for f, s in zip(files, splits, strict=True) if s)
    lacking = [f"{name} ({split})" for name in classes for split in ("train", "test") if not present[(name, split)]]
    if lacking:
        train, test, _ = list_file_names(official.number)
        raise DatasetError(
            f"official split {official.number}: no listed video for {', '.join(lacking)}; the lists in "
            f"{official.folder} ({train}, {test}) name files that are not under DATA_ROOT; check the file names, "
            f"or use --split group"
        )


def _input_fingerprint(data_root: Path, files: list[VideoFile], config: dict[str, Any],
                       official: OfficialSplit | None, misplaced: list[SkippedFile]) -> str:
    lists = [] if official is None else [file_signature(official.folder / n) for n in list_file_names(official.number)]
    signatures = [file_signature(f.path) for f in files]
    skipped = [(str(item.path), item.reason) for item in misplaced]
    return fingerprint(PREPARE_VERSION, str(data_root), config, signatures, lists, skipped)


def _is_up_to_date(paths: RunPaths, input_fingerprint: str) -> bool:
    if not (paths.run_json.exists() and paths.videos_csv.exists()):
        return False
    try:
        previous = read_json(paths.run_json)
    except (OSError, ValueError):
        return False
    return isinstance(previous, dict) and previous.get("input_fingerprint") == input_fingerprint


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


def _check_every_class_usable(class_names: list[str], usable: list[VideoFile], rejected: list[Rejection],
                              data_root: Path, paths: RunPaths) -> None:
    empty = [name for name in class_names if not any(f.class_name == name for f in usable)]
    if not empty:
        return
    failed = [f"{Path(r.path).name}: {r.reason}" for r in rejected if r.class_name in empty]
    reasons = "; ".join(failed[:5]) + (f"; and {len(failed) - 5} more" if len(failed) > 5 else "")
    raise NoUsableVideoError(
        f"no usable video in class(es) {', '.join(empty)} under {data_root} (reasons: {reasons}); "
        f"fix or replace the files, or leave the class out with --classes (details in {paths.rejected_csv})"
    )


def _split_usable(files: list[VideoFile], assigned: list[str | None], class_names: list[str],
                  official: OfficialSplit | None, *, val: float, test: float, seed: int, note: str) -> list[str]:
    """The split of each usable file: by group, or the official lists with val carved out of train."""
    classes, groups = [f.class_name for f in files], [f.group for f in files]
    if official is None:
        try:
            return group_split(classes, groups, val=val, test=test, seed=seed)
        except ValueError as exc:
            raise type(exc)(f"{exc} ({note})") from None
    _check_official_coverage(class_names, assigned, files, official)
    return carve_val(classes, groups, [s or "" for s in assigned], val=val, seed=seed)


def _up_to_date_summary(paths: RunPaths, class_names: list[str], split: str) -> PrepareSummary:
    previous = read_json(paths.run_json)
    duplicates = [DuplicateSet(str(d["kept"]), tuple(d["rejected"])) for d in previous.get("duplicates", [])]
    return _summarize(paths, read_videos_csv(paths.videos_csv), list(previous.get("class_names", class_names)),
                      int(previous.get("n_rejected", 0)), int(previous.get("n_unlisted", 0)), split,
                      up_to_date=True, duplicates=duplicates)


def prepare_run(
    data_root: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    *,
    classes: Sequence[str] | None = None,
    split: str = "group",
    val: float = 0.15,
    test: float = 0.2,
    seed: int = 0,
    progress: bool = True,
    workers: int | None = None,
) -> PrepareSummary:
    """Index ``data_root``, pre-flight check every video, split by group and write the run files.

    ``split``: "group" (stratified train/val/test by group; ``val``/``test`` are fractions of each
    class's groups) or "official:N" (UCF101 lists; val is ``val`` of each class's train groups,
    ``test`` is ignored). Labels follow the sorted class names, or classInd.txt for official splits.
    Raises :class:`ValueError` / :class:`FileNotFoundError` subclasses naming the problem and the fix;
    the input errors are raised before any video is decoded.
    """
    spec: SplitSpec = parse_split_spec(split)
    if spec.kind == "group":
        check_fractions(val, test)
    else:
        check_fraction("val", val)
    data_root = Path(data_root).resolve()
    paths = RunPaths(run_dir)

    files = scan_dataset(data_root, classes)
    misplaced = misplaced_videos(data_root, classes)
    class_names = sorted({f.class_name for f in files})
    official: OfficialSplit | None = None
    assigned: list[str | None] = []
    if spec.number is not None:
        official = load_official_split(data_root, spec.number)
        class_names = [name for name in official.class_order if name in set(class_names)] + [
            name for name in class_names if name not in official.class_order
        ]
        assigned = _official_assignment(files, official, class_names)
        _check_official_coverage(class_names, assigned, files, official)
        listed = [i for i, s in enumerate(assigned) if s is not None]
        carve_val([files[i].class_name for i in listed], [files[i].group for i in listed],
                  [assigned[i] or "" for i in listed], val=val, seed=seed)  # too few train groups: fail now
    else:
        check_enough_groups([f.class_name for f in files], [f.group for f in files], val=val, test=test)

    config = {
        "data_root": str(data_root),
        "classes": list(classes) if classes else None,
        "split": str(spec),
        "val": val,
        "test": test if official is None else None,
        "seed": seed,
    }
    input_fingerprint = _input_fingerprint(data_root, files, config, official, misplaced)
    if _is_up_to_date(paths, input_fingerprint):
        return _up_to_date_summary(paths, class_names, str(spec))

    assigned = assigned or [None] * len(files)
    in_use = [(f, s) for f, s in zip(files, assigned, strict=True) if official is None or s is not None]
    n_unlisted = len(files) - len(in_use)  # official split: in neither list
    duplicates = find_duplicates([f for f, _ in in_use])
    dropped = duplicate_reasons(files, duplicates)
    candidates = [(f, s) for f, s in in_use if str(f.path) not in dropped]

    probes = preflight([f.path for f, _ in candidates], workers=workers, progress=progress)
    class_of = {str(f.path): f.class_name for f in files}
    rejected = _misplaced_rejections(data_root, misplaced) + [
        Rejection(path, reason, class_of[path]) for path, reason in dropped.items()
    ] + [Rejection(p.path, p.reason, class_of[str(p.path)]) for p in probes if not p.ok]
    usable = [(f, probe, s) for (f, s), probe in zip(candidates, probes, strict=True) if probe.ok]
    _write_rejected(paths, rejected)
    _check_every_class_usable(class_names, [f for f, _, _ in usable], rejected, data_root, paths)

    splits = _split_usable([f for f, _, _ in usable], [s for _, _, s in usable], class_names, official,
                           val=val, test=test, seed=seed, note=f"after {len(rejected)} file(s) were rejected, "
                           f"see {paths.rejected_csv}")

    label_of = {name: index for index, name in enumerate(class_names)}
    records = [
        VideoRecord(
            video_id=f.video_id, path=str(f.path), class_name=f.class_name, label=label_of[f.class_name],
            group=f.group, split=split_name, codec=probe.codec, frames=probe.frames, fps=probe.fps,
            width=probe.width, height=probe.height,
        )
        for (f, probe, _), split_name in zip(usable, splits, strict=True)
    ]
    write_videos_csv(paths.videos_csv, records)
    save_keyframe_indexes(
        paths.keyframes_npz, {probe.path: probe.keyframes for _, probe, _ in usable if probe.keyframes is not None}
    )
    summary = _summarize(paths, records, class_names, len(rejected), n_unlisted, str(spec), up_to_date=False,
                         duplicates=duplicates)
    _write_run_json(paths, summary, config, official, input_fingerprint, seed)
    return summary


def _write_run_json(paths: RunPaths, summary: PrepareSummary, config: dict[str, Any],
                    official: OfficialSplit | None, input_fingerprint: str, seed: int) -> None:
    atomic_write_json(
        paths.run_json,
        {
            "stage": STAGE,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "config": config,
            "seed": seed,
            "class_names": summary.class_names,
            "official_lists": None if official is None else str(official.folder),
            "counts": summary.counts,
            "group_counts": summary.group_counts,
            "n_videos": summary.n_videos,
            "n_rejected": summary.n_rejected,
            "n_unlisted": summary.n_unlisted,
            "duplicates": [asdict(found) for found in summary.duplicates],
            "versions": library_versions(),
            "input_fingerprint": input_fingerprint,
            "prepare_version": PREPARE_VERSION,
        },
    )


def summary_dict(summary: PrepareSummary) -> dict[str, Any]:
    """JSON-friendly form of a :class:`PrepareSummary`."""
    return {key: str(value) if isinstance(value, Path) else value for key, value in asdict(summary).items()}

