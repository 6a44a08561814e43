"""Summary: the verdict with its caveats, and the main table (quality; cost)."""

from __future__ import annotations

from analysis.context import ReportContext
from analysis.html import ReportSection, escape, links_html, notes_html
from analysis.tables import COST, QUALITY, main_table_html, summary_table, table_csv, table_markdown
from analysis.verdicts import Headline
from core.runfiles import atomic_write_text

RAW_FILES = (
    "statistics.json",
    "table_all.csv",
    "table_all.md",
    "pairs.csv",
    "per_class.csv",
    "hyperparameters.csv",
    "training_history.csv",
    "scene_bias.csv",
    "mcnemar.csv",
    "reference.csv",
    "summary.txt",
)


def summary_text(context: ReportContext, headline: Headline) -> str:
    """The one-screen console summary (report/summary.txt): table, interval note, verdict, warnings."""
    c = context.comparison
    if c.unit == "video":
        note = f"95 % intervals: bootstrap over {c.n_videos} test videos (no videos.csv: groups unknown)."
    elif c.n_groups < 2:
        note = f"No intervals: the {c.n_videos} test videos come from {c.n_groups} group."
    else:
        note = f"95 % intervals: bootstrap over {c.n_groups} test groups ({c.n_videos} videos)."
    lines = [summary_table(context.rows), note, *headline.sentences]
    lines += [f"WARNING {w}" for w in headline.warnings]
    lines += context.notes  # e.g. results left out as stale, with the command that redoes them
    return "\n".join(lines) + "\n"


def build(context: ReportContext, headline: Headline) -> ReportSection:
    out = context.out
    atomic_write_text(out / "table_all.csv", table_csv(context.rows))
    atomic_write_text(out / "table_all.md", table_markdown(context.rows))
    atomic_write_text(out / "summary.txt", summary_text(context, headline))
    c = context.comparison
    unit = f"{c.n_groups} test groups" if c.unit == "group" else f"{c.n_videos} test videos (no videos.csv)"
    sentences = "".join(f"<p>{escape(s)}</p>" for s in headline.sentences)
    raw = [f for f in RAW_FILES if (out / f).is_file()]  # the summary is built last: the others exist
    body = (
        sentences
        + notes_html(headline.warnings, "warn")
        + notes_html(context.notes)
        + "<h3>Quality</h3>"
        + main_table_html(context.rows, QUALITY, "Test scores: estimate [95 % interval]")
        + "<h3>Cost</h3>"
        + main_table_html(context.rows, COST, "Measured costs")
        + f"<p class='muted'>Intervals: 95 % percentile bootstrap over {escape(unit)} ({c.n_resamples} resamples; "
        "the videos of a group stay together). Green: best in the column (highest score, lowest cost). "
        f"Raw numbers: {links_html(raw)}; one file per model: "
        + links_html([f"../results/{m}.json" for m in context.models])
        + ".</p>"
    )
    return ReportSection("summary", "Summary", body)
