"""The terminal side of a run, shared by ``run`` and ``demo``: the progress of the windows on
stderr and the summary table of a bundle's documents."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.console import Console, RenderableType
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from profiler.model import StepRecord
from profiler.runner import Window, rate_label

if TYPE_CHECKING:
    from profiler.report.source import Source


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


def queue_summary(src: Source) -> RenderableType | None:
    """The run's "Sidecar queue vs work" table, as its report shows it; None when it has no
    proxy legs."""
    from profiler.report.tables import queue_table
    from profiler.report.terminal import rich_table
    from profiler.report.view import view

    t = queue_table(view(src))
    return None if t is None else rich_table(t)


def _f(x: float | None, nd: int = 3) -> str:
    return "-" if x is None else f"{x:.{nd}f}"
