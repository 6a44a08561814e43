"""The CLI's one error mapper (cli._Main.invoke), run as a user runs it: a separate process.

A read-only run folder ends prepare, classical and analyze with one line naming the file and the
fix (exit 1, no traceback), an unreadable file with one that says so; Ctrl-C ends deep and
classical with the same message and exit status 130 as run.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli import INTERRUPTED
from models.classical.persist import MODEL_SUFFIX

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "ACTIONBENCH_DEVICE": "cpu", "MPLBACKEND": "Agg"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run with demo videos, videos.csv, features.npz and the classical results."""
    from core.backend import resolve_backend
    from workflow.run import run_comparison

    run = tmp_path_factory.mktemp("cli") / "run"
    run_comparison(None, run, profile="tiny", backend=resolve_backend("cpu"), skip_deep=True, progress=False,
                   stop_after="classical")  # fmt: skip
    return run


def _obeying_permissions() -> list[str]:
    """The prefix under which a command obeys file permissions: none for a normal user; for root
    (containers, some CI), setpriv dropping every capability, since root writes into read-only folders."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: read-only folders cannot be enforced")
    return [setpriv, "--inh-caps=-all", "--bounding-set=-all"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "cli.py", *args]


def _set_writable(root: Path, writable: bool) -> None:
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        bits = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
        os.chmod(path, (mode | stat.S_IWUSR) if writable else (mode & ~bits))


@pytest.fixture()
def read_only_copy(run_dir: Path, tmp_path: Path) -> Iterator[Path]:
    copy = tmp_path / "read-only-run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("demo_data"))  # videos.csv names the originals
    _set_writable(copy, False)
    yield copy
    _set_writable(copy, True)


def _one_line_error(args: list[str]) -> str:
    done = subprocess.run(_obeying_permissions() + args, cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, output
    return errors[0]


def test_a_read_only_run_folder_is_a_one_line_error_in_prepare_classical_and_analyze(
    run_dir: Path, read_only_copy: Path
) -> None:
    fix = "Permission denied; choose a writable --run folder or fix its permissions"
    empty = read_only_copy.parent / "empty-read-only-run"
    empty.mkdir()
    _set_writable(empty, False)
    error = _one_line_error(_cli("prepare", str(run_dir / "demo_data"), "--run", str(empty)))
    assert error == f"Error: cannot write {empty / 'rejected.csv'}: {fix}"
    error = _one_line_error(_cli("classical", "--run", str(read_only_copy), "--profile", "tiny", "--force"))
    assert error.startswith(f"Error: cannot write {read_only_copy / 'models'}") and error.endswith(fix)
    error = _one_line_error(_cli("analyze", "--run", str(read_only_copy), "--profile", "tiny", "--no-interpret"))
    assert error == f"Error: cannot write {read_only_copy / 'report'}: {fix}"
    # A file that cannot be read is not called unwritable.
    os.chmod(read_only_copy / "videos.csv", 0)
    error = _one_line_error(_cli("features", "--run", str(read_only_copy), "--profile", "tiny"))
    assert error == f"Error: cannot read {read_only_copy / 'videos.csv'}: Permission denied; fix its permissions"


def _like_a_terminal_job() -> None:
    """In the child before exec: SIGINT handled by default and not blocked, as for a command started
    in a terminal. A test process may pass on an ignored or blocked SIGINT (Python then installs no
    KeyboardInterrupt handler, or the signal never arrives) and the command would run to its end."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _signal_state(pid: int) -> str:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return "signal state unknown"
    return ", ".join(line for line in lines if line.startswith(("SigBlk", "SigIgn", "SigCgt")))


def _interrupt_when(marker: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    """Start ``args``, press Ctrl-C (SIGINT to its process group, as a terminal does) once ``marker``
    exists, and return how it ended."""
    process = subprocess.Popen(args, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True, preexec_fn=_like_a_terminal_job)  # fmt: skip
    deadline = time.monotonic() + 300
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, f"finished before {marker.name} appeared:\n{process.stdout.read()}"
    state = _signal_state(process.pid)
    os.killpg(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    return subprocess.CompletedProcess(args, process.returncode, f"{output}\n[{state} when SIGINT was sent]")


@pytest.mark.slow
def test_ctrl_c_in_deep_and_classical_exits_130_with_the_message_of_run(run_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("demo_data"))  # videos.csv names the originals
    shutil.rmtree(run / "models")
    # deep: once its training has started (the checkpoint folder records the index first).
    ended = _interrupt_when(
        run / "checkpoints" / "cnn2d" / "data.json",
        _cli("deep", "--run", str(run), "--model", "cnn2d", "--profile", "tiny"),
    )
    assert ended.returncode == 130 and INTERRUPTED in ended.stdout, ended.stdout
    assert "Traceback" not in ended.stdout and "Aborted!" not in ended.stdout
    # classical: once its first model is saved, while the others train.
    ended = _interrupt_when(
        run / "models" / f"svm{MODEL_SUFFIX}",
        _cli("classical", "--run", str(run), "--profile", "tiny", "--force", "--learning-curve"),
    )
    assert ended.returncode == 130 and INTERRUPTED in ended.stdout, ended.stdout
    assert "Traceback" not in ended.stdout and "Aborted!" not in ended.stdout
