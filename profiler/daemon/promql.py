"""The query layer of ``report --prometheus``: the DaemonSet's metrics over a window, from
Prometheus' HTTP API (``/api/v1/query``), merged by Prometheus (``sum by (le)``).

Pure parts (response parsing, quantiles of merged buckets, the PromQL text) are separate
from the one function that does HTTP, so they are tested on the API's documented JSON.
"""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from profiler.daemon.metrics import NODE_LABEL, NS_LABEL, POD_LABELS
from profiler.errors import SmpError, TargetUnreachable, UsageError


class PrometheusQueryError(SmpError):
    """Prometheus answered, but with an error (a bad query, a timeout on its side)."""

    exit_code = 4


@dataclass(frozen=True)
class Sample:
    labels: Mapping[str, str]
    value: float
    time: float


def _float(v: str) -> float:
    return float(v)  # Prometheus writes "NaN", "+Inf", "-Inf": float() reads them all


def parse_response(doc: Mapping[str, Any]) -> list[Sample]:
    """Samples of an instant-query answer (resultType vector or scalar); a matrix gives its
    last point per series. Raises :class:`PrometheusQueryError` on ``status: error``."""
    if doc.get("status") != "success":
        raise PrometheusQueryError(
            f"Prometheus: {doc.get('errorType', 'error')}: {doc.get('error', 'no detail')}"
        )
    data = doc.get("data")
    if not isinstance(data, Mapping) or "resultType" not in data:
        raise PrometheusQueryError("Prometheus answered without data.resultType")
    kind, result = data["resultType"], data.get("result")
    if result is None:
        raise PrometheusQueryError("Prometheus answered without data.result")
    if kind == "vector":
        return [Sample(r["metric"], _float(r["value"][1]), float(r["value"][0])) for r in result]
    if kind == "scalar":
        return [Sample({}, _float(result[1]), float(result[0]))]
    if kind == "matrix":
        return [
            Sample(r["metric"], _float(r["values"][-1][1]), float(r["values"][-1][0]))
            for r in result
            if r["values"]
        ]
    raise PrometheusQueryError(f"Prometheus answered a {kind}, not a vector")


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """The ``q`` quantile of cumulative buckets ``(le, count)``, interpolated linearly inside
    a bucket as Prometheus' ``histogram_quantile`` does (lower bound 0 for the first)."""
    if not 0 <= q <= 1:
        raise ValueError(f"quantile {q} is not within 0..1")
    b = sorted(buckets)
    if not b or not math.isinf(b[-1][0]):
        raise ValueError("buckets need a +Inf bucket")
    total = b[-1][1]
    if total <= 0:
        return math.nan
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in b:
        if c >= rank:
            if math.isinf(le):
                return prev_le  # above the last finite bound: its value, as Prometheus
            if c == prev_c:
                return le
            return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
        prev_le, prev_c = le, c
    return prev_le


_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def selector(namespace: str | None = None, **labels: str) -> str:
    """``{k8s_namespace_name="shop",leg="upstream"}`` with values quoted for PromQL."""
    pairs = {NS_LABEL: namespace, **labels}
    parts = []
    for k, v in pairs.items():
        if v is None:
            continue
        if not _LABEL.match(k):
            raise UsageError(f"'{k}' is not a label name")
        parts.append(f"{k}={json.dumps(v)}")
    return "{" + ",".join(parts) + "}"


def one_scrape(expr: str, *extra: str) -> str:
    """``expr`` with duplicate scrapes of one agent collapsed: two jobs (a pod annotation
    scrape and a Service one, or a PodMonitor beside them) scrape the same ``instance`` and
    give identical series that differ only in ``job`` and the target labels; ``max by`` the
    instance and the agent's own labels keeps one. Agents that are really different (another
    node, a restarted agent: another pod IP) have another instance and are summed."""
    by = ", ".join(["instance", *POD_LABELS, *extra])
    return f"max by ({by}) ({expr})"


def window_queries(window_s: int, namespace: str | None = None) -> dict[str, str]:
    """The PromQL of one window ending at the evaluation time; histograms summed by ``le``,
    every series counted once however many jobs scrape it (:func:`one_scrape`)."""
    if window_s <= 0:
        raise UsageError(f"the window must be positive, not {window_s} s")
    w, sel = f"{window_s}s", selector(namespace)
    leg = "smp_sidecar_leg_duration_seconds"
    mem = "smp_sidecar_memory_working_set_bytes"
    pod_of = ", ".join(POD_LABELS)

    def inc(metric: str, *extra: str) -> str:
        return one_scrape(f"increase({metric}{sel}[{w}])", *extra)

    return {
        "leg_buckets": f"sum by (le, leg) ({inc(f'{leg}_bucket', 'le', 'leg')})",
        "leg_sum": f"sum by (leg) ({inc(f'{leg}_sum', 'leg')})",
        "requests": f"sum({inc('smp_sidecar_requests_total')})",
        "sidecar_cpu_seconds": f"sum({inc('smp_sidecar_cpu_seconds_total')})",
        "app_cpu_seconds": f"sum({inc('smp_app_cpu_seconds_total')})",
        "sidecar_memory_bytes": f"sum({one_scrape(f'avg_over_time({mem}{sel}[{w}])')})",
        # the gauge, not a counter: a gone pod's counters stay exported for a while; one per
        # container however many agents or jobs reported it
        "sidecars": f"count(count by ({pod_of}) (last_over_time({mem}{sel}[{w}])))",
        "dropped": (
            f"sum(max by (instance, {NODE_LABEL}) (increase(smp_probe_events_dropped_total[{w}])))"
        ),
    }


@dataclass(frozen=True)
class WindowResult:
    """The DaemonSet's view of one window, cluster-wide (or of one namespace)."""

    window_s: int
    legs: dict[str, list[tuple[float, float]]]  # leg -> cumulative (le, count), +Inf last
    leg_sums: dict[str, float]
    requests: float
    sidecar_cpu_seconds: float
    app_cpu_seconds: float
    sidecar_memory_bytes: float
    sidecars: int
    dropped: float

    @property
    def rps(self) -> float:
        return self.requests / self.window_s

    @property
    def sidecar_cpu_mcores(self) -> float:
        return 1000.0 * self.sidecar_cpu_seconds / self.window_s

    @property
    def sidecar_mem_mb(self) -> float:
        return self.sidecar_memory_bytes / 2**20

    def percentile(self, leg: str, p: float) -> float:
        """Percentile ``p`` (0..100) of a leg in seconds, from the merged buckets."""
        return quantile(p / 100.0, self.legs[leg])


def build_window(window_s: int, answers: Mapping[str, list[Sample]]) -> WindowResult:
    """A :class:`WindowResult` from the answers to :func:`window_queries`."""

    def scalar(name: str) -> float:
        got = answers.get(name, [])
        return got[0].value if got else 0.0

    legs: dict[str, list[tuple[float, float]]] = {}
    for s in answers.get("leg_buckets", []):
        legs.setdefault(s.labels.get("leg", ""), []).append((float(s.labels["le"]), s.value))
    return WindowResult(
        window_s=window_s,
        legs={k: sorted(v) for k, v in sorted(legs.items())},
        leg_sums={s.labels.get("leg", ""): s.value for s in answers.get("leg_sum", [])},
        requests=scalar("requests"),
        sidecar_cpu_seconds=scalar("sidecar_cpu_seconds"),
        app_cpu_seconds=scalar("app_cpu_seconds"),
        sidecar_memory_bytes=scalar("sidecar_memory_bytes"),
        sidecars=int(scalar("sidecars")),
        dropped=scalar("dropped"),
    )


@dataclass(frozen=True)
class Prometheus:
    """A Prometheus server's HTTP API."""

    url: str
    timeout: float = 30.0

    def query(self, expr: str, at: float | None = None) -> list[Sample]:
        params = {"query": expr}
        if at is not None:
            params["time"] = repr(float(at))
        req = urllib.request.Request(
            self.url.rstrip("/") + "/api/v1/query",
            data=urllib.parse.urlencode(params).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                doc = json.load(r)
        except urllib.error.HTTPError as e:  # 400/422/503 carry the API's error document
            try:
                doc = json.load(e)
            except ValueError:
                raise TargetUnreachable(f"Prometheus at {self.url}: HTTP {e.code}") from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise TargetUnreachable(f"cannot reach Prometheus at {self.url}: {reason}") from None
        except ValueError:
            raise PrometheusQueryError(f"Prometheus at {self.url} answered no JSON") from None
        return parse_response(doc)

    def window(self, start: float, end: float, namespace: str | None = None) -> WindowResult:
        """The DaemonSet's metrics over ``[start, end]`` (Unix seconds)."""
        window_s = round(end - start)
        if window_s <= 0:
            raise UsageError("--end must be after --start")
        answers = {k: self.query(q, at=end) for k, q in window_queries(window_s, namespace).items()}
        return build_window(window_s, answers)
