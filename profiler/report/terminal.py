"""The terminal view (rich): what an SRE reads in ten seconds."""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table as RichTable

from profiler.report.base import Renderer
from profiler.report.source import Source
from profiler.report.tables import Document, Table, document
from profiler.report.view import view


def _numeric(cell: str) -> bool:
    return cell[:1] in ("+", "-", ".") or cell[:1].isdigit()


def rich_table(t: Table) -> RichTable:
    """A report table for a rich console: numeric columns right-aligned."""
    rt = RichTable(title=t.title, title_justify="left", header_style="bold")
    for i, h in enumerate(t.headers):
        numeric = all(_numeric(row[i]) for row in t.rows)
        rt.add_column(h, justify="right" if numeric else "left")
    for row in t.rows:
        rt.add_row(*row)
    return rt


def render_document(doc: Document, width: int | None = None, color: bool = False) -> str:
    buf = io.StringIO()
    out = Console(
        file=buf,
        width=width,
        color_system="auto" if color else None,
        force_terminal=color,
        no_color=not color,
        highlight=False,
        emoji=False,
    )
    out.print(f"[bold]{doc.title}[/]", markup=True)
    for label, value in doc.facts:
        out.print(f"  {label}: {value}", markup=False)
    for t in doc.tables:
        out.print(rich_table(t))
    out.print(f"[bold]{doc.meaning}[/]", markup=True)
    for line in doc.footer:
        out.print(line, markup=False)
    return "".join(line.rstrip() + "\n" for line in buf.getvalue().splitlines())


class Terminal(Renderer):
    name = "terminal"

    def render(self, src: Source) -> str:
        width = self.options.get("width")
        return render_document(document(view(src)), width, bool(self.options.get("color")))


RENDERER = Terminal
