"""The environment section's warning about official split lists that do not match the data folder."""

from __future__ import annotations

from pathlib import Path

from analysis.sections.environment import listed_missing_html
from core.runfiles import RunPaths


def test_listed_missing_videos_are_warned_about(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path)
    assert listed_missing_html(paths) == ""  # no run.json: nothing to say
    paths.run_json.write_text('{"listed_missing": []}')
    assert listed_missing_html(paths) == ""
    paths.run_json.write_text('{"listed_missing": ["punch/v_punch_g07_c01"]}')
    assert "name 1 video(s) of these classes that are not in the data folder (punch/v_punch_g07_c01)" in (
        listed_missing_html(paths)
    )


def test_a_damaged_run_json_is_said_not_fatal(tmp_path: Path) -> None:
    paths = RunPaths(tmp_path)
    paths.run_json.write_text("{broken")
    html = listed_missing_html(paths)
    assert "run.json: cannot be read" in html and "rerun `python cli.py prepare`" in html
