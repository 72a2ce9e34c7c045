"""The capture engine: a pure aggregator of the sidecar probe's records, per target.

One span per request arrives from the kernel, in batches (numpy structured arrays of struct
smp_span); the engine turns them into legs with array arithmetic, records them in fixed-bucket
histograms (no per-request storage unless ``keep_spans``), joins app spans to the sidecar's by
request id for the ``loopback`` and ``mesh_added`` legs, and reads CPU per thread from the
kernel's own scheduler account. Used by ``capture``/``run`` (with spans kept) and by the daemon.

The probe is handed in (``probe=``, a factory given the engine's batch sink): the real one by
default, a scripted one in unit tests, so records -> legs -> joins -> histograms is tested
without root or BCC.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from profiler.capture.memory import memory_of
from profiler.capture.snapshot import Snapshot, TargetSnapshot
from profiler.histogram import LatencyHistogram
from profiler.legs import (
    APP_LEGS,
    PROXY_LEGS,
    arrivals_missing,
    proxy_instants,
    proxy_legs_ns,
    to_us,
)
from profiler.probes.sidecar import (
    F_DS_BURST,
    F_DS_H2,
    F_DS_TLS,
    F_DS_TX_CALL,
    F_MATCH_RESP,
    F_MATCH_RID,
    F_MATCH_THREAD,
    F_US_H2,
    F_US_TLS,
    F_US_TX_CALL,
    KIND_PROXY,
    KIND_SERVER,
    KIND_UNPARSED,
    Mode,
    SidecarProbe,
)

# The legs a write ends, by role: a sidecar's request sent upstream ends request_proxy, its
# response written downstream response_proxy; an app's response ends app (profiler/legs.py)
WRITE_ENDED_LEGS = {"sidecar": ("request_proxy", "response_proxy"), "app": ("app",)}
_JOIN_LIMIT = 65536  # unmatched spans kept for the app/sidecar join, oldest dropped first
UNPARSED_CONNS_KEPT = 32  # connections with unparsed bytes listed per target (the largest)


class Probe(Protocol):
    """What the engine needs of a probe (profiler.probes.sidecar.SidecarProbe)."""

    @property
    def path(self) -> str: ...
    @property
    def method(self) -> str: ...
    def add_target(self, pid: int, mode: Mode) -> None: ...
    def remove_target(self, pid: int) -> None: ...
    def poll(self, timeout_ms: int = 100) -> None: ...
    def consume(self) -> None: ...
    def drain_pending(self) -> np.ndarray: ...
    def proc_stats(self, pid: int) -> dict[str, int]: ...
    def drops(self) -> int: ...
    def conns_in_use(self) -> int: ...
    def close(self) -> None: ...


ProbeFactory = Callable[[Callable[[np.ndarray], None]], Probe]


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
    matched_by_response: int = 0
    tls_upstream: int = 0  # spans whose upstream leg is a TLS burst (mTLS), not their own
    h2_downstream: int = 0  # spans whose downstream leg was an HTTP/2 stream
    h2_upstream: int = 0
    # spans of HTTP/2 inside a TLS downstream (mTLS, server side): one per upstream stream,
    # their downstream instants the worker thread's TLS read/write bursts
    tls_burst_downstream: int = 0
    # HTTP/1.1 responses by status code (spans whose downstream leg is not HTTP/2), from the
    # head the probe saw written downstream; 0: unknown (TLS downstream, a head not seen)
    h1_statuses: dict[int, int] = field(default_factory=dict)
    # connections that closed (or were open at the end) with bytes no span explains:
    # (fd, "downstream"|"upstream", bytes read, bytes written), the largest kept
    unparsed_conns: list[tuple[int, str, int, int]] = field(default_factory=list)
    unparsed_conns_seen: int = 0
    arrival_missing: dict[str, int] = field(default_factory=lambda: {"request": 0, "response": 0})
    # HTTP/1.1 writes whose instant is the call's own, not its first packet's, by the leg
    # they end (WRITE_ENDED_LEGS of the role)
    write_stamp_missing: dict[str, int] = field(default_factory=dict)
    rows: list[np.ndarray] = field(default_factory=list)  # batches of struct smp_span
    rows_kept: int = 0
    rows_dropped: int = 0
    cpu_base: dict[int, int] = field(default_factory=dict)  # tid -> ns when added
    cpu_last: dict[int, int] = field(default_factory=dict)  # tid -> ns last seen
    cpu_gone: set[int] = field(default_factory=set)  # tids seen exited
    cpu_unseen: int | None = None  # process CPU not in any thread's account, when added

    def __post_init__(self) -> None:
        names = PROXY_LEGS if self.role == "sidecar" else APP_LEGS
        self.legs = {n: LatencyHistogram() for n in names}
        self.write_stamp_missing = dict.fromkeys(WRITE_ENDED_LEGS[self.role], 0)
        self.cpu_base = thread_runtime_ns(self.pid)
        self.cpu_last = dict(self.cpu_base)
        total = process_cpu_ns(self.pid)
        self.cpu_unseen = None if total is None else total - sum(self.cpu_base.values())


UNSAMPLED_TID = 0  # threads that came and went between two samples
_SKEW_NS = 2_000_000  # the two reads are not atomic: running threads move on in between


def process_cpu_ns(pid: int) -> int | None:
    """On-CPU nanoseconds of the whole process, exited threads included: its CPU-time clock
    (clock_getcpuclockid(3) is MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED))."""
    try:
        return time.clock_gettime_ns(((~pid) << 3) | 2)
    except OSError:
        return None


def _settle_exited(t: Target, live: dict[int, int], total: int | None) -> None:
    """A thread's schedstat vanishes with it, so its last sample misses the CPU it burned
    since. The process clock keeps it: the difference goes to the threads that exited since
    the last sample (shared by their sampled time), or to UNSAMPLED_TID when none did."""
    newly = [tid for tid in t.cpu_last if tid not in live and tid not in t.cpu_gone]
    t.cpu_last.update(live)
    if total is not None and t.cpu_unseen is not None:
        dead = sum(ns for tid, ns in t.cpu_last.items() if tid not in live)
        extra = total - sum(live.values()) - dead - t.cpu_unseen
        if newly and extra > 0:
            weights = [max(t.cpu_last[tid] - t.cpu_base.get(tid, 0), 1) for tid in newly]
            for tid, w in zip(newly, weights, strict=True):
                t.cpu_last[tid] += extra * w // sum(weights)
        elif extra > _SKEW_NS:
            t.cpu_last[UNSAMPLED_TID] = t.cpu_last.get(UNSAMPLED_TID, 0) + extra
    t.cpu_gone.update(newly)


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


class Engine:
    """Attach once; add and remove targets as they come and go; poll; snapshot."""

    def __init__(
        self,
        ringbuf_pages: int | None = None,
        keep_spans: bool = False,
        max_spans: int = 1_000_000,
        probe: ProbeFactory | None = None,
    ) -> None:
        self._keep_spans = keep_spans
        self._max_spans = max_spans
        self._targets: dict[int, Target] = {}
        # spans with a request id waiting for the other side's: (pid, upstream, sidecar_total)
        # of the sidecar's, (pid, app) of the app's, by rid_hash
        self._pending_proxy = _Pending(3)
        self._pending_app = _Pending(2)
        self._new_proxy: list[tuple[np.ndarray, np.ndarray]] = []  # this batch's (hashes, cols)
        self._new_app: list[tuple[np.ndarray, np.ndarray]] = []
        self._window_start_ns = 0
        if probe is None:
            pages = ringbuf_pages

            def probe(sink: Callable[[np.ndarray], None]) -> Probe:
                return SidecarProbe(sink, ringbuf_pages=pages)

        self._probe: Probe = probe(self._on_batch)

    @property
    def method(self) -> str:
        """How the spans were measured (which probe path ran)."""
        return str(self._probe.method)

    @property
    def probe_path(self) -> str:
        return str(self._probe.path)

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
        self._pending_proxy.clear()
        self._pending_app.clear()
        self._window_start_ns = time.monotonic_ns()

    # -- events ---------------------------------------------------------------------------
    def poll(self, timeout_ms: int = 100) -> None:
        self._probe.poll(timeout_ms)

    def drain(self) -> None:
        """Everything still in the ring buffer, and the answered requests no later event has
        emitted yet (read from the connection table)."""
        self._probe.consume()
        self._on_batch(self._probe.drain_pending())

    def feed(self, spans: np.ndarray) -> None:
        """A batch of records (struct smp_span), as the probe hands them over."""
        self._on_batch(spans)

    def _on_batch(self, spans: np.ndarray) -> None:
        """A batch of records from the kernel (struct smp_span): legs, joins, rows."""
        if not len(spans):
            return
        # Masks, then one copy of each target's records of each kind: a record is 160 bytes
        # and copying it is most of what a batch costs per element.
        tgids, kinds = spans["tgid"], spans["kind"]
        in_window = spans["ds_rx_beg"] >= self._window_start_ns
        for tgid in np.unique(tgids).tolist():
            t = self._targets.get(tgid)
            if t is None:
                continue
            mine = (tgids == tgid) & in_window
            unparsed = mine & (kinds == KIND_UNPARSED)
            if unparsed.any():
                self._unparsed(t, _rows(spans, unparsed))
            if t.role == "sidecar":
                self._proxy_spans(t, _rows(spans, mine & (kinds == KIND_PROXY)))
            else:
                self._app_spans(t, _rows(spans, mine & (kinds == KIND_SERVER)))
        self._join_batch()

    def _unparsed(self, t: Target, s: np.ndarray) -> None:
        """Per-connection records of bytes no span explains (never silent)."""
        if not len(s):
            return
        t.unparsed_conns_seen += len(s)
        for ds_fd, us_fd, rx, tx in zip(
            s["ds_fd"].tolist(), s["us_fd"].tolist(), s["req_bytes"].tolist(),
            s["resp_bytes"].tolist(), strict=True,
        ):  # fmt: skip
            role = "upstream" if us_fd >= 0 else "downstream"
            t.unparsed_conns.append((us_fd if us_fd >= 0 else ds_fd, role, rx, tx))
        t.unparsed_conns.sort(key=lambda c: -(c[2] + c[3]))
        del t.unparsed_conns[UNPARSED_CONNS_KEPT:]

    def _keep(self, t: Target, spans: np.ndarray) -> None:
        if not self._keep_spans:
            return
        room = max(self._max_spans - t.rows_kept, 0)
        if len(spans) > room:
            t.rows_dropped += len(spans) - room
            spans = spans[:room]
        if len(spans):
            t.rows.append(_rows(spans))
            t.rows_kept += len(spans)

    def _proxy_spans(self, t: Target, s: np.ndarray) -> None:
        ok, at = proxy_instants(s)
        complete = int(ok.sum())
        t.incomplete += len(s) - complete
        if complete < len(s):
            s, at = _rows(s, ok), {k: v[ok] for k, v in at.items()}
        if not len(s):
            return
        legs_ns = proxy_legs_ns(at)
        for name, values in legs_ns.items():
            t.legs[name].record_many(to_us(values))
        up, sidecar = legs_ns["upstream"], legs_ns["sidecar_total"]
        missing = arrivals_missing(s)
        t.arrival_missing["request"] += missing[0]
        t.arrival_missing["response"] += missing[1]
        t.requests += len(s)
        flags = s["flags"]
        t.tls_downstream += int(np.count_nonzero(flags & F_DS_TLS))
        t.matched_by_rid += int(np.count_nonzero(flags & F_MATCH_RID))
        t.matched_by_thread += int(np.count_nonzero(flags & F_MATCH_THREAD))
        t.matched_by_response += int(np.count_nonzero(flags & F_MATCH_RESP))
        t.h2_downstream += int(np.count_nonzero(flags & F_DS_H2))
        t.tls_upstream += int(np.count_nonzero(flags & F_US_TLS))
        t.h2_upstream += int(np.count_nonzero(flags & F_US_H2))
        t.tls_burst_downstream += int(np.count_nonzero(flags & F_DS_BURST))
        _count_write_stamps_missing(t, flags)
        _count_h1_statuses(t, s)
        with_id = (s["rid_hash"] != 0) & (s["rid_len"] > 0)
        if with_id.any():
            cols = np.column_stack((np.full(int(with_id.sum()), t.pid), up[with_id],
                                    sidecar[with_id]))  # fmt: skip
            self._new_proxy.append((s["rid_hash"][with_id], cols.astype(np.int64)))
        self._keep(t, s)

    def _app_spans(self, t: Target, s: np.ndarray) -> None:
        ds_rx, ds_tx = s["ds_rx_beg"].astype(np.int64), s["ds_tx_end"].astype(np.int64)
        ok = (ds_rx > 0) & (ds_tx >= ds_rx)
        complete = int(ok.sum())
        t.incomplete += len(s) - complete
        app = ds_tx - ds_rx
        if complete < len(s):
            s, app = _rows(s, ok), app[ok]
        if not len(s):
            return
        t.legs["app"].record_many(to_us(app))
        t.requests += len(s)
        _count_write_stamps_missing(t, s["flags"])
        _count_h1_statuses(t, s)
        with_id = (s["rid_hash"] != 0) & (s["rid_len"] > 0)
        if with_id.any():
            cols = np.column_stack((np.full(int(with_id.sum()), t.pid), app[with_id]))
            self._new_app.append((s["rid_hash"][with_id], cols.astype(np.int64)))
        self._keep(t, s)

    def _join_batch(self) -> None:
        """The app's and the sidecar's records of one request, joined by request id for the
        whole batch at once: the loopback hop between them (upstream - app, the app's
        ``loopback``) and what the mesh adds to the request in all (sidecar_total +
        loopback, the sidecar's ``mesh_added``: the one-run estimate of an A/B difference).
        A span whose other half has not come yet waits (bounded, oldest dropped first)."""
        proxy_h, proxy = _stack(self._new_proxy, 3)
        app_h, app = _stack(self._new_app, 2)
        self._new_proxy.clear()
        self._new_app.clear()
        if not len(proxy_h) and not len(app_h):
            return
        pairs: list[tuple[np.ndarray, np.ndarray]] = []  # (app rows, proxy rows)
        found = self._pending_app.take(proxy_h)
        pairs.append((found[_hit(found)], proxy[_hit(found)]))
        proxy_h, proxy = proxy_h[~_hit(found)], proxy[~_hit(found)]
        found = self._pending_proxy.take(app_h)
        pairs.append((app[_hit(found)], found[_hit(found)]))
        app_h, app = app_h[~_hit(found)], app[~_hit(found)]
        _, pi, ai = np.intersect1d(proxy_h, app_h, assume_unique=False, return_indices=True)
        pairs.append((app[ai], proxy[pi]))
        rest_p = np.ones(len(proxy_h), dtype=bool)
        rest_p[pi] = False
        rest_a = np.ones(len(app_h), dtype=bool)
        rest_a[ai] = False
        roles = {t.role for t in self._targets.values()}
        if "app" in roles:  # a sidecar's span can only ever be joined to a traced app's
            self._pending_proxy.put(proxy_h[rest_p], proxy[rest_p])
        if "sidecar" in roles:
            self._pending_app.put(app_h[rest_a], app[rest_a])
        a = np.concatenate([p[0] for p in pairs]) if pairs else np.empty((0, 2), np.int64)
        p = np.concatenate([q[1] for q in pairs]) if pairs else np.empty((0, 3), np.int64)
        if not len(a):
            return
        loopback = np.maximum(p[:, 1] - a[:, 1], 0)
        joined = np.column_stack((a[:, 0], p[:, 0], loopback, p[:, 2] + loopback))
        for column, leg, value in ((0, "loopback", 2), (1, "mesh_added", 3)):
            for pid in np.unique(joined[:, column]).tolist():
                t = self._targets.get(pid)
                if t is not None and leg in t.legs:
                    t.legs[leg].record_many(to_us(joined[joined[:, column] == pid, value]))

    # -- counters -------------------------------------------------------------------------
    def cpu_ns(self) -> dict[int, dict[int, int]]:
        """pid -> {tid: on-CPU ns since the target was added}, from the kernel's own per-
        thread account (sum_exec_runtime in /proc/<pid>/task/<tid>/schedstat). A thread that
        exits keeps its whole time (see ``_settle_exited``), so totals never go down."""
        out: dict[int, dict[int, int]] = {}
        for pid, t in self._targets.items():
            live = thread_runtime_ns(pid)
            _settle_exited(t, live, process_cpu_ns(pid))
            out[pid] = {tid: ns - t.cpu_base.get(tid, 0) for tid, ns in t.cpu_last.items()}
        return out

    def proc_stats(self, pid: int) -> dict[str, int]:
        return self._probe.proc_stats(pid)

    def statuses(self, pid: int) -> dict[str, Any] | None:
        """HTTP/2 response statuses decoded in the kernel (a probe without them: None)."""
        fn = getattr(self._probe, "statuses", None)
        return fn(pid) if fn is not None else None

    def http1_statuses(self, pid: int) -> dict[str, int]:
        """HTTP/1.1 responses ``pid`` wrote downstream by status code, ``{"200": n, ...,
        "unknown": n}`` (codes as strings, ascending; "unknown": responses whose status the
        probe could not read, e.g. a TLS downstream): its spans' and, for a proxy, its local
        replies' (no span: ``local_replies``)."""
        counts = self._h1_counts(pid, self._status_tables()[1])
        out = {str(c): n for c, n in sorted(counts.items()) if c}
        out["unknown"] = counts.get(0, 0)
        return out

    def _status_tables(self) -> tuple[dict[int, dict[str, Any]], dict[int, dict[int, int]]]:
        """The probe's HTTP/2 statuses and HTTP/1.1 local replies per process, one walk of the
        kernel's table (a probe without them: none)."""
        fn = getattr(self._probe, "status_tables", None)
        return fn() if fn is not None else ({}, {})

    def _h1_counts(self, pid: int, local: Mapping[int, Mapping[int, int]]) -> dict[int, int]:
        counts = dict(self._targets[pid].h1_statuses)
        for code, n in local.get(pid, {}).items():
            counts[code] = counts.get(code, 0) + n
        return counts

    def drops(self) -> int:
        return self._probe.drops()

    def conns_in_use(self) -> int:
        return self._probe.conns_in_use()

    def snapshot(self) -> Snapshot:
        cpu = self.cpu_ns()
        snap = Snapshot(drops=self.drops(), attached=len(self._targets))
        h2, local = self._status_tables()
        for pid, t in self._targets.items():
            mem = memory_of(pid)
            stats = self._probe.proc_stats(pid)
            snap.targets[pid] = TargetSnapshot(
                labels=t.labels,
                role=t.role,
                requests=t.requests,
                legs={k: v.copy() for k, v in t.legs.items()},
                cpu_seconds=sum(cpu.get(pid, {}).values()) / 1e9,
                memory_working_set_bytes=mem.working_set if mem else 0,
                socket_bytes=stats["rx_bytes"] + stats["tx_bytes"],
                unparsed_bytes=stats["unparsed_bytes"],
                statuses=_status_counts(self._h1_counts(pid, local), h2.get(pid)),
                h2_blocks_lost=stats.get("h2_blocks_lost", 0),
                statuses_lost=stats.get("statuses_lost", 0),
                write_stamp_missing=dict(t.write_stamp_missing),
            )
        return snap

    def alive(self, pid: int) -> bool:
        return os.path.exists(f"/proc/{pid}/stat")

    def close(self) -> None:
        self._probe.close()


def _count_write_stamps_missing(t: Target, flags: np.ndarray) -> None:
    """Add a batch's HTTP/1.1 legs whose write instant is the call's own (no packet of the
    write was stamped) to ``t.write_stamp_missing``, by the leg the write ends; HTTP/2 and
    TLS-burst legs are not flagged by the probe and not counted."""
    down = (flags & (F_DS_TX_CALL | F_DS_H2 | F_DS_BURST)) == F_DS_TX_CALL
    if t.role == "app":
        t.write_stamp_missing["app"] += int(np.count_nonzero(down))
        return
    up = (flags & (F_US_TX_CALL | F_US_H2 | F_US_TLS)) == F_US_TX_CALL
    t.write_stamp_missing["request_proxy"] += int(np.count_nonzero(up))
    t.write_stamp_missing["response_proxy"] += int(np.count_nonzero(down))


def _count_h1_statuses(t: Target, s: np.ndarray) -> None:
    """Add a batch's HTTP/1.1 spans (downstream not an HTTP/2 stream) to ``t.h1_statuses``."""
    h1 = (s["flags"] & (F_DS_H2 | F_DS_BURST)) == 0
    if not h1.any():
        return
    counts = np.bincount(s["status"][h1])  # at most 600 bins: the probe reads 100..599 or 0
    for code in np.flatnonzero(counts).tolist():
        t.h1_statuses[code] = t.h1_statuses.get(code, 0) + int(counts[code])


def _status_counts(
    h1: Mapping[int, int], h2: Mapping[str, Any] | None
) -> dict[tuple[str, str], int]:
    """(protocol, code) -> responses, as TargetSnapshot.statuses: "http1" from the spans
    (status 0 as "unknown"), "http2" and "grpc" from the kernel's HPACK decoder (its
    undecoded header blocks as ("http2", "unknown"))."""
    out = {("http1", str(c) if c else "unknown"): n for c, n in h1.items()}
    if h2:
        for proto, key in (("http2", "http"), ("grpc", "grpc")):
            for code, n in h2.get(key, {}).items():
                out[proto, str(code)] = int(n)
        if h2.get("unknown"):
            out["http2", "unknown"] = int(h2["unknown"])
    return out


def _rows(a: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
    """A new array of ``a``'s records (those ``where`` is true): numpy's indexing and copy of
    a structured dtype go field by field (~100 ns a 160-byte record here), ``np.compress``
    copies whole records (~6 ns)."""
    out: np.ndarray = np.compress(np.ones(len(a), dtype=bool) if where is None else where, a)
    return out


def _stack(parts: list[tuple[np.ndarray, np.ndarray]], width: int) -> tuple[np.ndarray, np.ndarray]:
    if not parts:
        return np.empty(0, dtype=np.uint64), np.empty((0, width), dtype=np.int64)
    return (np.concatenate([h for h, _ in parts]).astype(np.uint64),
            np.concatenate([c for _, c in parts]))  # fmt: skip


def _hit(found: np.ndarray) -> np.ndarray:
    """Rows of a ``_Pending.take`` result that were found (their pid column is set)."""
    out: np.ndarray = found[:, 0] >= 0
    return out


class _Pending:
    """Spans waiting for their other half, by request-id hash: sorted arrays, so a batch is
    looked up with one searchsorted. At most ``limit``; the oldest go first (counted by
    arrival order), a quarter at a time so that trimming is rare."""

    def __init__(self, width: int, limit: int = _JOIN_LIMIT) -> None:
        self.width, self.limit = width, limit
        self.clear()

    def clear(self) -> None:
        self.h = np.empty(0, dtype=np.uint64)
        self.cols = np.empty((0, self.width), dtype=np.int64)
        self.seq = np.empty(0, dtype=np.int64)
        self._next = 0

    def __len__(self) -> int:
        return len(self.h)

    def take(self, hashes: np.ndarray) -> np.ndarray:
        """The waiting rows for ``hashes`` (a row of -1 where none waits), removed."""
        out = np.full((len(hashes), self.width), -1, dtype=np.int64)
        if not len(self.h) or not len(hashes):
            return out
        i = np.searchsorted(self.h, hashes)
        i[i >= len(self.h)] = 0
        hit = self.h[i] == hashes
        if hit.any():
            idx = i[hit]
            uniq, first = np.unique(idx, return_index=True)  # one taker per waiting row
            rows = np.flatnonzero(hit)[first]
            out[rows] = self.cols[uniq]
            keep = np.ones(len(self.h), dtype=bool)
            keep[uniq] = False
            self.h, self.cols, self.seq = self.h[keep], self.cols[keep], self.seq[keep]
        return out

    def put(self, hashes: np.ndarray, cols: np.ndarray) -> None:
        if not len(hashes):
            return
        seq = np.arange(self._next, self._next + len(hashes), dtype=np.int64)
        self._next += len(hashes)
        h = np.concatenate((self.h, hashes))
        c = np.concatenate((self.cols, cols))
        q = np.concatenate((self.seq, seq))
        # the latest of one hash wins (as a dict's put), sorted by hash
        order = np.lexsort((-q, h))
        h, c, q = h[order], c[order], q[order]
        first = np.ones(len(h), dtype=bool)
        first[1:] = h[1:] != h[:-1]
        h, c, q = h[first], c[first], q[first]
        if len(h) > self.limit:
            cut = np.sort(q)[len(h) - self.limit * 3 // 4]
            keep = q >= cut
            h, c, q = h[keep], c[keep], q[keep]
        self.h, self.cols, self.seq = h, c, q
