"""A capture: attach to sidecars (and apps), measure over a window, write the document."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from profiler import __version__
from profiler.capture import document
from profiler.capture.engine import Engine, Target
from profiler.capture.memory import memory_of
from profiler.discovery.cgroups import cgroup_of
from profiler.discovery.procfs import comm
from profiler.errors import TargetNotFound
from profiler.probes.sidecar import F_DS_H2

T = TypeVar("T")


@dataclass
class CaptureConfig:
    sidecar_pids: list[int]
    app_pids: list[int] = field(default_factory=list)
    duration_s: float | None = 10.0
    ringbuf_pages: int | None = None  # None: the probe's one default (smp_common.h)
    spans_file: Path | None = None
    max_spans: int = 1_000_000


def _cgroup(pid: int) -> str | None:
    try:
        return cgroup_of(pid)
    except TargetNotFound:
        return None


class CaptureSession:
    """Attached probes over one window. ``stop()`` returns the capture document."""

    def __init__(self, config: CaptureConfig, engine: Engine | None = None) -> None:
        for pid in [*config.sidecar_pids, *config.app_pids]:
            if not os.path.exists(f"/proc/{pid}/stat"):
                raise TargetNotFound(f"no process with PID {pid}")
        self.config = config
        self._owns_engine = engine is None
        if engine is None:
            engine = Engine(
                keep_spans=True, ringbuf_pages=config.ringbuf_pages, max_spans=config.max_spans
            )
            for pid in config.sidecar_pids:
                engine.add_target(pid, "sidecar")
            for pid in config.app_pids:
                engine.add_target(pid, "app")
        else:
            engine.new_window(config.sidecar_pids, config.app_pids)
        self.engine = engine
        self._info: dict[int, dict[str, Any]] = {
            pid: {"comm": comm(pid), "cgroup": _cgroup(pid), "thread_comm": {}}
            for pid in [*config.sidecar_pids, *config.app_pids]
        }
        self._cpu0 = self.engine.cpu_ns()
        self._last_tick = 0.0
        self._last_mem = {pid: memory_of(pid) for pid in self._info}
        self.exited: list[int] = []
        self.start_wall = datetime.now(UTC)
        self.start = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def spans(self) -> int:
        return sum(t.requests for t in self.engine.targets.values())

    def poll(self, timeout_ms: int = 100) -> None:
        self.engine.poll(timeout_ms)
        now = time.monotonic()
        if now - self._last_tick < 1.0:
            return
        self._last_tick = now
        # once a second: who exited, memory, names of new threads
        cpu = self.engine.cpu_ns()
        for pid, info in self._info.items():
            if pid in self.exited:
                continue
            if not self.engine.alive(pid):
                self.exited.append(pid)
                continue
            mem = memory_of(pid)
            if mem is not None:
                self._last_mem[pid] = mem
            names = info["thread_comm"]
            for tid in cpu.get(pid, {}):
                if tid not in names:
                    names[tid] = comm(pid, tid)

    def during(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` (e.g. the load) in a thread while this thread consumes the events, so
        the ring buffer never fills while the window is open."""
        box: dict[str, Any] = {}

        def drive() -> None:
            try:
                box["result"] = fn()
            except BaseException as e:  # re-raised in the caller's thread
                box["error"] = e

        worker = threading.Thread(target=drive, name="smp-capture-load", daemon=True)
        worker.start()
        while worker.is_alive():
            self.poll(100)
        worker.join()
        if "error" in box:
            raise box["error"]
        result: T = box["result"]
        return result

    def targets_alive(self) -> bool:
        return len(self.exited) < len(self._info)

    def run(
        self,
        should_stop: Callable[[], bool] = lambda: False,
        on_tick: Callable[[CaptureSession], None] | None = None,
    ) -> str | None:
        """Poll until the duration is over, ``should_stop()`` or every target exited.
        Returns why it ended early (None when the window ran its course)."""
        duration = self.config.duration_s
        while True:
            if should_stop():
                return "interrupted"
            if duration is not None and self.elapsed >= duration:
                return None
            self.poll(100)
            if on_tick is not None:
                on_tick(self)
            if not self.targets_alive():
                return "every target exited: " + ", ".join(map(str, self.exited))

    def stop(self, incomplete_reason: str | None = None) -> dict[str, Any]:
        self.engine.drain()
        duration = self.elapsed
        end_wall = datetime.now(UTC)
        cpu1 = self.engine.cpu_ns()
        if self.exited and incomplete_reason is None:
            incomplete_reason = "target exited: " + ", ".join(map(str, self.exited))
        sidecars: list[dict[str, Any]] = []
        apps: list[dict[str, Any]] = []
        rows: list[tuple[str, np.ndarray]] = []
        for pid, t in self.engine.targets.items():
            entry = self._target_doc(pid, t, cpu1, duration)
            (sidecars if t.role == "sidecar" else apps).append(entry)
            rows.extend((t.role, chunk) for chunk in t.rows)
        spans_file = None
        if self.config.spans_file is not None:
            from profiler import outputs  # a failed write goes elsewhere, never lost

            written = outputs.save(self.config.spans_file, lambda p: document.write_spans(p, rows))
            spans_file = str(written)
        tls = sum(t.tls_downstream for t in self.engine.targets.values())
        h2 = sum(t.h2_downstream + t.h2_upstream for t in self.engine.targets.values())
        tls_up = sum(t.tls_upstream for t in self.engine.targets.values())
        burst = sum(t.tls_burst_downstream for t in self.engine.targets.values())
        doc: dict[str, Any] = {
            "kind": document.KIND,
            "format_version": document.FORMAT_VERSION,
            "smp_profiler_version": __version__,
            "complete": incomplete_reason is None,
            "incomplete_reason": incomplete_reason,
            "start_time": self.start_wall.isoformat(),
            "end_time": end_wall.isoformat(),
            "duration_s": round(duration, 6),
            "drops": self.engine.drops(),
            "method": _method(self.engine.method, tls - burst, h2, tls_up, burst),
            "probe_path": self.engine.probe_path,
            "sidecars": sidecars,
            "apps": apps,
            "spans_file": spans_file,
            "host": {"kernel": os.uname().release, "cpus": os.cpu_count()},
            "warnings": document.warnings(sidecars, apps),
        }
        if self._owns_engine:
            self.engine.close()
        return doc

    def _target_doc(
        self, pid: int, t: Target, cpu1: dict[int, dict[int, int]], duration: float
    ) -> dict[str, Any]:
        info = self._info[pid]
        before, after = self._cpu0.get(pid, {}), cpu1.get(pid, {})
        threads: list[dict[str, Any]] = []
        total_ns = 0
        for tid, ns in sorted(after.items()):
            delta = ns - before.get(tid, 0)
            total_ns += delta
            threads.append(
                {
                    "tid": tid,
                    "comm": info["thread_comm"].get(tid) or comm(pid, tid),
                    "cpu_seconds": round(delta / 1e9, 6),
                }
            )
        cpu_s = total_ns / 1e9
        mem = self._last_mem.get(pid)
        stats = self.engine.proc_stats(pid)
        entry: dict[str, Any] = {
            "pid": pid,
            "comm": info["comm"],
            "cgroup": info["cgroup"],
            "requests": t.requests,
            "incomplete_spans": t.incomplete,
            "exited": pid in self.exited,
            "cpu_seconds": round(cpu_s, 6),
            "cpu_mcores": round(1000.0 * cpu_s / duration, 3) if duration > 0 else 0.0,
            "threads": threads,
            "mem_mb": mem.to_mb() if mem else None,
            "bytes_rx": stats["rx_bytes"],
            "bytes_tx": stats["tx_bytes"],
            # socket I/O that produced no span, counted so nothing is silently missed
            "unparsed_bytes": stats.get("unparsed_bytes", 0),
            "unattributed_calls": stats.get("unattributed", 0),
            "pipelined_requests": stats.get("pipelined", 0),
            "aborted_requests": stats.get("aborted", 0),
            "unparsed": document.unparsed_doc(stats, t.unparsed_conns, t.unparsed_conns_seen),
        }
        entry["legs"] = {name: document.leg_stats(hist) for name, hist in t.legs.items()}
        # HTTP/1.1 responses of the spans (downstream not HTTP/2) by the status the head
        # written downstream carried, read in the kernel; "unknown": not readable (TLS)
        entry["http1_statuses"] = self.engine.http1_statuses(pid)
        # HTTP/1.1 writes timed by their call, not their first packet, by the leg they end
        entry["write_stamp_missing"] = dict(t.write_stamp_missing)
        if t.role == "sidecar":
            entry["local_replies"] = stats["local_replies"]
            entry["matched"] = {
                "request_id": t.matched_by_rid,
                "thread": t.matched_by_thread,
                "response_order": t.matched_by_response,
            }
            entry["http2_spans"] = {"downstream": t.h2_downstream, "upstream": t.h2_upstream}
            entry["tls_upstream_spans"] = t.tls_upstream
            if t.h2_downstream:
                entry["http2_streams"] = document.stream_times(t.rows, F_DS_H2)
            entry["tls_downstream_spans"] = t.tls_downstream
            entry["tls_burst_downstream_spans"] = t.tls_burst_downstream
            statuses = self.engine.statuses(pid)
            if statuses is not None:
                # HTTP/2 responses (spans and local replies), decoded in the kernel (HPACK):
                # :status, grpc-status, and the blocks it could not decode (never guessed)
                entry["http2_statuses"] = statuses
            entry["arrival_missing"] = dict(t.arrival_missing)
        return entry


def _method(
    base: str, tls_spans: int, h2_spans: int = 0, tls_up: int = 0, tls_burst: int = 0
) -> str:
    parts = [base]
    if tls_burst:
        parts.append(
            "HTTP/2 inside TLS downstream (mTLS): one span per upstream stream (plaintext, "
            "followed per stream: the upstream leg is the stream's own); request_proxy and "
            "response_proxy per TLS burst: from the worker thread's first downstream read of "
            "the burst before the stream's upstream write, to its first downstream write "
            "after the stream's response ended upstream"
        )
    if tls_spans:
        parts.append(
            "TLS downstream: per connection read burst, request_proxy from the first "
            "downstream read that precedes the plaintext upstream write, matched by worker "
            "thread; its arrival stamp is the first of that TLS read burst"
        )
    elif not tls_burst:
        parts.append("plaintext HTTP/1.1, matched by x-request-id")
    if h2_spans:
        parts.append(
            "HTTP/2: per stream on plaintext legs (frame headers followed in the kernel), "
            "upstream leg paired by response order per worker thread"
        )
    if tls_up:
        parts.append(
            "TLS upstream (mTLS): per stream on the plaintext downstream side only; the "
            "upstream instants are the worker thread's TLS write/read burst"
        )
    return "; ".join(parts)


def start_capture(config: CaptureConfig, engine: Engine | None = None) -> CaptureSession:
    """Attach and start a window. With ``engine`` (``Engine(keep_spans=True)``, owned by the
    caller) the probe already loaded is reused: a run of many windows compiles once."""
    return CaptureSession(config, engine)
