"""``smp-profiler compare A B [...]``: results side by side, differences and their significance."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from profiler.errors import UsageError

FORMATS = ("terminal", "markdown", "json")


def main(files: list[Path], fmt: str, output: Path | None, force: bool, width: int | None) -> int:
    from profiler.commands.report import term_width, write
    from profiler.report import compare, load, markdown, terminal

    if fmt not in FORMATS:
        raise UsageError(f"bad --format {fmt!r}: one of {', '.join(FORMATS)}")
    if len(files) < 2:
        raise UsageError("compare needs two or more files")
    sources = [load(f) for f in files]
    rows, notes = compare.compare(sources, force=force)
    if fmt == "json":
        text = json.dumps(compare.to_json(sources, rows, notes), indent=2) + "\n"
    else:
        doc = compare.document(sources, rows, notes)
        if fmt == "markdown":
            text = markdown.render_document(doc)
        else:
            color = output is None and sys.stdout.isatty()
            text = terminal.render_document(doc, width or term_width(), color)
    write(text, output)
    return 0
