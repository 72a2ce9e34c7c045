"""``smp-profiler doctor``: what this node can do, as a table or one JSON object."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from profiler import capabilities
from profiler.commands import exits


def main(
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> int:
    """Check what this node can do: privileges, BPF, BCC, tracepoints, uprobes, headers."""
    checks = capabilities.run_all()
    possible = capabilities.capture_possible(checks)
    method = _method(checks)
    if json_out:
        doc = {
            "checks": [c.to_json() for c in checks],
            "capture_possible": possible,
            "method": method,
        }
        print(json.dumps(doc, indent=2))
        return 0 if possible else 1

    from rich.console import Console
    from rich.table import Table

    table = Table(title="smp-profiler doctor", title_justify="left")
    table.add_column("check")
    table.add_column("", justify="center")
    table.add_column("detail", overflow="fold")
    for c in checks:
        required = c.name in capabilities.REQUIRED
        mark = "[green]ok[/]" if c.ok else ("[red]MISSING[/]" if required else "[yellow]no[/]")
        table.add_row(c.name, mark, c.detail)
    console = Console()
    console.print(table)
    console.print(f"method: sidecar probe on the {method['path']} path ({method['why']})")
    if "arrival" in method:
        console.print(f"arrival stamps: {method['arrival']} ({method['arrival_why']})")
    if possible:
        console.print("[green]Captures are possible on this node.[/]")
    else:
        names = ", ".join(c.name for c in capabilities.missing(checks))
        console.print(f"[red]Captures are not possible: missing {names}.[/]")
    return 0 if possible else 1


def _method(checks: list[capabilities.Check]) -> dict[str, str]:
    """Which sidecar probe path a capture here would run, and why (same answer as the
    loader's: ``capabilities.probe_path``, which honours SMP_PROBE_PATH)."""
    try:
        path, why = capabilities.probe_path()
    except ValueError as e:
        return {"path": "none", "why": str(e)}
    if not capabilities.capture_possible(checks):
        return {"path": "none", "why": "captures are not possible here"}
    arrival, arrival_why = capabilities.arrival_hook(path)
    _, _, xmit_why = capabilities.xmit_stamps()
    return {"path": path, "why": why, "arrival": arrival, "arrival_why": arrival_why,
            "writes": xmit_why}  # fmt: skip


command = exits(main)
