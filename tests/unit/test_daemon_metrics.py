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
    code_label,
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


def test_code_label_is_bounded() -> None:
    """HTTP 100-599 and gRPC 0-16 as themselves; anything else one "other" (a garbage or
    huge code must not make a series of its own); "unknown" kept."""
    assert [code_label("http1", c) for c in ("100", "200", "503", "599")] == [
        "100", "200", "503", "599"
    ]  # fmt: skip
    assert [code_label("http2", c) for c in ("99", "600", "0", "65535", "", "2x", "-1")] == [
        "other"
    ] * 7
    assert [code_label("grpc", c) for c in ("0", "14", "16")] == ["0", "14", "16"]
    assert [code_label("grpc", c) for c in ("17", "200", "x")] == ["other"] * 3
    assert code_label("http2", "unknown") == code_label("http1", "unknown") == "unknown"
    assert code_label("http1", "0503") == "503"  # one series per code, however spelled


def test_responses_by_protocol_and_code_summed_bounded_and_monotonic() -> None:
    """Statuses of a snapshot become smp_sidecar_responses_total{protocol, code}: codes out
    of range summed into "other", two processes with the same labels summed, a restarted
    sidecar's counts kept (monotonic); the app's statuses are not a sidecar's; the HTTP/2
    blocks lost, the statuses lost and the writes timed by their call (per leg) are their
    own counters, summed over the two processes."""
    now = [0.0]
    c = SnapshotCollector(retire_after=60.0, clock=lambda: now[0])
    a = sidecar(10, 1.0, {})
    a.statuses = {("http1", "200"): 7, ("http1", "503"): 2, ("http1", "unknown"): 1,
                  ("http2", "200"): 4, ("http2", "999"): 1, ("http2", "700"): 2,
                  ("http2", "unknown"): 3, ("grpc", "0"): 5, ("grpc", "14"): 1,
                  ("grpc", "99"): 1, ("spdy", "200"): 9}  # fmt: skip
    a.h2_blocks_lost = 3
    a.statuses_lost = 6
    a.write_stamp_missing = {"request_proxy": 2, "response_proxy": 0}
    b = sidecar(1, 0.1, {})
    b.statuses = {("http1", "503"): 1}
    b.statuses_lost = 1
    b.write_stamp_missing = {"request_proxy": 1, "response_proxy": 5}
    app = TargetSnapshot(APP, "app", 2, {}, 0.1, 0)
    app.statuses = {("http1", "404"): 2}
    c.update(Snapshot({1: a, 2: b, 3: app}, attached=2))
    m = scrape(c)

    def r(proto: str, code: str) -> tuple[tuple[str, str], ...]:
        return lab(REVIEWS, protocol=proto, code=code)

    want = {
        r("http1", "200"): 7, r("http1", "503"): 3, r("http1", "unknown"): 1,
        r("http2", "200"): 4, r("http2", "other"): 3, r("http2", "unknown"): 3,
        r("grpc", "0"): 5, r("grpc", "14"): 1, r("grpc", "other"): 1,
    }  # fmt: skip
    assert m["smp_sidecar_responses_total"] == want
    assert m["smp_sidecar_http2_blocks_lost_total"] == {lab(REVIEWS): 3}
    assert m["smp_sidecar_statuses_lost_total"] == {lab(REVIEWS): 7}  # both processes
    assert m["smp_sidecar_write_stamp_missing_total"] == {
        lab(REVIEWS, leg="request_proxy"): 3, lab(REVIEWS, leg="response_proxy"): 5
    }  # fmt: skip
    # the sidecar restarts: its new process starts from zero, the series keep counting
    now[0] = 5.0
    again = sidecar(1, 0.1, {})
    again.statuses = {("http1", "503"): 4}
    c.update(Snapshot({4: again}, attached=1))
    got = scrape(c)["smp_sidecar_responses_total"]
    assert got[r("http1", "503")] == 3 + 4 and got[r("grpc", "other")] == 1


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
