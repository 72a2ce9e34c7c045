"""HTML: one self-contained file (inline CSS and SVG, no script, nothing fetched at view time)."""

from __future__ import annotations

import json
from html import escape
from typing import Any

from profiler.report import plots
from profiler.report.base import Renderer
from profiler.report.source import Source
from profiler.report.tables import Document, document
from profiler.report.view import CaptureView, RunView, view

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1180px; color: #222; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
.meaning { font-size: 1.15em; background: #eef4fb; border-left: 4px solid #4c78a8;
  padding: .6em 1em; }
table { border-collapse: collapse; margin: .4em 0 1em; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: .1em 1em; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; }
.plots { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; }
figure { margin: 0; border: 1px solid #ddd; padding: .4em; }
figure svg { width: 100%; height: auto; }
.missing { color: #777; font-style: italic; }
pre { background: #f7f7f7; padding: 1em; overflow: auto; font-size: 12px; }
"""

PLOTS = (
    ("legs", "Latency breakdown per leg", plots.legs_stacked),
    ("queue", "Sidecar queue vs work per rate step (per sidecar in a capture)", plots.queue_work),
    ("cdf", "Latency CDFs, mesh vs baseline", plots.cdfs),
    ("cost", "Sidecar CPU and memory vs request rate", plots.cost),
    ("overhead", "Overhead vs rate, with confidence bands", plots.overhead),
)


def _table_html(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _doc_html(doc: Document) -> list[str]:
    out = [f"<h1>{escape(doc.title)}</h1>", f'<p class="meaning">{escape(doc.meaning)}</p>']
    out.append('<dl class="facts">')
    out += [f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in doc.facts]
    out.append("</dl>")
    for t in doc.tables:
        out += [f"<h2>{escape(t.title)}</h2>", _table_html(t.headers, t.rows)]
    if doc.footer:
        out.append("<ul>" + "".join(f"<li>{escape(x)}</li>" for x in doc.footer) + "</ul>")
    return out


def _plots_html(v: RunView | CaptureView) -> list[str]:
    out = ["<h2>Plots</h2>", '<div class="plots">']
    for key, title, fn in PLOTS:
        svg = None
        if isinstance(v, RunView) or fn in (plots.legs_stacked, plots.queue_work, plots.cdfs):
            svg = fn(v)  # type: ignore[arg-type]
        body = (
            svg if svg is not None else f'<p class="missing">{escape(title)}: not in this file</p>'
        )
        out.append(
            f'<figure id="plot-{key}" data-plot="{key}">{body}'
            f"<figcaption>{escape(title)}</figcaption></figure>"
        )
    out.append("</div>")
    return out


def _smp_html(src: Source) -> list[str]:
    docs: Any = None
    if src.documents is not None:
        from profiler.report.smp import DOCS

        docs = {k: src.documents[k] for k in DOCS if k in src.documents and k != "details"}
    if not docs:
        return [
            '<p class="missing">No SMP documents: a capture is one window; '
            "<code>smp-profiler run</code> writes them.</p>"
        ]
    text = escape(json.dumps(docs, indent=2))
    return [
        '<details id="smp-documents"><summary>SMP v0.6.1 documents</summary>',
        f"<pre>{text}</pre></details>",
    ]


class Html(Renderer):
    name = "html"

    def render(self, src: Source) -> str:
        v = view(src)
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{escape(v.title)}</title>",
            '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
            "style-src 'unsafe-inline'; img-src data:\">",
            f"<style>{CSS}</style></head><body>",
            *_doc_html(document(v)),
            *_plots_html(v),
            "<h2>SMP documents</h2>",
            *_smp_html(src),
            "</body></html>",
        ]
        return "\n".join(parts) + "\n"


RENDERER = Html
