"""``smp-profiler report FILE``: show a result file, or write it in another format;
``report --prometheus URL``: the cluster-wide bundle from the DaemonSet's metrics."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from profiler.commands import exits
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


def main(
    file: Annotated[
        Path | None,
        typer.Argument(help="A capture, a run bundle, fortio or Nighthawk JSON, or SMP results."),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format", help="terminal|markdown|json|yaml|smp|html (default: by the -o suffix)."
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File to write (default: stdout).")
    ] = None,
    width: Annotated[int | None, WIDTH] = None,
    prometheus: Annotated[
        str | None,
        typer.Option(help="Prometheus URL: the cluster-wide bundle from the DaemonSet's metrics."),
    ] = None,
    start: Annotated[
        str | None, typer.Option(help="Window start (RFC 3339, Unix seconds, now-15m).")
    ] = None,
    end: Annotated[str, typer.Option(help="Window end, with --prometheus.")] = "now",
    namespace: Annotated[
        str | None, typer.Option(help="Only this namespace's pods, with --prometheus.")
    ] = None,
) -> int:
    """Show a result file (terminal, markdown, JSON, YAML, SMP documents, HTML with plots)."""
    if file is None or prometheus is not None:
        return cluster_main(prometheus, start, end, namespace, output, fmt, file)
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


def cluster_main(
    prometheus: str | None,
    start: str | None,
    end: str = "now",
    namespace: str | None = None,
    output: Path | None = None,
    fmt: str | None = None,
    file: Path | None = None,
    now: float | None = None,
) -> int:
    """``report --prometheus URL --start T [--end T] [--namespace NS] [-o FILE]``."""
    from profiler.daemon.cluster import cluster_bundle, parse_time
    from profiler.daemon.promql import Prometheus
    from profiler.smp.bundle import write_document

    if prometheus is None:
        if start is not None or namespace is not None:
            raise UsageError("--start and --namespace go with --prometheus URL")
        raise UsageError("report needs a FILE, or --prometheus URL --start T")
    if file is not None:
        raise UsageError("report reads a FILE or queries --prometheus, not both")
    if start is None:
        raise UsageError("--prometheus needs --start (e.g. --start now-15m)")
    if not prometheus.startswith(("http://", "https://")):
        raise UsageError(f"--prometheus needs an http(s) URL, not '{prometheus}'")
    if fmt not in (None, "json", "yaml"):
        raise UsageError(f"--format {fmt} with --prometheus: json or yaml")
    output = output or Path("cluster.json")
    t = time.time() if now is None else now
    t0, t1 = parse_time(start, t), parse_time(end, t)
    if t1 <= t0:
        raise UsageError("--end must be after --start")
    doc = cluster_bundle(Prometheus(prometheus), t0, t1, namespace)
    try:
        write_document(doc, output, fmt)
    except OSError as e:
        raise UsageError(f"cannot write {output}: {e.strerror or e}") from None
    sc = doc["details"]["sidecar"]
    total = doc["details"]["legs"].get("sidecar_total", {})
    print(
        f"{output}: {sc['count']} sidecars, {sc['requests']:.0f} requests ({sc['rps']} req/s), "
        f"{sc['cpu_mcores']} mcores, {sc['mem_mb']} MiB, "
        f"sidecar_total p50 {total.get('p50_ms')} ms p99 {total.get('p99_ms')} ms",
        file=sys.stderr,
    )
    return 0


WIDTH = typer.Option(help="Terminal width of the view (default: the terminal's).")


command = exits(main)
