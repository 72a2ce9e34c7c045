"""``smp-profiler report FILE``: show a result file, or write it in another format."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from profiler.errors import UsageError


def term_width() -> int:
    """The terminal's width; 120 columns when not on a terminal (a pipe, a file)."""
    return shutil.get_terminal_size((120, 24)).columns


def write(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text)
    except OSError as e:
        raise UsageError(f"cannot write {output}: {e.strerror or e}") from None
    print(f"wrote {output}", file=sys.stderr)


def main(file: Path, fmt: str | None, output: Path | None, width: int | None) -> int:
    from profiler import report

    name = report.format_for(fmt, output)
    src = report.load(file)
    opts: dict[str, object] = {}
    if name == "terminal":
        opts = {"width": width or term_width(), "color": output is None and sys.stdout.isatty()}
    elif name == "smp":
        opts = {"yaml": output is not None and output.suffix.lower() in (".yaml", ".yml")}
    write(report.get(name, **opts).render(src), output)
    return 0
