"""Environment: library versions once, the code's git commit, the command line, how each model's
test scores were obtained, the dataset and the rejected files."""

from __future__ import annotations

import subprocess
from pathlib import Path

from analysis.context import ReportContext
from analysis.html import Cell, ReportSection, escape, notes_html, table_html
from analysis.names import human_name
from core.runfiles import RunPaths, UnreadableFileError, read_json, read_rejected
from core.schema import ModelResult
from pipelines.data.prepare import listed_missing_text
from pipelines.data.records import read_videos_csv

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def git_commit(root: Path = PROJECT_ROOT) -> str | None:
    """The commit the code was checked out at (with "+ local changes" when dirty); None outside git."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit} + local changes" if dirty else commit


def _versions_html(results: list[ModelResult]) -> str:
    reference = results[0].versions
    rows = [[name, version] for name, version in reference.items() if version]
    differing = [r for r in results[1:] if r.versions != reference]
    text = table_html(["Library", "Version"], rows)
    if differing:
        text += (
            "<p>Result files made with other versions: "
            + "; ".join(
                escape(f"{human_name(r.model)}: " + ", ".join(f"{n} {v}" for n, v in r.versions.items() if v))
                for r in differing
            )
            + ".</p>"
        )
    return text


def _dataset_html(run_dir: Path) -> str:
    paths = RunPaths(run_dir)
    if not paths.videos_csv.exists():
        return "<p>videos.csv is missing: no dataset summary.</p>"
    records = read_videos_csv(paths.videos_csv)
    classes = sorted({(r.label, r.class_name) for r in records})
    splits = sorted(
        {r.split for r in records},
        key=lambda s: ("train", "val", "test").index(s) if s in ("train", "val", "test") else 3,
    )
    rows = []
    for label, name in classes:
        mine = [r for r in records if r.label == label]
        rows.append(
            [name, len({r.group for r in mine})] + [sum(r.split == s for r in mine) for s in splits] + [len(mine)]
        )
    rows.append(
        ["all", len({r.group for r in records})] + [sum(r.split == s for r in records) for s in splits] + [len(records)]
    )
    codecs = sorted({r.codec for r in records})
    return (
        listed_missing_html(paths)
        + f"<p>{len(classes)} classes, {len({r.group for r in records})} groups, {len(records)} usable videos "
        f"(codecs: {escape(', '.join(codecs))}). Groups never cross splits, so no actor or scene is in both training "
        "and test.</p>" + table_html(["Class", "Groups"] + [s.capitalize() for s in splits] + ["Videos"], rows)
    )


def listed_missing_html(paths: RunPaths) -> str:
    """A warning when the official lists name videos of the run's classes that were not in the folder
    (``run.json``'s ``listed_missing``); a damaged ``run.json`` is said, not fatal to the report."""
    try:
        run = read_json(paths.run_json) if paths.run_json.exists() else {}
    except UnreadableFileError as exc:
        return notes_html(
            [
                f"{exc}: whether the official split lists matched the data folder is unknown; rerun "
                "`python cli.py prepare` to rewrite it."
            ],
            "warn",
        )
    missing = run.get("listed_missing", []) if isinstance(run, dict) else []
    if not missing:
        return ""
    text = listed_missing_text(missing)
    return notes_html(
        [f"{text[0].upper()}{text[1:]}, so these scores are not comparable with published results on this split."],
        "warn",
    )


def _rejected_html(run_dir: Path) -> str:
    rows = read_rejected(run_dir)
    if not rows:
        return "<p>No file was rejected.</p>"
    return f"<p>{len(rows)} file(s) could not be used:</p>" + table_html(
        ["Path", "Reason", "Stage", "Time"],
        [[Cell(r["path"], "wrap"), Cell(r["reason"], "wrap"), r["stage"], r["time"]] for r in rows],
    )


def build(context: ReportContext) -> ReportSection:
    results = context.results
    commit = git_commit()
    command = context.options.command
    machine = table_html(
        ["Model", "Backend", "Device", "Seed"],
        [[Cell(human_name(r.model), "name"), r.backend, r.device, r.seed] for r in results],
    )
    protocol = table_html(
        ["Model", "How test scores were obtained"],
        [[Cell(human_name(r.model), "name"), Cell(r.test_protocol, "wrap")] for r in results],
    )
    body = (
        f"<p>Code: git commit <code>{escape(commit or 'not available (not a git checkout)')}</code>. "
        f"Report made by: <code>{escape(command or 'not recorded (analyze_run called from Python)')}</code>.</p>"
        "<h3>Libraries</h3>"
        + _versions_html(results)
        + "<h3>Where each model ran</h3>"
        + machine
        + "<h3>Test protocol</h3>"
        + protocol
        + "<h3>Dataset</h3>"
        + _dataset_html(context.run_dir)
        + "<h3>Rejected files</h3>"
        + _rejected_html(context.run_dir)
    )
    return ReportSection("environment", "Environment", body)
