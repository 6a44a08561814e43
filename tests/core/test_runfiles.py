from __future__ import annotations

from pathlib import Path

import pytest

from core.runfiles import (
    DiskFullError,
    RunPaths,
    append_rejected,
    atomic_path,
    atomic_write_json,
    file_signature,
    fingerprint,
    read_json,
    read_rejected,
)


def test_atomic_write_leaves_no_partial_file_on_failure(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half written")
            raise RuntimeError("killed")
    assert read_json(target) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux) to get a real ENOSPC")
def test_a_full_disk_is_named_with_the_file_and_the_fix(tmp_path):
    target = tmp_path / "model.pt"
    atomic_write_json(target, {"kept": True})
    with pytest.raises(DiskFullError, match=f"could not write {target}: its disk is full.*rerun"):
        with atomic_path(target) as tmp:
            tmp.unlink()
            tmp.symlink_to("/dev/full")  # the kernel answers every write with ENOSPC
            tmp.write_bytes(b"weights")
    assert read_json(target) == {"kept": True}
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_rejected_rows_accumulate_without_duplicates(tmp_path):
    append_rejected(tmp_path, "/data/a.avi", "zero-byte file", "prepare")
    append_rejected(tmp_path, "/data/a.avi", "zero-byte file", "prepare")
    append_rejected(tmp_path, "/data/b.avi", "decode failed at frame 3", "features")
    rows = read_rejected(tmp_path)
    assert [(r["path"], r["stage"]) for r in rows] == [("/data/a.avi", "prepare"), ("/data/b.avi", "features")]
    assert RunPaths(tmp_path).rejected_csv.exists()


def test_fingerprint_is_stable_and_sensitive(tmp_path):
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
    video = tmp_path / "v.avi"
    video.write_bytes(b"x")
    before = file_signature(video)
    video.write_bytes(b"xy")
    assert file_signature(video) != before
