"""The ``smp-profiler`` command line. It only assembles: each command declares its options in
``profiler/commands/<name>.py`` and delegates from there.

Heavy imports (bcc, numpy, kubernetes) happen inside the command that needs them, so
``smp-profiler --help`` is instant and works without BCC or root.
"""

from __future__ import annotations

import sys
import traceback
from typing import Annotated

import typer

from profiler import __version__
from profiler.commands import capture, compare, daemon, demo, doctor, report, run, testbed
from profiler.errors import Interrupted, PermissionDenied, SmpError

app = typer.Typer(
    name="smp-profiler",
    help="Measure what a service-mesh sidecar really costs, per request and per pod, with eBPF.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
for name, module in (
    ("doctor", doctor),
    ("capture", capture),
    ("run", run),
    ("report", report),
    ("compare", compare),
    ("demo", demo),
    ("daemon", daemon),
):
    app.command(name)(module.command)
app.add_typer(testbed.app, name="testbed")

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        print(f"smp-profiler {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    _state["debug"] = debug


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI; known errors become one line on stderr and an exit code."""
    try:
        app(args=argv, prog_name="smp-profiler")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except SmpError as e:
        if _state["debug"]:
            traceback.print_exc()
        print(f"smp-profiler: error: {e}", file=sys.stderr)
        return e.exit_code
    except PermissionError as e:  # a file or a syscall only root may use: same as PermissionDenied
        if _state["debug"]:
            traceback.print_exc()
        what = f"{e.strerror}: {e.filename}" if e.filename else (e.strerror or str(e))
        print(f"smp-profiler: error: {what} (run with sudo)", file=sys.stderr)
        return PermissionDenied.exit_code
    except KeyboardInterrupt:
        print("smp-profiler: interrupted", file=sys.stderr)
        return Interrupted.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
