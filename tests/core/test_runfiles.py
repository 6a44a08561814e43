from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.runfiles import (
    DEAD_WRITER_SECONDS,
    STALE_TEMPORARY_SECONDS,
    DiskFullError,
    RunPaths,
    append_rejected,
    atomic_path,
    atomic_write_json,
    file_signature,
    fingerprint,
    read_json,
    read_rejected,
    remove_stale_temporaries,
)

REPO = Path(__file__).resolve().parents[2]


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


def killed_writer(target: Path) -> Path:
    """Run a process that is SIGKILLed inside atomic_path (as `kill -9` would): its 0-byte temporary stays."""
    code = (
        "import os, signal, sys\n"
        "from core.runfiles import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    finished = subprocess.run([sys.executable, "-c", code, str(target)], env=env, check=False)
    assert finished.returncode == -signal.SIGKILL
    (left,) = [p for p in target.parent.iterdir() if p.name.endswith(".tmp")]
    assert left.name.startswith(f".{target.name}.") and left.stat().st_size == 0 and not target.exists()
    return left


def age_file(path: Path, seconds: float) -> None:
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp))


def test_temporaries_of_killed_writers_are_removed_and_live_ones_kept(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    killed = killed_writer(folder / "svm.json")
    assert remove_stale_temporaries(tmp_path) == []  # within the grace minute: it could still be a live writer
    age_file(killed, DEAD_WRITER_SECONDS + 5)

    host = killed.name.split("@")[1].split(".")[0]
    live = tmp_path / f".model.pt.{os.getpid()}@{host}.abc123.tmp"  # this process is alive
    foreign = tmp_path / ".model.pt.12345@some-other-host.abc123.tmp"  # writer cannot be checked
    legacy = tmp_path / ".videos.csv.k2j3h4g5.tmp"  # name from before the pid was in it
    old_legacy = tmp_path / ".run.json.a1b2c3d4.tmp"
    unrelated = [tmp_path / ".notes", tmp_path / "data.tmp", tmp_path / "run.json"]
    for path in [live, foreign, legacy, old_legacy, *unrelated]:
        path.write_bytes(b"")
        age_file(path, DEAD_WRITER_SECONDS + 5)
    age_file(old_legacy, STALE_TEMPORARY_SECONDS + 5)

    assert sorted(remove_stale_temporaries(tmp_path)) == sorted([old_legacy, killed])
    assert not killed.exists() and not old_legacy.exists()
    assert all(p.exists() for p in [live, foreign, legacy, *unrelated])
    age_file(foreign, STALE_TEMPORARY_SECONDS + 5)
    assert remove_stale_temporaries(tmp_path) == [foreign]
    assert remove_stale_temporaries(tmp_path / "missing") == []
