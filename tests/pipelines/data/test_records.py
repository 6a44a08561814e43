from __future__ import annotations

import os
from dataclasses import replace

import pytest

from pipelines.data.records import (
    VideoRecord,
    class_names,
    evaluated_records,
    fold_count,
    fold_records,
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


ONE_SPLIT_CSV = (
    "video_id,path,class_name,label,group,split,codec,frames,fps,width,height\n"
    "Punch/v_Punch_g01_c01,/data/Punch/v_Punch_g01_c01.avi,Punch,0,Punch_g01,train,mpeg4,75,25.0,320,240\n"
    "PullUps/v_PullUps_g02_c01,/data/PullUps/v_PullUps_g02_c01.avi,PullUps,1,PullUps_g02,test,mpeg4,75,25.0,320,240\n"
)


def test_a_one_split_index_reads_and_writes_as_before_folds(tmp_path):
    """videos.csv files from before outer folds read back unchanged, and write back byte for byte."""
    path = tmp_path / "videos.csv"
    path.write_text(ONE_SPLIT_CSV)
    records = read_videos_csv(path)
    assert records == [_record(1, "train", 0), _record(2, "test", 1)]
    assert all(r.fold is None and r.fold_splits == "" for r in records)
    assert fold_count(records) == 1
    assert evaluated_records(records) == [records[1]]  # one split: the test split is evaluated
    write_videos_csv(tmp_path / "again.csv", records)
    assert (tmp_path / "again.csv").read_text() == ONE_SPLIT_CSV
    # The value the code before outer folds gave these rows (their files do not exist): runs
    # prepared then keep their features, results and checkpoints.
    assert index_fingerprint(records) == "c91358b10a9c5469"


def test_outer_folds_round_trip_and_give_one_split_index_per_fold(tmp_path):
    records = [
        replace(_record(1, "test", 0), fold=0, fold_splits="test train val"),
        replace(_record(2, "train", 1), fold=1, fold_splits="train test train"),
        replace(_record(3, "val", 0), fold=2, fold_splits="val train test"),
    ]
    write_videos_csv(tmp_path / "videos.csv", records)
    assert read_videos_csv(tmp_path / "videos.csv") == records
    assert fold_count(records) == 3
    assert evaluated_records(records) == records  # every video is in one fold's test set
    for fold in range(3):
        rows = fold_records(records, fold)
        assert [r.split for r in rows] == [r.fold_splits.split()[fold] for r in records]
        assert all(r.fold is None and r.fold_splits == "" for r in rows)  # a plain one-split index
        assert evaluated_records(rows) == [r for r in rows if r.split == "test"]
    # The fold column is part of the index's identity: other folds, other fingerprint.
    moved = [replace(records[0], fold=1, fold_splits="train test val"), *records[1:]]
    assert index_fingerprint(moved) != index_fingerprint(records)
    with pytest.raises(ValueError, match="no outer fold 1"):
        _record(1, "test", 0).split_in(1)


def test_an_unreadable_fold_column_names_the_file(tmp_path):
    path = tmp_path / "videos.csv"
    lines = ONE_SPLIT_CSV.splitlines()
    path.write_text(f"{lines[0]},fold,fold_splits\n{lines[1]},x,train test\n")
    with pytest.raises(ValueError, match=f"{path}: unreadable row.*prepare"):
        read_videos_csv(path)
