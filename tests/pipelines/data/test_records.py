from __future__ import annotations

import os
from dataclasses import replace

import pytest

from pipelines.data.records import (
    VideoRecord,
    class_names,
    index_fingerprint,
    read_videos_csv,
    records_in_split,
    write_videos_csv,
)


def _record(i: int, split: str, label: int) -> VideoRecord:
    name = ["Punch", "PullUps"][label]
    return VideoRecord(
        video_id=f"{name}/v_{name}_g{i:02d}_c01",
        path=f"/data/{name}/v_{name}_g{i:02d}_c01.avi",
        class_name=name,
        label=label,
        group=f"{name}_g{i:02d}",
        split=split,
        codec="mpeg4",
        frames=75,
        fps=25.0,
        width=320,
        height=240,
    )


def test_videos_csv_round_trips_with_types(tmp_path):
    records = [_record(1, "train", 0), _record(2, "test", 1)]
    write_videos_csv(tmp_path / "videos.csv", records)
    assert read_videos_csv(tmp_path / "videos.csv") == records
    assert class_names(records) == ["Punch", "PullUps"]
    assert records_in_split(records, "test") == [records[1]]


def test_missing_column_names_the_file_and_the_fix(tmp_path):
    path = tmp_path / "videos.csv"
    path.write_text("video_id,path\nx,y\n")
    with pytest.raises(ValueError, match="prepare"):
        read_videos_csv(path)


def test_index_fingerprint_follows_rows_and_files_not_order(tmp_path):
    video = tmp_path / "a.webm"
    video.write_bytes(b"frames")
    records = [
        VideoRecord("A/a", str(video), "A", 0, "g01", "train", "vp9", 8, 25.0, 32, 24),
        VideoRecord("B/b", str(tmp_path / "missing.webm"), "B", 1, "g01", "test", "vp9", 8, 25.0, 32, 24),
    ]
    first = index_fingerprint(records)
    assert index_fingerprint(records[::-1]) == first
    assert index_fingerprint([replace(records[0], split="val"), records[1]]) != first  # another split
    os.utime(video, ns=(1, 1))  # the file changed (re-encoded in place)
    assert index_fingerprint(records) != first
