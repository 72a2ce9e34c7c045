"""The exporter: specs as data, families from snapshots built here, exposition parsed back."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from profiler import __version__
from profiler.capture.snapshot import Snapshot, TargetSnapshot
from profiler.daemon.metrics import (
    EXPORTED_LABELS,
    LEG_BUCKETS,
    SPECS,
    SnapshotCollector,
    prometheus_buckets,
)
from profiler.histogram import LatencyHistogram

REVIEWS = {"namespace": "shop", "pod": "reviews-1", "container": "istio-proxy", "mesh": "ISTIO"}
APP = {"namespace": "shop", "pod": "reviews-1", "container": "reviews", "mesh": "ISTIO"}


def hist(*us: int) -> LatencyHistogram:
    h = LatencyHistogram()
    h.record_many(list(us))
    return h


def scrape(c: SnapshotCollector) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    reg = CollectorRegistry()
    reg.register(c)
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def lab(d: dict[str, str], **more: str) -> tuple[tuple[str, str], ...]:
    """The exported label set of a target's labels (k8s_namespace_name, ...)."""
    return tuple(sorted({**{EXPORTED_LABELS[k]: v for k, v in d.items()}, **more}.items()))


def sidecar(requests: int, cpu: float, legs: dict[str, LatencyHistogram]) -> TargetSnapshot:
    return TargetSnapshot(REVIEWS, "sidecar", requests, legs, cpu, 50_000_000)


def test_buckets_are_fine_below_a_millisecond() -> None:
    sub_ms = [b for b in LEG_BUCKETS if b < 1e-3]
    assert LEG_BUCKETS[0] == 1e-5 and LEG_BUCKETS[-1] == 10.0
    assert len(sub_ms) >= 12
    assert list(LEG_BUCKETS) == sorted(set(LEG_BUCKETS))


def test_prometheus_buckets_never_count_a_value_too_low() -> None:
    h = hist(100, 100, 100, 250, 250, 2000, 20_000_000)
    cum = dict(zip(LEG_BUCKETS, prometheus_buckets(h), strict=True))
    assert cum[1e-5] == 0
    assert cum[1e-4] == 3  # 100 us is exact below 256 us
    assert cum[3e-4] == 5
    assert cum[1e-3] == 5
    assert cum[3e-3] == 6
    assert cum[10.0] == 6  # 20 s lies above the last bound: only in +Inf


def test_families_from_a_snapshot() -> None:
    c = SnapshotCollector(node="node-a")
    legs = {"sidecar_total": hist(120, 180, 900), "upstream": hist(50, 60, 70)}
    snap = Snapshot(
        targets={
            4242: sidecar(3, 1.25, legs),
            4243: TargetSnapshot(APP, "app", 0, {}, 0.5, 10_000_000),
            4244: TargetSnapshot(APP, "app", 0, {}, 0.25, 10_000_000),
        },
        drops=7,
        attached=3,  # the engine counts every target; the metric counts sidecars
    )
    c.update(snap)
    m = scrape(c)
    assert m["smp_sidecar_requests_total"] == {lab(REVIEWS): 3}
    assert m["smp_sidecar_cpu_seconds_total"] == {lab(REVIEWS): 1.25}
    assert m["smp_app_cpu_seconds_total"] == {lab(APP): 0.75}  # two processes, one container
    assert m["smp_sidecar_memory_working_set_bytes"] == {lab(REVIEWS): 50_000_000}
    node = (("k8s_node_name", "node-a"),)
    assert m["smp_probe_events_dropped_total"] == {node: 7}
    assert m["smp_attached_sidecars"] == {node: 1}
    assert m["smp_build_info"] == {(("k8s_node_name", "node-a"), ("version", __version__)): 1}
    total = lab(REVIEWS, leg="sidecar_total")
    assert m["smp_sidecar_leg_duration_seconds_count"][total] == 3
    assert abs(m["smp_sidecar_leg_duration_seconds_sum"][total] - 0.0012) < 1e-9
    buckets = m["smp_sidecar_leg_duration_seconds_bucket"]
    assert buckets[lab(REVIEWS, leg="sidecar_total", le="0.0002")] == 2
    assert buckets[lab(REVIEWS, leg="sidecar_total", le="+Inf")] == 3
    assert buckets[lab(REVIEWS, leg="upstream", le="7.5e-05")] == 3
    # low cardinality: only the declared label names appear, never a PID
    allowed = {n for s in SPECS for n in s.labels} | {"le"}
    names = {k for series in m.values() for key in series for k, _ in key}
    assert names <= allowed and "pid" not in names


def test_counters_stay_monotonic_across_a_restart_then_retire() -> None:
    now = [0.0]
    c = SnapshotCollector(retire_after=60.0, clock=lambda: now[0])
    c.update(Snapshot({100: sidecar(10, 2.0, {"sidecar_total": hist(100)})}, attached=1))
    # the sidecar restarts: a new PID with the same labels starts from zero
    now[0] = 5.0
    c.update(Snapshot({200: sidecar(4, 0.5, {"sidecar_total": hist(100, 100)})}, attached=1))
    m = scrape(c)
    assert m["smp_sidecar_requests_total"] == {lab(REVIEWS): 14}
    assert m["smp_sidecar_cpu_seconds_total"] == {lab(REVIEWS): 2.5}
    assert m["smp_sidecar_leg_duration_seconds_count"][lab(REVIEWS, leg="sidecar_total")] == 3
    assert m["smp_sidecar_memory_working_set_bytes"] == {lab(REVIEWS): 50_000_000}
    # the pod goes away: its series stay while recent, then are dropped (bounded memory)
    now[0] = 10.0
    c.update(Snapshot({}, drops=0, attached=0))
    m = scrape(c)
    assert m["smp_sidecar_requests_total"] == {lab(REVIEWS): 14}
    assert "smp_sidecar_memory_working_set_bytes" not in m
    now[0] = 100.0
    c.update(Snapshot({}, attached=0))
    assert c.label_sets() == 0
    assert "smp_sidecar_requests_total" not in scrape(c)


def test_drops_survive_an_engine_restart() -> None:
    c = SnapshotCollector()
    c.update(Snapshot({}, drops=5))
    c.update(Snapshot({}, drops=2))  # the engine's counter started over
    assert scrape(c)["smp_probe_events_dropped_total"] == {(("k8s_node_name", ""),): 7}


def test_pod_churn_keeps_memory_bounded() -> None:
    now = [0.0]
    c = SnapshotCollector(retire_after=60.0, clock=lambda: now[0])
    held = []
    for i in range(2000):  # a new pod every second, each living 3 s
        now[0] = float(i)
        live = {
            1000 + j: TargetSnapshot(
                {"namespace": "churn", "pod": f"p{j}", "container": "istio-proxy"},
                "sidecar",
                requests=5,
                legs={"sidecar_total": hist(100)},
            )
            for j in range(max(0, i - 2), i + 1)
        }
        c.update(Snapshot(live, attached=len(live)))
        held.append(c.label_sets())
    assert max(held[1000:]) <= 64  # 3 live + the last 60 s of retired pods
    assert held[-1] == held[-500]
