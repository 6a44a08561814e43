"""Layout of a run directory and atomic, resumable file writes.

Every output goes through :func:`atomic_path` (write to a temporary file beside the target,
then ``os.replace``), so an interrupted run never leaves a half-written file that a rerun
would mistake for finished work. A process killed outright (``kill -9``, power loss) cannot remove
its temporary file; :func:`remove_stale_temporaries` does, at the start of every stage.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.console import notice

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

    @property
    def export_dir(self) -> Path:
        return self.root / "export"

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


# Temporary files are named ``.<target name>.<pid>@<host>.<random>.tmp``: the writer's process id
# and host tell a file left by a dead process from one still being written.
_TEMPORARY = re.compile(r"^\..+\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]+)\.[A-Za-z0-9_]+\.tmp$")
_ANY_TEMPORARY = re.compile(r"^\..+\.tmp$")
# Every writer fills its temporary file as soon as it creates it, so a file untouched for a while
# has no writer: removed after DEAD_WRITER_SECONDS when its writer (this host, its pid) is gone,
# else after STALE_TEMPORARY_SECONDS (another host, a reused pid, a name from before the pid was
# in it). The grace also covers a pid namespace that hides a live writer.
DEAD_WRITER_SECONDS = 60.0
STALE_TEMPORARY_SECONDS = 3600.0


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _is_stale(path: Path, now: float, max_age: float) -> bool:
    try:
        age = now - path.stat().st_mtime
    except OSError:
        return False
    if age > max_age:
        return True
    named = _TEMPORARY.match(path.name)
    writer_gone = named is not None and named["host"] == _host_tag() and not _pid_alive(int(named["pid"]))
    return writer_gone and age > DEAD_WRITER_SECONDS


def remove_stale_temporaries(folder: str | os.PathLike[str], *, max_age: float = STALE_TEMPORARY_SECONDS) -> list[Path]:
    """Remove the temporary files of :func:`atomic_path` under ``folder`` (recursively) that no
    writer will finish: written on this host by a process that no longer runs and untouched for a
    minute, or untouched for ``max_age`` seconds. Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    now = time.time()
    removed = []
    for parent, _, names in os.walk(folder):
        for name in names:
            path = Path(parent) / name
            if _ANY_TEMPORARY.match(name) and path.is_file() and _is_stale(path, now, max_age):
                try:
                    path.unlink()
                except FileNotFoundError:  # its writer finished, or another cleaner was first
                    continue
                removed.append(path)
    return removed


@contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target`` atomically.

    A write that fails because the disk is full raises :class:`DiskFullError` naming ``target``;
    either way the temporary file is removed and ``target`` is left as it was.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        prefix = f".{target.name}.{os.getpid()}@{_host_tag()}."
        fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=target.parent)
    except OSError as exc:  # name the file the user asked for, not its temporary sibling
        raise type(exc)(exc.errno, exc.strerror or str(exc), str(target)) from exc
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


class UnreadableFileError(ValueError):
    """A file of the run exists but cannot be parsed (empty, truncated, overwritten with garbage)."""

    def __init__(self, path: str | os.PathLike[str], problem: str, fix: str = "") -> None:
        super().__init__(f"{path}: cannot be read ({problem})" + (f"; {fix}" if fix else ""))
        self.path = Path(path)
        self.problem = problem


def read_json(path: str | os.PathLike[str]) -> Any:
    """The JSON in ``path``; :class:`UnreadableFileError` naming it when it is not JSON."""
    with open(path, encoding="utf-8") as handle:
        try:
            return json.load(handle)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UnreadableFileError(path, str(exc) or type(exc).__name__) from exc


SET_ASIDE_SUFFIX = ".corrupt"


def problem_text(error: BaseException, path: str | os.PathLike[str]) -> str:
    """What is wrong with ``path`` according to ``error``, without repeating the path."""
    if isinstance(error, UnreadableFileError):
        return error.problem
    text = str(error).removeprefix(f"{path}: ")
    return text or type(error).__name__


def set_aside(path: str | os.PathLike[str], problem: BaseException | str, *, redo: str) -> Path:
    """Rename an unreadable run file to ``PATH.corrupt`` (``.corrupt.1``, ... when taken) so that the
    work is redone without losing it, and say so in one line naming both files, the problem (an
    error or its text) and what is redone (``redo``). Returns the new path (``path`` itself when
    another process, such as another DDP rank, moved it first)."""
    path = Path(path)
    if isinstance(problem, BaseException):
        problem = problem_text(problem, path)
    target = path.with_name(path.name + SET_ASIDE_SUFFIX)
    number = 0
    while target.exists():
        number += 1
        target = path.with_name(f"{path.name}{SET_ASIDE_SUFFIX}.{number}")
    try:
        os.replace(path, target)
    except FileNotFoundError:
        return path
    notice(f"{path} cannot be read ({problem}): kept as {target.name}; {redo}")
    return target


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
