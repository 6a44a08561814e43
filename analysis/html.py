"""The HTML of the report: the page, its style and small building blocks (tables, figures, notes).

The page is self-contained and offline (no script, no web font, no CDN). It fits a 1400-px
window: only tables may be wider, and each table sits in a horizontal scroller (``div.scroll``).
It prints: the navigation hides, tables wrap, figures do not break across pages.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

from analysis.plots import ReportFigure, vector_path

CSS = """
*{box-sizing:border-box}
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0;color:#222;background:#fafafa;
line-height:1.4}
header{background:#1f3b57;color:#fff;padding:18px 32px}header h1{margin:0;font-size:24px}
header p{margin:4px 0 0;opacity:.9;overflow-wrap:anywhere}header code{background:#2c4f73;color:#fff}
nav{background:#fff;border-bottom:1px solid #ddd;padding:8px 32px;position:sticky;top:0;display:flex;flex-wrap:wrap;
gap:4px 16px;z-index:1}
nav a{color:#1f3b57;text-decoration:none;font-weight:600}
main{padding:8px 32px 48px;max-width:1400px}section{margin-top:28px}
h2{border-bottom:2px solid #1f3b57;padding-bottom:4px}
p,li,figcaption,.note{overflow-wrap:anywhere}
table{border-collapse:collapse;font-size:13px;background:#fff;margin:8px 0}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
td{white-space:nowrap}th{background:#eef2f6;white-space:normal;min-width:4em}td.name,td.wrap{white-space:normal}
td.name{min-width:11em;max-width:18em;font-weight:600}td.wrap{min-width:16em;max-width:40em}
td.num{text-align:right}td.best{background:#d9f2d9;font-weight:700}
.scroll{overflow-x:auto;max-width:100%}
figure{display:inline-block;vertical-align:top;margin:10px 18px 18px 0;max-width:100%;background:#fff;padding:8px;
border:1px solid #e4e4e4}figure img{max-width:100%;height:auto;display:block}
figcaption{font-size:13px;max-width:760px}figcaption b{display:block;margin-bottom:2px}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 10px;margin:6px 0;font-size:14px}
.warn{background:#fdecea;border-left:4px solid #c0392b;padding:6px 10px;margin:6px 0;font-size:14px}
.verdicts li{margin:3px 0}.muted{color:#666;font-size:13px}
code{background:#eee;padding:0 3px;overflow-wrap:anywhere}
caption{caption-side:top;text-align:left;font-size:13px;color:#555;padding:2px 0}
details{margin:6px 0}summary{cursor:pointer;font-weight:600}
@media print{nav{display:none}body{background:#fff}main{padding:0 8px;max-width:none}.scroll{overflow:visible}
table{font-size:9px}td,th{white-space:normal;padding:2px 4px}figure{page-break-inside:avoid;border:none}
section{page-break-before:auto}header{background:none;color:#000;padding:0}header code{background:none;color:#000}}
"""


@dataclass(frozen=True)
class ReportSection:
    """One section of the page: its anchor, its title in the navigation and its HTML body."""

    anchor: str
    title: str
    body: str


def escape(value: object) -> str:
    return html.escape(str(value))


def figure_html(fig: ReportFigure) -> str:
    vector = vector_path(fig.file).name
    return (
        # srcset 2x: figures are drawn at 200 dpi, so they show at the size they were designed for
        f'<figure><a href="{escape(fig.file)}"><img src="{escape(fig.file)}" srcset="{escape(fig.file)} 2x" '
        f'alt="{escape(fig.title)}"></a>'
        f"<figcaption><b>{escape(fig.title)}</b>What this shows: {escape(fig.caption)} "
        f'<span class="muted">(vector copy: <a href="{escape(vector)}">{escape(vector)}</a>)</span>'
        "</figcaption></figure>"
    )


def figures_html(figures: Sequence[ReportFigure]) -> str:
    return "".join(figure_html(f) for f in figures)


def notes_html(notes: Sequence[str], kind: str = "note") -> str:
    return "".join(f'<div class="{kind}">{escape(n)}</div>' for n in notes)


@dataclass(frozen=True)
class Cell:
    """A table cell: its text and CSS classes (name, num, best, wrap)."""

    text: str
    css: str = ""

    def html(self) -> str:
        css = f' class="{self.css}"' if self.css else ""
        return f"<td{css}>{escape(self.text)}</td>"


def table_html(header: Sequence[str], rows: Sequence[Sequence[Cell | object]], caption: str | None = None) -> str:
    """A table in a horizontal scroller; plain values become plain cells."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(c.html() if isinstance(c, Cell) else Cell(str(c)).html() for c in row) + "</tr>"
        for row in rows
    )
    title = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f'<div class="scroll"><table>{title}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def details_html(summary: str, body: str) -> str:
    return f"<details><summary>{escape(summary)}</summary>{body}</details>"


def links_html(files: Sequence[str]) -> str:
    return ", ".join(f'<a href="{escape(f)}">{escape(f)}</a>' for f in files)


def page_html(title: str, header: str, sections: Sequence[ReportSection]) -> str:
    """The whole page: header, navigation to every section, the sections in order."""
    nav = "".join(f'<a href="#{s.anchor}">{escape(s.title)}</a>' for s in sections)
    body = "\n".join(f"<section id='{s.anchor}'><h2>{escape(s.title)}</h2>{s.body}</section>" for s in sections)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f"<header>{header}</header><nav>{nav}</nav><main>{body}</main></body></html>"
    )
