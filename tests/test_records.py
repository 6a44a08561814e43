from __future__ import annotations

import pytest

from pipelines.records import VideoRecord, class_names, read_videos_csv, records_in_split, write_videos_csv


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
