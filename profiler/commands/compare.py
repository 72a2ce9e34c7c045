"""``smp-profiler compare A B [...]``: results side by side, differences and their significance."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from profiler.commands import exits
from profiler.commands.report import WIDTH
from profiler.errors import UsageError

FORMATS = ("terminal", "markdown", "json")


def main(
    files: Annotated[list[Path], typer.Argument(help="Two or more bundles or captures.")],
    fmt: Annotated[str, typer.Option("--format", help="terminal|markdown|json.")] = "terminal",
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File to write (default: stdout).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Compare even when CPU model or core count differ.")
    ] = False,
    width: Annotated[int | None, WIDTH] = None,
) -> int:
    """Put two or more results side by side, with the differences and their significance."""
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


command = exits(main)
