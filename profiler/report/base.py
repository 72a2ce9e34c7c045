"""The renderer base class and registry: one module per renderer, chosen by name or suffix."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, ClassVar

from profiler.errors import UsageError
from profiler.report.source import Source

FORMATS = ("terminal", "markdown", "json", "yaml", "smp", "html")
SUFFIXES = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".json": "json",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".html": "html",
    ".htm": "html",
    ".txt": "terminal",
}


class Renderer:
    """Turns a recognised source into text (a terminal view, a file's content)."""

    name: ClassVar[str]

    def __init__(self, **options: Any) -> None:
        self.options = options

    def render(self, src: Source) -> str:
        raise NotImplementedError


def format_for(fmt: str | None, output: Path | None) -> str:
    """``--format`` wins; else the suffix of ``-o``; else the terminal view."""
    if fmt is not None:
        fmt = fmt.lower()
        if fmt not in FORMATS:
            raise UsageError(f"bad --format {fmt!r}: one of {', '.join(FORMATS)}")
        return fmt
    if output is None:
        return "terminal"
    try:
        return SUFFIXES[output.suffix.lower()]
    except KeyError:
        raise UsageError(
            f"cannot tell the format from {output.name!r}: give --format or use one of "
            f"{', '.join(sorted(SUFFIXES))}"
        ) from None


def get(name: str, **options: Any) -> Renderer:
    """The renderer called ``name`` (its module is ``profiler.report.<name>``)."""
    if name not in FORMATS:
        raise UsageError(f"no renderer {name!r}: one of {', '.join(FORMATS)}")
    module = importlib.import_module(f"profiler.report.{name}")
    cls: type[Renderer] = module.RENDERER
    return cls(**options)
