"""The daemon's Prometheus metrics: specs declared once, as data, and a collector that
yields their families from the latest engine snapshot.

Labels stay low-cardinality: namespace, pod, container and leg; never a PID, connection or
URL. Several processes with the same labels (two Envoys of a hot restart, the processes of
an app container) are summed. Counters stay monotonic across a process's exit: its last
values are kept for its label set (a container restart reuses them) until no process with
those labels has been seen for ``retire_after`` seconds, so memory stays bounded by the
live label sets.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from profiler import __version__
from profiler.capture.snapshot import HistogramLike, SnapshotLike, TargetLike
from profiler.legs import APP_LEGS, PROXY_LEGS

MetricType = Literal["counter", "gauge", "histogram"]
# A target's label keys (discovery's) -> the names exported. OpenTelemetry's k8s.* resource
# attributes as Prometheus spells them: a scrape never adds these itself (it adds namespace,
# pod, container, node, job, instance), so with honor_labels false nothing is renamed to
# exported_*, and with a PodMonitor's honorLabels nothing of the target's is overwritten.
EXPORTED_LABELS = {
    "namespace": "k8s_namespace_name",
    "pod": "k8s_pod_name",
    "container": "k8s_container_name",
    "mesh": "smp_mesh_type",  # SMP's mesh type name from the pod's evidence; "" unknown
}
POD_LABELS = tuple(EXPORTED_LABELS.values())
NS_LABEL, POD_LABEL, CONTAINER_LABEL, MESH_LABEL = POD_LABELS
NODE_LABEL = "k8s_node_name"  # on the per-node metrics: duplicates of a node are seen as such

# Upper bounds in seconds: six per decade from 10 us to 10 ms (sidecar legs are typically
# 30 us .. 1 ms), then 1-2.5-5 up to 10 s.
_FINE = (1.0, 1.5, 2.0, 3.0, 5.0, 7.5)
LEG_BUCKETS: tuple[float, ...] = tuple(
    [round(m * 10.0**e, 9) for e in (-5, -4, -3) for m in _FINE]
    + [round(m * 10.0**e, 9) for e in (-2, -1, 0) for m in (1.0, 2.5, 5.0)]
    + [10.0]
)


@dataclass(frozen=True)
class MetricSpec:
    name: str  # the exposed name (counters with their _total)
    type: MetricType
    unit: str
    labels: tuple[str, ...]
    help: str


SPECS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "smp_sidecar_leg_duration_seconds",
        "histogram",
        "seconds",
        (*POD_LABELS, "leg"),
        "Time a request spends in each leg of the sidecar ("
        + ", ".join((*PROXY_LEGS, *APP_LEGS))
        + "); *_queue: bytes waiting in the sidecar's socket, *_work: the sidecar handling them.",
    ),
    MetricSpec(
        "smp_sidecar_requests_total",
        "counter",
        "",
        POD_LABELS,
        "Requests the sidecar proxied (pairs of downstream request and response).",
    ),
    MetricSpec(
        "smp_sidecar_cpu_seconds_total",
        "counter",
        "seconds",
        POD_LABELS,
        "CPU time (user+system) of the sidecar's processes.",
    ),
    MetricSpec(
        "smp_sidecar_memory_working_set_bytes",
        "gauge",
        "bytes",
        POD_LABELS,
        "Working set of the sidecar container from its cgroup in the host's tree "
        "(memory.current minus inactive_file, v1 the same); the proxies' own accounting where "
        "no cgroup is found.",
    ),
    MetricSpec(
        "smp_container_memory_working_set_bytes",
        "gauge",
        "bytes",
        POD_LABELS,
        "Working set of each traced container (sidecar and app) from its cgroup: v2 "
        "memory.current minus inactive_file, v1 the same; what kubectl top shows.",
    ),
    MetricSpec(
        "smp_container_cpu_seconds_total",
        "counter",
        "seconds",
        POD_LABELS,
        "CPU of each traced container from its cgroup (every process of it: pilot-agent "
        "beside Envoy); resets when the container restarts, as cAdvisor's.",
    ),
    MetricSpec(
        "smp_app_cpu_seconds_total",
        "counter",
        "seconds",
        POD_LABELS,
        "CPU time of the app containers of pods with a sidecar, for the sidecar's share.",
    ),
    MetricSpec(
        "smp_sidecar_socket_bytes_total",
        "counter",
        "bytes",
        POD_LABELS,
        "Bytes the sidecar read and wrote on the connections the probe traces.",
    ),
    MetricSpec(
        "smp_sidecar_unparsed_bytes_total",
        "counter",
        "bytes",
        POD_LABELS,
        "Of those, bytes no request span explains (a protocol the probe does not parse, "
        "HTTP/2 frames it lost its place in, local replies): requests on them are not in "
        "smp_sidecar_requests_total. Watch the ratio to smp_sidecar_socket_bytes_total.",
    ),
    MetricSpec(
        "smp_sidecar_responses_total",
        "counter",
        "",
        (*POD_LABELS, "protocol", "code"),
        "Responses the sidecar wrote downstream, by protocol (http1 from the request spans "
        "and its local replies; "
        "http2 :status and grpc grpc-status decoded from its HPACK, local replies included) "
        'and code (HTTP 100-599 and gRPC 0-16, any other value "other"; "unknown" where '
        "the probe could not read it: HTTP/1.1 inside TLS, HTTP/2 header blocks not decoded).",
    ),
    MetricSpec(
        "smp_sidecar_http2_blocks_lost_total",
        "counter",
        "",
        POD_LABELS,
        "HTTP/2 header blocks the probe could not follow to their end: their statuses may be "
        "unknown, and references to earlier header table entries are.",
    ),
    MetricSpec(
        "smp_sidecar_statuses_lost_total",
        "counter",
        "",
        POD_LABELS,
        "Responses of the sidecar whose status the probe could not count (its status table "
        "was full): smp_sidecar_responses_total is short by this many.",
    ),
    MetricSpec(
        "smp_sidecar_write_stamp_missing_total",
        "counter",
        "",
        (*POD_LABELS, "leg"),
        "HTTP/1.1 writes of the sidecar timed by their write call, not their first packet "
        "(TCP held the bytes back, the thread changed CPU, or no write-stamp hook), by the "
        "leg they end (request_proxy, response_proxy): those legs end at the call, not on "
        "the wire. Rare where the hook exists; watch the ratio to smp_sidecar_requests_total.",
    ),
    MetricSpec(
        "smp_probe_events_dropped_total",
        "counter",
        "",
        (NODE_LABEL,),
        "Probe events lost in the kernel (ring buffer full); non-zero means undercounting.",
    ),
    MetricSpec(
        "smp_attached_sidecars", "gauge", "", (NODE_LABEL,), "Sidecar processes being traced."
    ),
    MetricSpec(
        "smp_agent_up",
        "gauge",
        "",
        ("reason", NODE_LABEL),
        "1 when the agent is ready (reason=ready), else 0 with why: starting, "
        "capability_missing, probe_load_failed, no_snapshot, snapshot_stale, "
        "discovery_not_synced, pids_not_visible.",
    ),
    MetricSpec(
        "smp_probe_load_failures_total",
        "counter",
        "",
        (),
        "Failed attempts to load the probes (the agent retries with backoff).",
    ),
    MetricSpec(
        "smp_discovery_last_sync_timestamp_seconds",
        "gauge",
        "seconds",
        (),
        "Unix time of the last successful list or watch answer from the API server.",
    ),
    MetricSpec(
        "smp_discovery_pods_skipped",
        "gauge",
        "",
        ("role",),
        "Mesh pods of the node that are not traced, by role: gateway, waypoint, ztunnel, "
        "ambient (no sidecar to measure).",
    ),
    MetricSpec(
        "smp_discovery_errors_total",
        "counter",
        "",
        (),
        "Failed pod lists and watches (each followed by a reconnect with backoff).",
    ),
    MetricSpec(
        "smp_build_info",
        "gauge",
        "",
        ("version", NODE_LABEL),
        "Always 1; the version of smp-profiler.",
    ),
)
SPEC = {s.name: s for s in SPECS}

LabelKey = tuple[tuple[str, str], ...]
STATUS_PROTOCOLS = ("http1", "http2", "grpc")
_CODES = {"http1": range(100, 600), "http2": range(100, 600), "grpc": range(0, 17)}


def code_label(protocol: str, code: str) -> str:
    """A status as the ``code`` label, bounded so the series stay few: HTTP 100-599 and
    gRPC 0-16 as themselves, "unknown" as it is, any other value "other"."""
    if code == "unknown":
        return code
    ok = code.isdigit() and int(code) in _CODES.get(protocol, ())
    return str(int(code)) if ok else "other"


@dataclass(frozen=True)
class ContainerUsage:
    """One traced container's own accounting from its cgroup: working set and CPU (all of
    its processes, e.g. pilot-agent next to Envoy)."""

    labels: Mapping[str, str]
    role: str
    memory_working_set_bytes: int | None
    cpu_seconds: float | None


@dataclass(frozen=True)
class Health:
    """The agent's readiness: ``reason`` a short code, ``detail`` the sentence for
    ``/readyz``."""

    up: bool
    reason: str
    detail: str
    load_failures: int = 0
    discovery_last_sync: float | None = None  # Unix time
    discovery_errors: int = 0
    pods_skipped: Mapping[str, int] = field(default_factory=dict)  # role -> pods


def _key(labels: Mapping[str, str]) -> LabelKey:
    return tuple((v, str(labels.get(k, ""))) for k, v in EXPORTED_LABELS.items())


def prometheus_buckets(h: HistogramLike, bounds: tuple[float, ...] = LEG_BUCKETS) -> list[int]:
    """Cumulative counts at ``bounds`` (seconds): a recorded bucket counts below a bound when
    its inclusive upper end (us) is at or below it, so no value is ever counted too low."""
    upper_us, counts = h.buckets()
    if len(counts) == 0:
        return [0] * len(bounds)
    cum = np.cumsum(counts)
    idx = np.searchsorted(upper_us, np.asarray(bounds) * 1e6, side="right")
    return [int(cum[i - 1]) if i > 0 else 0 for i in idx]


@dataclass
class _Totals:
    """Cumulative values of one label set and role."""

    requests: int = 0
    cpu_seconds: float = 0.0
    memory: int = 0
    socket_bytes: int = 0
    unparsed_bytes: int = 0
    h2_blocks_lost: int = 0
    statuses_lost: int = 0
    statuses: dict[tuple[str, str], int] = field(default_factory=dict)  # (protocol, code label)
    write_stamp_missing: dict[str, int] = field(default_factory=dict)  # leg -> writes
    legs: dict[str, np.ndarray] = field(default_factory=dict)  # [buckets..., count] cumulative
    leg_sums: dict[str, float] = field(default_factory=dict)

    def add(self, t: TargetLike, with_memory: bool) -> None:
        self.requests += int(t.requests)
        self.cpu_seconds += float(t.cpu_seconds)
        # optional in snapshots built elsewhere (older replays): absent counts as 0
        self.socket_bytes += int(getattr(t, "socket_bytes", 0))
        self.unparsed_bytes += int(getattr(t, "unparsed_bytes", 0))
        self.h2_blocks_lost += int(getattr(t, "h2_blocks_lost", 0))
        self.statuses_lost += int(getattr(t, "statuses_lost", 0))
        for leg, n in getattr(t, "write_stamp_missing", {}).items():
            self.write_stamp_missing[leg] = self.write_stamp_missing.get(leg, 0) + int(n)
        for (proto, code), n in getattr(t, "statuses", {}).items():
            if proto in STATUS_PROTOCOLS:
                k = (proto, code_label(proto, str(code)))
                self.statuses[k] = self.statuses.get(k, 0) + int(n)
        if with_memory:
            self.memory += int(t.memory_working_set_bytes)
        for leg, h in t.legs.items():
            row = np.array([*prometheus_buckets(h), int(h.count)], dtype=np.int64)
            self.legs[leg] = self.legs[leg] + row if leg in self.legs else row
            self.leg_sums[leg] = self.leg_sums.get(leg, 0.0) + h.total_us / 1e6

    def merge(self, o: _Totals) -> None:
        self.requests += o.requests
        self.cpu_seconds += o.cpu_seconds
        self.socket_bytes += o.socket_bytes
        self.unparsed_bytes += o.unparsed_bytes
        self.h2_blocks_lost += o.h2_blocks_lost
        self.statuses_lost += o.statuses_lost
        for leg, n in o.write_stamp_missing.items():
            self.write_stamp_missing[leg] = self.write_stamp_missing.get(leg, 0) + n
        for k, n in o.statuses.items():
            self.statuses[k] = self.statuses.get(k, 0) + n
        for leg, row in o.legs.items():
            self.legs[leg] = self.legs[leg] + row if leg in self.legs else row.copy()
            self.leg_sums[leg] = self.leg_sums.get(leg, 0.0) + o.leg_sums[leg]


def _targets(snapshot: SnapshotLike) -> list[tuple[int | None, TargetLike]]:
    t = snapshot.targets
    if isinstance(t, Mapping):
        return list(t.items())
    return [(None, x) for x in t]


class SnapshotCollector(Collector):
    """A ``prometheus_client`` collector of the latest snapshot given to :meth:`update`."""

    def __init__(
        self,
        retire_after: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        health: Callable[[], Health] | None = None,
        node: str = "",
    ) -> None:
        self._lock = threading.Lock()
        self.node = node
        self._clock = clock
        self.health = health
        self._updated_at: float | None = None
        self._containers: dict[tuple[LabelKey, str], ContainerUsage] = {}
        self.retire_after = retire_after
        self._live: dict[int, tuple[LabelKey, str, TargetLike]] = {}
        self._retired: dict[tuple[LabelKey, str], _Totals] = {}
        self._last_seen: dict[tuple[LabelKey, str], float] = {}
        self._view: dict[tuple[LabelKey, str], _Totals] = {}
        self._drops = 0
        self._drops_base = 0
        self._attached = 0
        self.updated = False

    def update(
        self, snapshot: SnapshotLike, containers: Sequence[ContainerUsage] | None = None
    ) -> None:
        """Take a new engine snapshot (cumulative values) as the current state, with the
        traced containers' own cgroup accounting when known."""
        now = self._clock()
        usage = {(_key(c.labels), c.role): c for c in containers or ()}
        live: dict[int, tuple[LabelKey, str, TargetLike]] = {}
        for i, (pid, t) in enumerate(_targets(snapshot)):
            live[pid if pid is not None else -1 - i] = (_key(t.labels), t.role, t)
        with self._lock:
            for pid, (key, role, t) in self._live.items():
                if pid not in live or live[pid][:2] != (key, role):
                    _gone = _Totals()
                    _gone.add(t, with_memory=False)
                    self._retired.setdefault((key, role), _Totals()).merge(_gone)
            self._live = live
            view: dict[tuple[LabelKey, str], _Totals] = {}
            for key, role, t in live.values():
                view.setdefault((key, role), _Totals()).add(t, with_memory=True)
                self._last_seen[key, role] = now
            for k in list(self._retired):
                if k not in view and now - self._last_seen.get(k, now) > self.retire_after:
                    del self._retired[k]
                    self._last_seen.pop(k, None)
            for k, old in self._retired.items():
                view.setdefault(k, _Totals()).merge(old)
            self._view = view
            drops = snapshot.drops
            total = sum(drops.values()) if isinstance(drops, Mapping) else int(drops)
            if total < self._drops - self._drops_base:  # the engine was restarted
                self._drops_base = self._drops
            self._drops = self._drops_base + total
            # sidecar targets only (the engine's ``attached`` counts its app targets too)
            self._attached = sum(role == "sidecar" for _, role, _ in live.values())
            self._containers = usage
            self.updated = True
            self._updated_at = now

    def age(self) -> float | None:
        """Seconds since the last :meth:`update`; None before the first."""
        with self._lock:
            return None if self._updated_at is None else self._clock() - self._updated_at

    def label_sets(self) -> int:
        """How many (labels, role) series groups are held: live plus retired."""
        with self._lock:
            return len(self._view)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            view = dict(self._view)
            live = {(k, r) for k, r, _ in self._live.values()}
            drops, attached = self._drops, self._attached
            containers = dict(self._containers)
        samples: dict[str, list[tuple[list[str], float]]] = {s.name: [] for s in SPECS}
        hists: list[tuple[list[str], list[tuple[str, float]], float]] = []
        bounds = [repr(float(b)) for b in LEG_BUCKETS]
        for (key, role), tot in sorted(view.items()):
            labels = [v for _, v in key]
            if role == "app":
                samples["smp_app_cpu_seconds_total"].append((labels, tot.cpu_seconds))
                continue
            samples["smp_sidecar_requests_total"].append((labels, tot.requests))
            samples["smp_sidecar_cpu_seconds_total"].append((labels, tot.cpu_seconds))
            samples["smp_sidecar_socket_bytes_total"].append((labels, tot.socket_bytes))
            samples["smp_sidecar_unparsed_bytes_total"].append((labels, tot.unparsed_bytes))
            samples["smp_sidecar_http2_blocks_lost_total"].append((labels, tot.h2_blocks_lost))
            samples["smp_sidecar_statuses_lost_total"].append((labels, tot.statuses_lost))
            for leg, n in sorted(tot.write_stamp_missing.items()):
                samples["smp_sidecar_write_stamp_missing_total"].append(([*labels, leg], n))
            for (proto, code), n in sorted(tot.statuses.items()):
                samples["smp_sidecar_responses_total"].append(([*labels, proto, code], n))
            if (key, role) in live:
                own = containers.get((key, role))
                memory = tot.memory
                if own is not None and own.memory_working_set_bytes is not None:
                    memory = own.memory_working_set_bytes
                samples["smp_sidecar_memory_working_set_bytes"].append((labels, memory))
            for leg, row in sorted(tot.legs.items()):
                counts = [float(c) for c in row[:-1]]
                buckets = [*zip(bounds, counts, strict=True), ("+Inf", float(row[-1]))]
                hists.append(([*labels, leg], buckets, tot.leg_sums[leg]))
        node = self.node
        for (key, _), c in sorted(containers.items(), key=lambda kv: kv[0]):
            labels = [v for _, v in key]
            if c.memory_working_set_bytes is not None:
                samples["smp_container_memory_working_set_bytes"].append(
                    (labels, c.memory_working_set_bytes)
                )
            if c.cpu_seconds is not None:
                samples["smp_container_cpu_seconds_total"].append((labels, c.cpu_seconds))
        samples["smp_probe_events_dropped_total"].append(([node], drops))
        samples["smp_attached_sidecars"].append(([node], attached))
        samples["smp_build_info"].append(([__version__, node], 1))
        if self.health is not None:
            health = self.health()
            samples["smp_agent_up"].append(([health.reason, node], 1.0 if health.up else 0.0))
            for role, n in sorted(health.pods_skipped.items()):
                samples["smp_discovery_pods_skipped"].append(([role], n))
            samples["smp_probe_load_failures_total"].append(([], health.load_failures))
            samples["smp_discovery_errors_total"].append(([], health.discovery_errors))
            if health.discovery_last_sync is not None:
                samples["smp_discovery_last_sync_timestamp_seconds"].append(
                    ([], health.discovery_last_sync)
                )
        for spec in SPECS:
            if spec.type == "histogram":
                h = HistogramMetricFamily(spec.name, spec.help, labels=spec.labels)
                for hl, hb, hs in hists:
                    h.add_metric(hl, hb, hs)
                yield h
                continue
            fam: CounterMetricFamily | GaugeMetricFamily
            if spec.type == "counter":
                fam = CounterMetricFamily(
                    spec.name.removesuffix("_total"), spec.help, labels=spec.labels
                )
            else:
                fam = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
            for labels, value in samples[spec.name]:
                fam.add_metric(labels, value)
            yield fam
