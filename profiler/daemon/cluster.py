"""Cluster-wide SMP results from the DaemonSet's metrics (``report --prometheus``).

Prometheus does the merging: the leg histograms are ``sum by (le, leg)`` of their increase
over the window (see :mod:`profiler.daemon.promql`), percentiles are read from the merged
buckets, never averaged. The SMP documents hold what the metrics can say: the sidecars'
count, CPU (millicores over the window), memory (average working set) and rate; what they
cannot say (the clients' end-to-end latency, the load generator, the nodes' hardware) is left
out rather than guessed. Everything else is in ``details``.

:func:`build_bundle` is pure (a :class:`WindowResult` in, the bundle out); :func:`cluster_bundle`
asks a Prometheus server for the window first.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from profiler import __version__, stats
from profiler.daemon.metrics import CONTAINER_LABEL, MESH_LABEL, NODE_LABEL, NS_LABEL, POD_LABEL
from profiler.daemon.promql import Prometheus, Sample, WindowResult, selector, window_queries
from profiler.errors import UsageError
from profiler.smp.build import duration_string, int32, mib_to_mb
from profiler.smp.read import format_time
from profiler.smp.schema import SMP_VERSION
from profiler.units import PERCENTILES, pkey

KIND = "smp-profiler/cluster-bundle"
FORMAT_VERSION = 1
PS = PERCENTILES
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RELATIVE = re.compile(r"^now(?:\s*-\s*(\d+(?:\.\d+)?)\s*([smhd]))?$")


def parse_time(text: str, now: float) -> float:
    """``--start``/``--end``: RFC 3339 (``2026-12-02T01:00:00Z``), Unix seconds, ``now`` or
    ``now-15m`` (s, m, h, d) -> Unix seconds."""
    t = text.strip()
    m = _RELATIVE.match(t)
    if m:
        return now - (float(m.group(1)) * _UNITS[m.group(2)] if m.group(1) else 0.0)
    try:
        return float(t)
    except ValueError:
        pass
    try:
        d = datetime.fromisoformat(t[:-1] + "+00:00" if t.endswith(("Z", "z")) else t)
    except ValueError:
        raise UsageError(
            f"'{text}' is not a time (RFC 3339, Unix seconds, 'now' or 'now-15m')"
        ) from None
    return (d if d.tzinfo else d.replace(tzinfo=UTC)).timestamp()


def extra_queries(window_s: int, namespace: str | None = None) -> dict[str, str]:
    """Who reported over the window: the agents (one per node) and the proxies' kinds."""
    w, sel = f"{window_s}s", selector(namespace)
    mem = "smp_sidecar_memory_working_set_bytes"
    # inner count: one per sidecar container however many jobs scraped it
    pods = f"count by ({NS_LABEL}, {POD_LABEL}, {CONTAINER_LABEL}, {MESH_LABEL})"
    return {
        "agents": (
            f"count by (version) (count by (version, {NODE_LABEL}) "
            f"(last_over_time(smp_build_info[{w}])))"
        ),
        "containers": f"count by ({CONTAINER_LABEL}) ({pods} (last_over_time({mem}{sel}[{w}])))",
        "meshes": f"count by ({MESH_LABEL}) ({pods} (last_over_time({mem}{sel}[{w}])))",
    }


@dataclass(frozen=True)
class Reporters:
    """The agents (by version) and the sidecar containers (by name) seen in the window."""

    agents: dict[str, int] = field(default_factory=dict)
    containers: dict[str, int] = field(default_factory=dict)
    meshes: dict[str, int] = field(default_factory=dict)  # SMP mesh type ("" unknown) -> sidecars

    @classmethod
    def from_answers(cls, answers: Mapping[str, Sequence[Sample]]) -> Reporters:
        def by(name: str, label: str) -> dict[str, int]:
            return {s.labels.get(label, ""): int(s.value) for s in answers.get(name, [])}

        return cls(
            by("agents", "version"), by("containers", CONTAINER_LABEL), by("meshes", MESH_LABEL)
        )

    def mesh_type(self) -> tuple[str, str] | None:
        """(SMP mesh type, why) from the agents' evidence (the pods' injection annotations,
        never a container's name): the one mesh every sidecar reported, else INVALID_MESH
        with the reason (unknown or mixed); None when no sidecar was seen."""
        if not self.meshes:
            return None
        known = sorted(m for m in self.meshes if m)
        if len(known) == 1 and "" not in self.meshes:
            return known[0], "from the pods' injection annotations"
        if not known:
            return "INVALID_MESH", "unknown: no sidecar's pod says which mesh injected it"
        return "INVALID_MESH", "mixed: " + ",".join(known) + (
            ",unknown" if "" in self.meshes else ""
        )


def _r(x: float | None, nd: int = 6) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


def _bucket_of(q: float, buckets: Sequence[tuple[float, float]]) -> tuple[float, float] | None:
    """(lower, upper) bound in seconds of the bucket that holds the ``q`` quantile."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    prev = 0.0
    for le, c in buckets:
        if c >= q * total:
            return prev, le
        prev = le
    return None


def leg_summary(w: WindowResult, leg: str) -> dict[str, Any]:
    """One leg's merged buckets: count, mean (from ``_sum``) and interpolated percentiles."""
    buckets = w.legs[leg]
    count = buckets[-1][1] if buckets else 0.0
    total = w.leg_sums.get(leg)
    out: dict[str, Any] = {
        "count": _r(count, 3),
        "mean_ms": _r(total / count * 1000.0) if total is not None and count > 0 else None,
    }
    for p in PS:
        out[pkey(p) + "_ms"] = _r(w.percentile(leg, p) * 1000.0)
    b50 = _bucket_of(0.5, buckets)
    out["p50_bucket_ms"] = None if b50 is None else [_r(b * 1000.0) for b in b50]
    out["buckets"] = [["+Inf" if math.isinf(le) else le, _r(c, 3)] for le, c in buckets]
    return out


def sidecar_totals(w: WindowResult) -> dict[str, Any]:
    requests = max(w.requests, 0.0)
    return {
        "count": w.sidecars,
        "requests": _r(requests, 3),
        "rps": _r(w.rps, 3),
        "cpu_seconds": _r(w.sidecar_cpu_seconds),
        "cpu_mcores": _r(w.sidecar_cpu_mcores, 3),
        "cpu_ms_per_1k_requests": _r(
            stats.cpu_ms_per_1k_requests(max(w.sidecar_cpu_seconds, 0.0), round(requests)), 3
        ),
        "mem_mb": _r(w.sidecar_mem_mb, 3),
        "app_cpu_seconds": _r(w.app_cpu_seconds),
        "app_cpu_mcores": _r(1000.0 * w.app_cpu_seconds / w.window_s, 3),
        "dropped_events": _r(w.dropped, 3),
    }


def build_bundle(
    w: WindowResult,
    start: float,
    end: float,
    url: str,
    namespace: str | None = None,
    reporters: Reporters | None = None,
    queries: Mapping[str, str] | None = None,
    created: datetime | None = None,
    ids: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The cluster bundle of one window: the four SMP documents and ``details``."""
    rep = reporters or Reporters()
    ids = dict(ids or {})
    for k in ("test_id", "mesh_config_id", "env_id", "result_id"):
        ids.setdefault(k, str(uuid.uuid4()))
    t0 = datetime.fromtimestamp(end - w.window_s, UTC)
    t1 = datetime.fromtimestamp(end, UTC)
    where = {"namespace": namespace} if namespace else {}
    notes: list[str] = []
    if w.dropped > 0:
        notes.append(f"the probes dropped {w.dropped:.0f} events: counts are too low")
    if w.requests <= 0:
        notes.append("no request went through a traced sidecar in the window")
    if round(end - start) != end - start:
        notes.append(f"window rounded to {w.window_s} s ending at the given end")
    sc = sidecar_totals(w)
    mesh: dict[str, Any] = {
        "smp_version": SMP_VERSION,
        "id": ids["mesh_config_id"],
        "labels": {"sidecar_measured_by": "smp-profiler daemonset via prometheus"} | where,
        "sidecar": {
            "count": int32(w.sidecars),
            "cpu_mcores": int32(w.sidecar_cpu_mcores),
            "mem_mb": int32(mib_to_mb(w.sidecar_mem_mb)),  # SMP's MB: 10^6 bytes
            "rps": int32(w.rps),
        },
    }
    mesh_type = rep.mesh_type()
    if mesh_type is not None:
        labels = {"sidecar": ",".join(rep.containers), "mesh_type_evidence": mesh_type[1]}
        mesh["mesh_type"] = {"type": mesh_type[0], "labels": labels}
    versions = ",".join(sorted(rep.agents))
    return {
        "format_version": FORMAT_VERSION,
        "kind": KIND,
        "smp_version": SMP_VERSION,
        "performance_test_config": {
            "smp_version": SMP_VERSION,
            "id": ids["test_id"],
            "name": f"smp-profiler cluster window {format_time(t0)} .. {format_time(t1)}",
            "labels": {"tool": "smp-profiler", "tool_version": __version__, "source": "prometheus"}
            | where,
            "duration": duration_string(w.window_s),
        },
        "performance_test_results": [
            {
                "smp_version": SMP_VERSION,
                "id": ids["result_id"],
                "labels": {"source": "prometheus", "latencies": "sidecar legs in details"} | where,
                "start_time": format_time(t0),
                "end_time": format_time(t1),
                "details_uri": "#/details",
                "test_id": ids["test_id"],
                "mesh_config_id": ids["mesh_config_id"],
                "env_id": ids["env_id"],
            }
        ],
        "service_mesh_config": mesh,
        "environment_config": {
            "smp_version": SMP_VERSION,
            "id": ids["env_id"],
            "labels": {"nodes_reporting": str(sum(rep.agents.values()))}
            | ({"smp_profiler_versions": versions} if versions else {}),
        },
        "details": {
            "source": {
                "prometheus": url,
                "namespace": namespace,
                "merged_by": "prometheus: sum by (le, leg) of increase over the window",
                "queries": dict(queries or {}),
            },
            "window": {"start": format_time(t0), "end": format_time(t1), "seconds": w.window_s},
            "nodes_reporting": sum(rep.agents.values()),
            "sidecar_containers": dict(rep.containers),
            "sidecar": sc,
            "legs": {leg: leg_summary(w, leg) for leg in w.legs},
            "notes": notes,
        },
        "created": format_time(created or datetime.now(UTC)),
    }


def cluster_bundle(
    prom: Prometheus, start: float, end: float, namespace: str | None = None
) -> dict[str, Any]:
    """Ask ``prom`` for the window ``[start, end]`` (Unix seconds) and build the bundle."""
    w = prom.window(start, end, namespace)
    extra = extra_queries(w.window_s, namespace)
    reporters = Reporters.from_answers({k: prom.query(q, at=end) for k, q in extra.items()})
    queries = window_queries(w.window_s, namespace) | extra
    return build_bundle(w, start, end, prom.url, namespace, reporters, queries)
