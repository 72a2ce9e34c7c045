"""The capture engine: the sidecar probe plus per-target aggregation.

One span per request arrives from the kernel; the engine turns it into legs, records them in
fixed-bucket histograms (no per-request storage unless ``keep_spans``), joins app spans to
the sidecar's by request id for the ``loopback`` leg, and reads CPU per thread from the
kernel's own scheduler account. Used by ``capture``/``run`` (with spans kept) and by the daemon.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from profiler.capture.memory import memory_of
from profiler.daemon.snapshot import Snapshot, TargetSnapshot
from profiler.histogram import LatencyHistogram
from profiler.probes.sidecar import (
    F_DS_TLS,
    F_MATCH_RID,
    F_MATCH_THREAD,
    KIND_PROXY,
    Mode,
    SidecarProbe,
    Span,
)

PROXY_LEGS = ("request_proxy", "upstream", "response_proxy", "sidecar_total", "mesh_added")
APP_LEGS = ("app", "loopback")
V = TypeVar("V")
_JOIN_LIMIT = 65536  # unmatched spans kept for the app/sidecar join, oldest dropped first


@dataclass
class SpanRow:
    """One request as the spans file stores it (nanoseconds, monotonic clock)."""

    role: str
    pid: int
    tid: int
    request_id: str
    ds_rx_beg: int
    us_tx_end: int
    us_rx_beg: int
    ds_tx_end: int
    flags: int
    ds_fd: int
    us_fd: int


@dataclass
class Target:
    pid: int
    role: str  # "sidecar" | "app"
    labels: Mapping[str, str]
    legs: dict[str, LatencyHistogram] = field(default_factory=dict)
    requests: int = 0
    incomplete: int = 0
    tls_downstream: int = 0
    matched_by_rid: int = 0
    matched_by_thread: int = 0
    rows: list[SpanRow] = field(default_factory=list)
    rows_dropped: int = 0
    cpu_base: dict[int, int] = field(default_factory=dict)  # tid -> ns when added
    cpu_last: dict[int, int] = field(default_factory=dict)  # tid -> ns last seen

    def __post_init__(self) -> None:
        names = PROXY_LEGS if self.role == "sidecar" else APP_LEGS
        self.legs = {n: LatencyHistogram() for n in names}
        self.cpu_base = thread_runtime_ns(self.pid)
        self.cpu_last = dict(self.cpu_base)


def thread_runtime_ns(pid: int) -> dict[int, int]:
    """tid -> nanoseconds on CPU so far, for every live thread of ``pid``."""
    out: dict[int, int] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                out[int(tid)] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return out


def _us(ns: int) -> int:
    return max(0, (ns + 500) // 1000)


class Engine:
    """Attach once; add and remove targets as they come and go; poll; snapshot."""

    def __init__(
        self,
        aggregate: bool = True,
        ringbuf_pages: int = 64,
        keep_spans: bool = False,
        max_spans: int = 1_000_000,
    ) -> None:
        self.aggregate = aggregate
        self._keep = keep_spans
        self._max_spans = max_spans
        self._targets: dict[int, Target] = {}
        self._app_by_rid: OrderedDict[int, tuple[int, int]] = OrderedDict()
        self._upstream_by_rid: OrderedDict[int, tuple[int, int, int]] = OrderedDict()
        self._window_start_ns = 0
        self._probe = SidecarProbe(self._on_span, ringbuf_pages=ringbuf_pages)

    # -- targets --------------------------------------------------------------------------
    def add_target(self, pid: int, role: str, labels: Mapping[str, str] | None = None) -> None:
        if role not in ("sidecar", "app"):
            raise ValueError(f"role must be sidecar or app, not {role!r}")
        mode: Mode = "proxy" if role == "sidecar" else "app"
        self._targets[pid] = Target(pid, role, dict(labels or {}))
        self._probe.add_target(pid, mode)

    def remove_target(self, pid: int) -> None:
        self._probe.remove_target(pid)
        self._targets.pop(pid, None)

    @property
    def targets(self) -> dict[int, Target]:
        return self._targets

    def new_window(self, sidecars: list[int], apps: list[int]) -> None:
        """Start a fresh measurement window on the attached probe (no recompiling): these
        targets, zeroed counters, and only requests that begin from now on."""
        self._probe.consume()
        want = {pid: "sidecar" for pid in sidecars} | {pid: "app" for pid in apps}
        for pid, t in list(self._targets.items()):
            if want.get(pid) != t.role:
                self.remove_target(pid)
        for pid, role in want.items():
            if pid in self._targets:
                old = self._targets[pid]
                self._targets[pid] = Target(pid, role, old.labels)
            else:
                self.add_target(pid, role)
        self._app_by_rid.clear()
        self._upstream_by_rid.clear()
        self._window_start_ns = time.monotonic_ns()

    # -- events ---------------------------------------------------------------------------
    def poll(self, timeout_ms: int = 100) -> None:
        self._probe.poll(timeout_ms)

    def drain(self) -> None:
        """Everything still in the ring buffer, and the answered requests no later event has
        emitted yet (read from the connection table)."""
        self._probe.consume()
        for span in list(self._probe.drain_pending()):
            self._on_span(span)

    def _on_span(self, s: Span) -> None:
        t = self._targets.get(s.tgid)
        if t is None or s.ds_rx_beg < self._window_start_ns:
            return
        if not s.complete:
            t.incomplete += 1
            return
        t.requests += 1
        if s.kind == KIND_PROXY:
            rp, up = s.us_tx_end - s.ds_rx_beg, s.us_rx_beg - s.us_tx_end
            resp = s.ds_tx_end - s.us_rx_beg
            legs = t.legs
            legs["request_proxy"].record(_us(rp))
            legs["upstream"].record(_us(up))
            legs["response_proxy"].record(_us(resp))
            legs["sidecar_total"].record(_us(rp + resp))
            t.tls_downstream += bool(s.flags & F_DS_TLS)
            t.matched_by_rid += bool(s.flags & F_MATCH_RID)
            t.matched_by_thread += bool(s.flags & F_MATCH_THREAD)
            if s.rid_hash:
                proxy = (s.tgid, up, rp + resp)
                app = self._app_by_rid.pop(s.rid_hash, None)
                if app is None:
                    _bounded_put(self._upstream_by_rid, s.rid_hash, proxy)
                else:
                    self._join(app, proxy)
        else:
            app_ns = s.ds_tx_end - s.ds_rx_beg
            t.legs["app"].record(_us(app_ns))
            if s.rid_hash:
                seen = self._upstream_by_rid.pop(s.rid_hash, None)
                if seen is None:
                    _bounded_put(self._app_by_rid, s.rid_hash, (s.tgid, app_ns))
                else:
                    self._join((s.tgid, app_ns), seen)
        if self._keep:
            if len(t.rows) < self._max_spans:
                role = "sidecar" if s.kind == KIND_PROXY else "app"
                t.rows.append(
                    SpanRow(
                        role,
                        s.tgid,
                        s.tid,
                        s.rid,
                        s.ds_rx_beg,
                        s.us_tx_end,
                        s.us_rx_beg,
                        s.ds_tx_end,
                        s.flags,
                        s.ds_fd,
                        s.us_fd,
                    )
                )
            else:
                t.rows_dropped += 1

    def _join(self, app: tuple[int, int], proxy: tuple[int, int, int]) -> None:
        """The app's and the sidecar's records of one request: the loopback hop between
        them (upstream - app), and what the mesh adds to the request in all
        (sidecar_total + loopback), the one-run estimate of an A/B difference."""
        (app_pid, app_ns), (proxy_pid, upstream_ns, sidecar_ns) = app, proxy
        loopback = max(upstream_ns - app_ns, 0)
        a = self._targets.get(app_pid)
        if a is not None:
            a.legs["loopback"].record(_us(loopback))
        p = self._targets.get(proxy_pid)
        if p is not None:
            p.legs["mesh_added"].record(_us(sidecar_ns + loopback))

    # -- counters -------------------------------------------------------------------------
    def cpu_ns(self) -> dict[int, dict[int, int]]:
        """pid -> {tid: on-CPU ns since the target was added}, from the kernel's own per-
        thread account (sum_exec_runtime in /proc/<pid>/task/<tid>/schedstat). A thread that
        exits keeps the time it was last seen with, so totals never go down."""
        out: dict[int, dict[int, int]] = {}
        for pid, t in self._targets.items():
            for tid, ns in thread_runtime_ns(pid).items():
                t.cpu_last[tid] = ns
            out[pid] = {tid: ns - t.cpu_base.get(tid, 0) for tid, ns in t.cpu_last.items()}
        return out

    def proc_stats(self, pid: int) -> dict[str, int]:
        return self._probe.proc_stats(pid)

    def drops(self) -> int:
        return self._probe.drops()

    def conns_in_use(self) -> int:
        return self._probe.conns_in_use()

    def snapshot(self) -> Snapshot:
        cpu = self.cpu_ns()
        snap = Snapshot(drops=self.drops(), attached=len(self._targets))
        for pid, t in self._targets.items():
            mem = memory_of(pid)
            snap.targets[pid] = TargetSnapshot(
                labels=t.labels,
                role=t.role,
                requests=t.requests,
                legs={k: v.copy() for k, v in t.legs.items()},
                cpu_seconds=sum(cpu.get(pid, {}).values()) / 1e9,
                memory_working_set_bytes=mem.working_set if mem else 0,
            )
        return snap

    def alive(self, pid: int) -> bool:
        return os.path.exists(f"/proc/{pid}/stat")

    def close(self) -> None:
        self._probe.close()


def _bounded_put(d: OrderedDict[int, V], key: int, value: V) -> None:
    d[key] = value
    if len(d) > _JOIN_LIMIT:
        d.popitem(last=False)
