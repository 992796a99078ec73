"""report.html: the analysis's tables and plots as one self-contained page, to read offline, print or send.

A pure function of what the analysis built: the tables as shown (the frames the Markdown comes
from), their titles and notes, and the PNGs' bytes (embedded as data: URIs). Every cell, title and
note comes from files anyone may write, so all of it is escaped: none of it can become markup.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd


@dataclass(frozen=True)
class Table:
    """One table as the Markdown shows it: `shown` holds the formatted cells; `empty` stands in for
    a table with no rows and no notes."""

    title: str
    shown: pd.DataFrame
    notes: tuple[str, ...] = ()
    empty: str = "(no rows)"


@dataclass
class Contents:
    """What the analysis wrote, in order, for the report."""

    tables: list[Table] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # paths of the PNGs


# No fetch of any kind (CSP): only inline styles and data: images load, and no script runs.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; color: #222; margin: 2em auto; max-width: 1400px; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.1em; margin-top: 2em; }
.meta { color: #444; } .meta code { word-break: break-all; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 12px; margin: 0.5em 0; }
th, td { border: 1px solid #bbb; padding: 2px 6px; text-align: left; vertical-align: top; }
th { background: #eee; }
figure { margin: 1.5em 0; } img { max-width: 100%; height: auto; }
figcaption { color: #444; font-size: 12px; }
@media print {
  @page { margin: 12mm; }
  body { margin: 0; max-width: none; font-size: 11px; }
  .scroll { overflow: visible; }
  table { width: 100%; font-size: 8px; page-break-inside: auto; }
  td, th { overflow-wrap: anywhere; }  /* a wide table wraps within the page, never cut at its edge */
  thead { display: table-header-group; }
  tr, figure, img { page-break-inside: avoid; break-inside: avoid; }
  h2 { page-break-after: avoid; break-after: avoid; }
}
"""


def table_html(table: Table) -> str:
    """A section: the title, the table (escape=True: a cell is text, never markup), the notes."""
    parts = [f"<section>\n<h2>{html.escape(table.title)}</h2>"]
    if len(table.shown):
        frame = table.shown.to_html(index=False, escape=True, na_rep="", border=0)
        parts.append(f'<div class="scroll">{frame}</div>')
    elif not table.notes:
        parts.append(f"<p>{html.escape(table.empty)}</p>")
    parts.extend(f'<p class="note">{html.escape(note)}</p>' for note in table.notes)
    parts.append("</section>")
    return "\n".join(parts)


def image_html(name: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    label = html.escape(name)
    return (
        f'<figure>\n<img src="data:image/png;base64,{data}" alt="{label}">\n<figcaption>{label}</figcaption>\n</figure>'
    )


def report_html(
    experiments: Sequence[str],
    environments: Sequence[str],
    folder: str,
    tables: Sequence[Table],
    images: Sequence[tuple[str, bytes]],
) -> str:
    """The page: a title naming the experiments, the environment lines (what produced them), the
    folder the files are in, every table, then every plot as (file name, PNG bytes)."""
    title = "Analysis: " + ", ".join(experiments)
    meta = [f"<p>{html.escape(line)}</p>" for line in environments]
    meta.append(f"<p>Files (Markdown, CSV, PNG, this page): <code>{html.escape(folder)}</code></p>")
    body = [
        f"<h1>{html.escape(title)}</h1>",
        '<div class="meta">',
        *meta,
        "</div>",
        *(table_html(t) for t in tables),
    ]
    if images:
        body.append("<section>\n<h2>Plots</h2>")
        body.extend(image_html(name, png) for name, png in images)
        body.append("</section>")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def read_images(paths: Sequence[str]) -> list[tuple[str, bytes]]:
    """(file name, bytes) of each PNG the analysis wrote, never read through a symbolic link."""
    out = []
    for path in paths:
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as f:
            out.append((os.path.basename(path), f.read()))
    return out
