from __future__ import annotations

import pytest

from core.console import PlainProgress, progress_bar


def test_piped_progress_is_one_plain_line_per_finished_bar(capsys: pytest.CaptureFixture[str]):
    # Under pytest standard error is captured, not a terminal: no bar, no carriage-return redraws.
    bar = progress_bar(range(50), desc="features", unit="video")
    assert isinstance(bar, PlainProgress)
    assert sum(1 for _ in bar) == 50
    with progress_bar(total=3, desc="inner", unit="clip", leave=False) as inner:  # short-lived: silent
        inner.update(3)
    with progress_bar(total=4, desc="quiet", unit="clip", enabled=False) as off:  # --quiet: silent
        off.update(4)
    captured = capsys.readouterr()
    assert "\r" not in captured.err + captured.out
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("features: 50/50 video(s) in ")
