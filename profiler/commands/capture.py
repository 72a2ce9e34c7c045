"""``smp-profiler capture``: trace sidecars (and apps) over a window, write capture.json."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from types import FrameType

from profiler.capture import targets as resolve_targets
from profiler.errors import UsageError


def main(
    pids: list[int],
    sidecar_pids: list[int],
    cgroups: list[str],
    container_ids: list[str],
    sidecar: str,
    duration: str,
    output: Path,
    spans: bool = True,
    ringbuf_pages: int = 256,
    quiet: bool = False,
) -> int:
    from profiler.testbed.config import parse_duration

    seconds = parse_duration(duration)
    if seconds <= 0:
        raise UsageError("--duration must be positive")
    if ringbuf_pages < 1 or ringbuf_pages & (ringbuf_pages - 1):
        raise UsageError("--ringbuf-pages must be a power of two")
    t = resolve_targets.resolve(pids, sidecar_pids, cgroups, container_ids, sidecar)
    output.parent.mkdir(parents=True, exist_ok=True)
    spans_file = output.with_suffix(".spans.csv") if spans else None

    from profiler.capture import CaptureConfig, start_capture

    interrupted = {"flag": False}

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        interrupted["flag"] = True

    # Installed before the probes compile, so a Ctrl-C at any point still writes a file.
    old = signal.signal(signal.SIGINT, on_signal)
    old_term = signal.signal(signal.SIGTERM, on_signal)
    try:
        session = start_capture(
            CaptureConfig(
                sidecar_pids=t.sidecars,
                app_pids=t.apps,
                duration_s=seconds,
                ringbuf_pages=ringbuf_pages,
                spans_file=spans_file,
            )
        )
        print(
            f"smp-profiler: attached to {len(t.sidecars)} sidecar(s) and {len(t.apps)} "
            f"app(s); capturing for {duration} (Ctrl-C stops and writes what was measured)",
            file=sys.stderr,
            flush=True,
        )
        reason = _run(session, seconds, lambda: interrupted["flag"], quiet)
    finally:
        signal.signal(signal.SIGINT, old)
        signal.signal(signal.SIGTERM, old_term)
    doc = session.stop(incomplete_reason=reason)
    output.write_text(json.dumps(doc, indent=1) + "\n")
    _summary(doc, output)
    return 0 if doc["complete"] else 1


def _run(session: object, seconds: float, stop: object, quiet: bool) -> str | None:
    from profiler.capture.session import CaptureSession

    assert isinstance(session, CaptureSession)
    should_stop = stop if callable(stop) else (lambda: False)
    if quiet or not sys.stderr.isatty():
        return session.run(should_stop)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("capturing"),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[spans]} requests, {task.fields[drops]} dropped"),
        transient=True,
    ) as progress:
        task = progress.add_task("capture", total=seconds, spans=0, drops=0)

        def tick(s: CaptureSession) -> None:
            progress.update(
                task, completed=min(s.elapsed, seconds), spans=s.spans(), drops=s.engine.drops()
            )

        return session.run(should_stop, tick)


def _summary(doc: dict[str, object], output: Path) -> None:
    sidecars = doc["sidecars"]
    assert isinstance(sidecars, list)
    state = "complete" if doc["complete"] else f"INCOMPLETE ({doc['incomplete_reason']})"
    print(
        f"capture {state}: {doc['duration_s']:.1f} s, drops {doc['drops']} -> {output}",
        file=sys.stderr,
    )
    for s in sidecars:
        legs = s["legs"]
        p50 = legs["sidecar_total"]["p50_ms"]
        p50_text = "n/a" if p50 is None else f"{p50:.3f} ms"
        print(
            f"  sidecar {s['comm']} pid {s['pid']}: {s['requests']} requests, "
            f"sidecar_total p50 {p50_text}, {s['cpu_mcores']:.0f} mcores",
            file=sys.stderr,
        )
