"""Markdown: the same tables as the terminal view, for a pull request or a wiki page."""

from __future__ import annotations

from profiler.report.base import Renderer
from profiler.report.source import Source
from profiler.report.tables import Document, document
from profiler.report.view import view


def _cell(s: str) -> str:
    return s.replace("|", "\\|")


def render_document(doc: Document) -> str:
    lines = [f"# {doc.title}", ""]
    lines += [f"- **{label}**: {_cell(value)}" for label, value in doc.facts]
    for t in doc.tables:
        lines += ["", f"## {t.title}", ""]
        lines.append("| " + " | ".join(_cell(h) for h in t.headers) + " |")
        lines.append(
            "|" + "|".join("---" if i == 0 else "---:" for i in range(len(t.headers))) + "|"
        )
        lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in t.rows]
    lines += ["", f"**{doc.meaning}**"]
    if doc.footer:
        lines += [""] + [f"- {line}" for line in doc.footer]
    return "\n".join(lines) + "\n"


class Markdown(Renderer):
    name = "markdown"

    def render(self, src: Source) -> str:
        return render_document(document(view(src)))


RENDERER = Markdown
