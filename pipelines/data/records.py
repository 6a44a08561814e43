"""The dataset index: one :class:`VideoRecord` per usable video, stored as ``videos.csv``."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from core.runfiles import atomic_path, file_signature, fingerprint

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class VideoRecord:
    """One usable video: where it is, what it shows, which split it belongs to, how it decodes."""

    video_id: str  # relative path without extension, e.g. "PullUps/v_PullUps_g01_c01"
    path: str  # absolute path of the source file
    class_name: str
    label: int
    group: str  # UCF101 group number ("g01", shared by every class), or "Class/stem" (one group per file)
    split: str  # train | val | test
    codec: str  # PyAV codec name, e.g. "vp9", "mjpeg", "mpeg4", "h264"
    frames: int
    fps: float
    width: int
    height: int
    # With K > 1 outer folds (``prepare --folds K``): the fold whose test set holds the video, and
    # its split in every fold, space-separated ("test train val": test in fold 0, train in fold 1,
    # val in fold 2); ``split`` is then its split in fold 0. None and "" with one fixed split.
    fold: int | None = None
    fold_splits: str = ""

    def split_in(self, fold: int) -> str:
        """The video's split in outer fold ``fold`` (``split`` itself with one fixed split)."""
        if self.fold is None:
            if fold != 0:
                raise ValueError(f"{self.video_id}: no outer fold {fold} in an index with one fixed split")
            return self.split
        return self.fold_splits.split()[fold]


FOLD_COLUMNS = ("fold", "fold_splits")
_COLUMNS = tuple(field.name for field in fields(VideoRecord) if field.name not in FOLD_COLUMNS)
_CASTS = {field.name: field.type for field in fields(VideoRecord)}


def _parse(row: dict[str, str]) -> VideoRecord:
    values: dict[str, object] = {}
    for name in _COLUMNS:
        raw = row[name]
        kind = _CASTS[name]
        values[name] = int(raw) if kind == "int" else float(raw) if kind == "float" else raw
    if row.get("fold"):  # files written before outer folds existed have no fold columns
        values["fold"] = int(row["fold"])
        values["fold_splits"] = row.get("fold_splits") or ""
    return VideoRecord(**values)  # type: ignore[arg-type]


def _row(record: VideoRecord) -> dict[str, Any]:
    """The record as a videos.csv row. Without outer folds the fold columns are left out, so a
    one-split index reads, writes and fingerprints exactly as before they existed."""
    row = asdict(record)
    if record.fold is None:
        for name in FOLD_COLUMNS:
            del row[name]
    return row


def read_videos_csv(path: str | os.PathLike[str]) -> list[VideoRecord]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = set(_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}; rerun `python cli.py prepare`")
        try:
            return [_parse(row) for row in reader]
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: unreadable row ({exc}); rerun `python cli.py prepare`") from None


def write_videos_csv(path: str | os.PathLike[str], records: list[VideoRecord]) -> None:
    columns = _COLUMNS + (FOLD_COLUMNS if any(record.fold is not None for record in records) else ())
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            for record in records:
                writer.writerow(_row(record))


def records_in_split(records: list[VideoRecord], split: str) -> list[VideoRecord]:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    return [record for record in records if record.split == split]


def fold_count(records: Sequence[VideoRecord]) -> int:
    """K, the number of outer folds of an index (1: one fixed train/val/test split)."""
    folded = [record for record in records if record.fold is not None]
    return len(folded[0].fold_splits.split()) if folded else 1


def evaluated_records(records: Sequence[VideoRecord]) -> list[VideoRecord]:
    """The videos a run's results are scored on: with K > 1 outer folds every indexed video (each
    is in exactly one fold's test set), with one fixed split its test split."""
    return list(records) if fold_count(records) > 1 else records_in_split(list(records), "test")


def fold_records(records: Sequence[VideoRecord], fold: int) -> list[VideoRecord]:
    """Outer fold ``fold`` as a one-split index: every video with its split in that fold and no
    fold columns, so the stages run on it exactly as on a run prepared without folds."""
    return [replace(record, split=record.split_in(fold), fold=None, fold_splits="") for record in records]


def class_names(records: list[VideoRecord]) -> list[str]:
    """Class names ordered by label."""
    by_label = {record.label: record.class_name for record in records}
    return [by_label[label] for label in sorted(by_label)]


def _video_signature(path: str) -> dict[str, Any] | None:
    try:
        return file_signature(path)
    except OSError:
        return None  # a loader rejects it; the file appearing later changes the fingerprint


def index_fingerprint(records: Sequence[VideoRecord]) -> str:
    """Identity of a run's index: every videos.csv row (splits included) and each video file's
    signature (path, size, mtime). What depends on the data (features, deep results and
    checkpoints, learning-curve points) is redone when it changes."""
    rows = sorted(records, key=lambda record: record.video_id)
    return fingerprint([(_row(record), _video_signature(record.path)) for record in rows])
