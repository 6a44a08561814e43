"""Layout of a run directory and atomic, resumable file writes.

Every output goes through :func:`atomic_path` (write to a temporary file beside the target,
then ``os.replace``), so an interrupted run never leaves a half-written file that a rerun
would mistake for finished work.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REJECTED_COLUMNS = ("path", "reason", "stage", "time")


@dataclass(frozen=True)
class RunPaths:
    """Where each stage of a run reads and writes."""

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def videos_csv(self) -> Path:
        return self.root / "videos.csv"

    @property
    def rejected_csv(self) -> Path:
        return self.root / "rejected.csv"

    @property
    def features_npz(self) -> Path:
        return self.root / "features.npz"

    @property
    def keyframes_npz(self) -> Path:
        return self.root / "keyframes.npz"

    @property
    def results_dir(self) -> Path:
        return self.root / "results"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def embeddings_dir(self) -> Path:
        return self.root / "embeddings"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    @property
    def bench_dir(self) -> Path:
        return self.root / "bench"

    def result_json(self, model: str) -> Path:
        return self.results_dir / f"{model}.json"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class DiskFullError(OSError):
    """An output could not be written because its disk is full."""


LOW_DISK_BYTES = 64 * 2**20


def _disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether ``exc`` came from a full disk: ENOSPC, or any write error with almost no space left
    (some writers, torch.save among them, report a short write as a RuntimeError)."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    try:
        return shutil.disk_usage(folder).free < LOW_DISK_BYTES
    except OSError:
        return False


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target`` atomically.

    A write that fails because the disk is full raises :class:`DiskFullError` naming ``target``;
    either way the temporary file is removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp creates 0600; give outputs normal permissions
        os.replace(tmp, target)
    except (OSError, RuntimeError) as exc:
        if isinstance(exc, DiskFullError) or not _disk_full(exc, target.parent):
            raise
        free = shutil.disk_usage(target.parent).free / 2**20
        raise DiskFullError(
            errno.ENOSPC,
            f"could not write {target}: its disk is full ({free:.0f} MiB free). Free some space (a run's "
            "decoded-clip cache, RUN/cache, is safe to delete) and rerun the same command: finished work is kept",
        ) from exc
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n"


def atomic_write_json(target: str | os.PathLike[str], data: Any) -> None:
    atomic_write_text(target, to_json(data))


def read_json(path: str | os.PathLike[str]) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def fingerprint(*parts: Any) -> str:
    """Stable short hash of JSON-serialisable parts (configs, file stats) for resume checks."""
    payload = json.dumps(parts, sort_keys=True, default=_json_default).encode("utf-8")
    return hashlib.sha256(payload).hexdigest()[:16]


def file_signature(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Identity of a file for cache keys: path, size and modification time."""
    stat = os.stat(path)
    return {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def append_rejected(run_dir: str | os.PathLike[str], path: str, reason: str, stage: str) -> None:
    """Record a video that a stage could not use. Never silently drop a file."""
    rejected = RunPaths(run_dir).rejected_csv
    rows = read_rejected(run_dir)
    if any(row["path"] == str(path) and row["stage"] == stage for row in rows):
        return
    rows.append(
        {
            "path": str(path),
            "reason": reason,
            "stage": stage,
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    write_rejected(rejected, rows)


def rejected_notice(count: int, run_dir: str | os.PathLike[str]) -> str | None:
    """The end-of-command line about videos skipped because they failed to decode (None if none)."""
    if count <= 0:
        return None
    return f"{count} video(s) rejected this run (see {RunPaths(run_dir).rejected_csv})"


def read_rejected(run_dir: str | os.PathLike[str]) -> list[dict[str, str]]:
    rejected = RunPaths(run_dir).rejected_csv
    if not rejected.exists():
        return []
    with open(rejected, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write_rejected(target: str | os.PathLike[str], rows: list[dict[str, str]]) -> None:
    with atomic_path(target) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=REJECTED_COLUMNS)
            writer.writeheader()
            for row in rows:
                writer.writerow({key: row.get(key, "") for key in REJECTED_COLUMNS})
