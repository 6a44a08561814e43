"""The dataset index: one :class:`VideoRecord` per usable video, stored as ``videos.csv``."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
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


_COLUMNS = tuple(field.name for field in fields(VideoRecord))
_CASTS = {field.name: field.type for field in fields(VideoRecord)}


def _parse(row: dict[str, str]) -> VideoRecord:
    values: dict[str, object] = {}
    for name in _COLUMNS:
        raw = row[name]
        kind = _CASTS[name]
        values[name] = int(raw) if kind == "int" else float(raw) if kind == "float" else raw
    return VideoRecord(**values)  # type: ignore[arg-type]


def read_videos_csv(path: str | os.PathLike[str]) -> list[VideoRecord]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = set(_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}; rerun `python cli.py prepare`")
        return [_parse(row) for row in reader]


def write_videos_csv(path: str | os.PathLike[str], records: list[VideoRecord]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=_COLUMNS)
            writer.writeheader()
            for record in records:
                writer.writerow(asdict(record))


def records_in_split(records: list[VideoRecord], split: str) -> list[VideoRecord]:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    return [record for record in records if record.split == split]


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
    return fingerprint([(asdict(record), _video_signature(record.path)) for record in rows])
