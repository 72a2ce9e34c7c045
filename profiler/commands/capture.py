"""``smp-profiler capture``: trace sidecars (and apps) over a window, write capture.json."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from profiler import outputs
from profiler.commands import exits
from profiler.discovery import targets as resolve_targets
from profiler.errors import Interrupted, OutputNotWritable, UsageError

if TYPE_CHECKING:
    from profiler.capture.session import CaptureSession


def testbed_targets(testbed: str) -> tuple[list[int], list[int]]:
    """(sidecar PIDs, app PIDs) of a local testbed, by state dir or by name: the server's
    Envoy (and the client's, if it has one) and the server's app."""
    from profiler.testbed import Testbed, TestbedConfig

    d = Path(testbed)
    if not d.is_dir() and "/" not in testbed:
        d = TestbedConfig(name=testbed).resolved_state_dir
    st = Testbed.load(d).state
    sidecars = [p for p in (st.server.envoy_pid, st.client.envoy_pid) if p]
    if not sidecars:
        raise UsageError(f"testbed '{st.name}' has no sidecar (--sidecar none): nothing to trace")
    return sidecars, [st.server.app_pid] if st.server.app_pid else []


def main(
    pid: Annotated[
        list[int] | None,
        typer.Option("--pid", help="PID to trace (repeatable); proxies by name are sidecars."),
    ] = None,
    sidecar_pid: Annotated[
        list[int] | None, typer.Option("--sidecar-pid", help="Trace this PID as a sidecar.")
    ] = None,
    cgroup: Annotated[
        list[str] | None, typer.Option("--cgroup", help="A pod or container cgroup (v2 path).")
    ] = None,
    container_id: Annotated[
        list[str] | None, typer.Option("--container-id", help="A container of the pod.")
    ] = None,
    sidecar: Annotated[
        str, typer.Option(help="auto: the proxy (envoy, linkerd2-proxy) must be among them.")
    ] = "auto",
    duration: Annotated[str, typer.Option(help="How long to capture, e.g. 10s.")] = "10s",
    output: Annotated[Path, typer.Option("-o", "--output", help="Capture file to write.")] = Path(
        "capture.json"
    ),
    spans: Annotated[
        bool, typer.Option(help="Also write the per-request spans file (<output>.spans.csv).")
    ] = True,
    ringbuf_pages: Annotated[int, typer.Option(help="Ring buffer size in pages.")] = 256,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    testbed: Annotated[
        str | None,
        typer.Option(help="A local testbed (state dir or name): its sidecars and app."),
    ] = None,
) -> int:
    """Trace sidecar (and app) processes: per-leg latency, CPU and memory -> a capture file.

    Exit codes: 0 complete, 1 incomplete (a target exited), 130 interrupted (what was
    measured is written), 73 the output could not be written (saved elsewhere, said where)."""
    pids, sidecar_pids = list(pid or []), list(sidecar_pid or [])
    cgroups, container_ids = list(cgroup or []), list(container_id or [])
    from profiler import capabilities
    from profiler.testbed.config import parse_duration

    seconds = parse_duration(duration)
    if seconds <= 0:
        raise UsageError("--duration must be positive")
    if ringbuf_pages < 1 or ringbuf_pages & (ringbuf_pages - 1):
        raise UsageError("--ringbuf-pages must be a power of two")
    if testbed is not None:
        capabilities.require_bpf("capture")
        tb_sidecars, tb_apps = testbed_targets(testbed)
        sidecar_pids, pids = [*sidecar_pids, *tb_sidecars], [*pids, *tb_apps]
    t = resolve_targets.resolve(pids, sidecar_pids, cgroups, container_ids, sidecar)
    outputs.check(output)
    spans_file = outputs.check(output.with_suffix(".spans.csv")) if spans else None
    capabilities.require_bpf("capture")

    from profiler.capture import CaptureConfig, start_capture

    interrupted = threading.Event()

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        interrupted.set()

    # Installed before the probes compile, and kept until the file is written: a Ctrl-C
    # during start-up stops at once, one during the window writes what was measured.
    old = signal.signal(signal.SIGINT, on_signal)
    old_term = signal.signal(signal.SIGTERM, on_signal)
    try:
        session = _start(
            lambda: start_capture(
                CaptureConfig(
                    sidecar_pids=t.sidecars,
                    app_pids=t.apps,
                    duration_s=seconds,
                    ringbuf_pages=ringbuf_pages,
                    spans_file=spans_file,
                )
            ),
            interrupted,
        )
        print(
            f"smp-profiler: attached to {len(t.sidecars)} sidecar(s) and {len(t.apps)} "
            f"app(s); capturing for {duration} (Ctrl-C stops and writes what was measured)",
            file=sys.stderr,
            flush=True,
        )
        reason = _run(session, seconds, interrupted.is_set, quiet)
        doc = session.stop(incomplete_reason=reason)
        written = outputs.save_text(output, json.dumps(doc, indent=1) + "\n")
    finally:
        signal.signal(signal.SIGINT, old)
        signal.signal(signal.SIGTERM, old_term)
    _summary(doc, written)
    if written != output:
        return OutputNotWritable.exit_code
    if reason == "interrupted":
        return Interrupted.exit_code
    return 0 if doc["complete"] else 1


def _start(start: Callable[[], CaptureSession], interrupted: threading.Event) -> CaptureSession:
    """Compile and attach (seconds of BCC's compiler, which no signal interrupts) in a
    thread, so that Ctrl-C during start-up is honoured at once. Nothing was measured then,
    and nothing is written; the unfinished compile dies with the process."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            box["session"] = start()
        except BaseException as e:  # re-raised in the caller's thread
            box["error"] = e
        done.set()

    # BCC's noise is caught by pointing fd 2 at a file while it compiles: keep the real one
    stderr = os.dup(2)
    try:
        threading.Thread(target=work, name="smp-capture-start", daemon=True).start()
        while not done.wait(0.05):
            if interrupted.is_set():
                sys.stdout.flush()
                os.write(
                    stderr,
                    b"smp-profiler: interrupted during start-up: nothing was measured, "
                    b"no file written\n",
                )
                # BCC's compiler is still running in the other thread and cannot be stopped;
                # a normal interpreter exit would run C++ destructors under it. The kernel
                # closes the probe's file descriptors, so nothing stays attached.
                os._exit(Interrupted.exit_code)
    finally:
        os.close(stderr)
    if "error" in box:
        raise box["error"]
    session: CaptureSession = box["session"]
    return session


def _run(
    session: CaptureSession, seconds: float, should_stop: Callable[[], bool], quiet: bool
) -> str | None:
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


command = exits(main)
