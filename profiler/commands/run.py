"""``smp-profiler run``: a load sweep with a capture per step, written as a bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from profiler.commands import exits
from profiler.errors import TooManyErrors, UsageError

FORMATS = ("json", "yaml")


def _seconds(text: str, option: str) -> float:
    from profiler.testbed.config import parse_duration

    try:
        return parse_duration(text)
    except UsageError:
        raise UsageError(f"bad {option} {text!r}: use e.g. 10s, 500ms, 1m") from None


def main(
    target: Annotated[str | None, typer.Option(help="URL to load (http://host:port/path).")] = None,
    rates: Annotated[str, typer.Option(help="Rate steps in req/s, e.g. 100,500,1000.")] = (
        "100,500,1000"
    ),
    step_duration: Annotated[str, typer.Option(help="Measured time per step, e.g. 10s.")] = "10s",
    warmup: Annotated[str, typer.Option(help="Load before each step, not measured.")] = "2s",
    repeat: Annotated[int, typer.Option(help="Repetitions of every step.")] = 1,
    load_generator: Annotated[
        str, typer.Option(help="builtin|wrk|hey|fortio|nighthawk.")
    ] = "builtin",
    connections: Annotated[int, typer.Option(help="Connections of the load generator.")] = 16,
    protocol: Annotated[
        str, typer.Option(help="http1|http2|grpc (h2c and gRPC: the builtin generator).")
    ] = "http1",
    sidecar_pid: Annotated[
        list[int] | None, typer.Option("--sidecar-pid", help="Sidecar PID to capture (repeatable).")
    ] = None,
    app_pid: Annotated[
        list[int] | None, typer.Option("--app-pid", help="App PID to capture too (repeatable).")
    ] = None,
    testbed: Annotated[
        Path | None, typer.Option(help="Testbed state dir: target, netns and PIDs from it.")
    ] = None,
    baseline_target: Annotated[
        str | None, typer.Option(help="The same service without the sidecar (A/B).")
    ] = None,
    baseline_testbed: Annotated[
        Path | None, typer.Option(help="Testbed state dir of the no-sidecar baseline.")
    ] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Result bundle to write.")] = Path(
        "result.json"
    ),
    fmt: Annotated[
        str | None, typer.Option("--format", help="json|yaml (default: by the suffix of -o).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the bootstrap.")] = None,
    max_error_rate: Annotated[
        float,
        typer.Option(help="Exit 6 (results written) when a step fails more requests (0.01 = 1%)."),
    ] = 0.01,
) -> int:
    """Drive load at fixed rates, capture each step, and write SMP results."""
    from profiler import capabilities, outputs, runner
    from profiler.commands.console import RichReporter, console, queue_summary, summary_table
    from profiler.model import RunConfig, dumps
    from profiler.report.source import bundle_source
    from profiler.smp.bundle import bundle_json

    if fmt is not None and fmt not in FORMATS:
        raise UsageError(f"bad --format {fmt!r}: use json or yaml")
    cfg = RunConfig(
        target=target or "",
        rates=runner.parse_rates(rates),
        step_duration_s=_seconds(step_duration, "--step-duration"),
        warmup_s=_seconds(warmup, "--warmup"),
        repeat=repeat,
        generator=load_generator,
        connections=connections,
        protocol=protocol,
        baseline_target=baseline_target,
        sidecar_pids=list(sidecar_pid or []),
        app_pids=list(app_pid or []),
        testbed=str(testbed) if testbed else None,
        baseline_testbed=str(baseline_testbed) if baseline_testbed else None,
        max_error_rate=max_error_rate,
    )
    outputs.check(output)
    if testbed or baseline_testbed:
        capabilities.require_admin("run in a testbed's network namespaces")
    cfg, mesh = runner.resolve(cfg)
    if cfg.sidecar_pids or cfg.app_pids:
        capabilities.require_bpf("run")
    out = console()
    used = fmt or ("yaml" if output.suffix in (".yaml", ".yml") else "json")
    try:
        bundle = runner.execute(cfg, mesh, reporter=RichReporter(out), seed=seed)
    except runner.RunInterrupted as stop:
        # what was measured is written before anything else is said
        doc = bundle_json(stop.bundle)
        written = outputs.save_text(output, dumps(doc, used))
        out.print(summary_table(doc))
        if (queue := queue_summary(bundle_source(written, stop.bundle, doc, doc))) is not None:
            out.print(queue)
        for note in doc["details"]["notes"]:
            out.print(f"[yellow]note:[/] {note}")
        out.print(f"wrote {written} ({used}): PARTIAL, the run was interrupted")
        if isinstance(stop.cause, KeyboardInterrupt):
            return 130
        raise stop.cause from None
    doc = bundle_json(bundle)
    written = outputs.save_text(output, dumps(doc, used))  # never lost: a fallback if need be
    out.print(summary_table(doc))
    if (queue := queue_summary(bundle_source(written, bundle, doc, doc))) is not None:
        out.print(queue)
    for note in doc["details"]["notes"]:
        out.print(f"[yellow]note:[/] {note}")
    out.print(f"wrote {written} ({used})")
    check_error_rate(doc, cfg.max_error_rate)
    return 0


def check_error_rate(doc: dict[str, Any], limit: float) -> None:
    """TooManyErrors (exit 6) when a step's mesh or baseline failed more than ``limit``."""
    from profiler.runner import rate_label

    worst: tuple[float, str] | None = None
    for step in doc["details"]["steps"]:
        for role in ("mesh", "baseline"):
            ld = step.get(role)
            if ld and ld["error_rate"] > limit and (worst is None or ld["error_rate"] > worst[0]):
                worst = (ld["error_rate"], f"{role} at {rate_label(step['rate_asked'])} req/s")
    if worst is not None:
        raise TooManyErrors(
            f"error rate {worst[0]:.2%} ({worst[1]}) is above --max-error-rate {limit:.2%}: "
            "the results are written, but their latency and rates are not the service's"
        )


command = exits(main)
