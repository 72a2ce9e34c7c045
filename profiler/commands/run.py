"""``smp-profiler run``: a load sweep with a capture per step, written as a bundle."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from profiler.errors import TooManyErrors, UsageError
from profiler.model import RunConfig, StepRecord, dumps
from profiler.runner import Window, rate_label

FORMATS = ("json", "yaml")


def _seconds(text: str, option: str) -> float:
    from profiler.testbed.config import parse_duration

    try:
        return parse_duration(text)
    except UsageError:
        raise UsageError(f"bad {option} {text!r}: use e.g. 10s, 500ms, 1m") from None


class RichReporter:
    """The progress of the whole run: window, rate, phase, elapsed; a line per window."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[last]}"),
            console=console,
            transient=False,
        )
        self.task: Any = None
        self.total = 0
        self.t0 = 0.0

    def begin(self, windows: list[Window], seconds: float) -> None:
        self.total = len(windows)
        self.t0 = time.monotonic()
        self.progress.start()
        self.task = self.progress.add_task("starting", total=len(windows), last="")
        self.console.print(f"{len(windows)} windows, about {seconds:.0f} s of load")

    def start(self, window: Window, phase: str) -> None:
        rates = f"{rate_label(window.rate)} req/s"
        done = self.progress.tasks[0].completed
        self.progress.update(
            self.task,
            description=f"[{int(done) + 1}/{self.total}] step {window.step} {window.role} "
            f"{rates} rep {window.repetition} {phase}",
        )

    def done(self, window: Window, record: StepRecord) -> None:
        load = record.load
        p99 = load.percentiles_ms.get(99.0)
        p50 = load.percentiles_ms.get(50.0)
        extra = ""
        scs = (record.capture or {}).get("sidecars", [])
        if record.capture and scs:
            # over the load's own seconds: the capture window is longer (start-up, collection)
            cpu = sum(float(s.get("cpu_seconds") or 0) for s in scs)
            mc = cpu / load.duration_s * 1000 if load.duration_s > 0 else 0.0
            extra = f" sidecar {mc:.0f} mcores, drops {record.capture.get('drops', 0)}"
        line = (
            f"step {window.step} {window.role:8} {rate_label(window.rate):>7} req/s"
            f" rep {window.repetition}:"
            f" achieved {load.rate_achieved:8.1f}  p50 {_ms(p50)}  p99 {_ms(p99)}"
            f"  errors {load.error_rate:.1%}{extra}"
        )
        self.progress.console.print(line)
        self.progress.update(self.task, advance=1, last=f"p99 {_ms(p99)}")

    def end(self) -> None:
        self.progress.stop()


def console() -> Console:
    """stderr; wide enough for the summary when it is not a terminal (logs, CI)."""
    c = Console(stderr=True)
    if not c.is_terminal:
        c.width = max(c.width, 140)
    return c


def _ms(x: float | None) -> str:
    return "   -    " if x is None else f"{x:7.3f}ms"


def summary_table(doc: dict[str, Any]) -> Table:
    """The terminal summary of a bundle's documents."""
    t = Table(title="smp-profiler run", title_justify="left")
    for col in (
        "rate",
        "achieved",
        "errors",
        "p50 ms",
        "p99 ms",
        "baseline p50",
        "A/B delta p50 [95% CI]",
        "eBPF sidecar p50",
        "eBPF mesh-added p50",
        "sidecar mcores",
        "CPU-ms/1k req",
        "mem MiB",
    ):
        t.add_column(col, justify="right")
    for step in doc["details"]["steps"]:
        lat = step["mesh"]["latency"]
        base = step.get("baseline")
        ov = step.get("overhead")
        sc = step.get("sidecar") or {}
        total = (sc.get("legs") or {}).get("sidecar_total") or {}
        added = (sc.get("legs") or {}).get("mesh_added") or {}
        t.add_row(
            rate_label(step["rate_asked"]),
            f"{step['mesh']['rate_achieved']:.1f}",
            f"{step['mesh']['error_rate']:.1%}",
            _f(lat.get("p50_ms")),
            _f(lat.get("p99_ms")),
            _f(base["latency"].get("p50_ms")) if base else "-",
            f"{ov['p50']['delta_ms']:+.3f} [{ov['p50']['ci_ms'][0]:+.3f}, "
            f"{ov['p50']['ci_ms'][1]:+.3f}]"
            if ov
            else "-",
            _f(total.get("p50_ms")),
            _f(added.get("p50_ms")),
            "off path" if sc.get("error") else _f(sc.get("cpu_mcores"), 0),
            _f(sc.get("cpu_ms_per_1k_requests"), 1),
            _f((sc.get("mem_mb") or {}).get("rss"), 1),
        )
    mm = doc["details"]["meshmark"]
    score = "n/a" if mm["score"] is None else f"{mm['score']:.1f}"
    t.caption = f"MeshMark {score} (classes: {', '.join(mm['classes']) or 'none'})"
    return t


def _f(x: float | None, nd: int = 3) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def main(
    *,
    target: str | None,
    rates: str,
    step_duration: str,
    warmup: str,
    repeat: int,
    load_generator: str,
    connections: int,
    sidecar_pid: list[int],
    app_pid: list[int],
    testbed: Path | None,
    baseline_target: str | None,
    baseline_testbed: Path | None,
    output: Path,
    fmt: str | None,
    seed: int | None = None,
    max_error_rate: float = 0.01,
) -> int:
    from profiler import capabilities, outputs, runner

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
        baseline_target=baseline_target,
        sidecar_pids=list(sidecar_pid),
        app_pids=list(app_pid),
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
        doc = stop.bundle.to_json()
        written = outputs.save_text(output, dumps(doc, used))
        out.print(summary_table(doc))
        for note in doc["details"]["notes"]:
            out.print(f"[yellow]note:[/] {note}")
        out.print(f"wrote {written} ({used}): PARTIAL, the run was interrupted")
        if isinstance(stop.cause, KeyboardInterrupt):
            return 130
        raise stop.cause from None
    doc = bundle.to_json()
    written = outputs.save_text(output, dumps(doc, used))  # never lost: a fallback if need be
    out.print(summary_table(doc))
    for note in doc["details"]["notes"]:
        out.print(f"[yellow]note:[/] {note}")
    out.print(f"wrote {written} ({used})")
    check_error_rate(doc, cfg.max_error_rate)
    return 0


def check_error_rate(doc: dict[str, Any], limit: float) -> None:
    """TooManyErrors (exit 6) when a step's mesh or baseline failed more than ``limit``."""
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
