"""The whole DaemonSet path on one node: the testbed's real Envoy, ``smp-profiler daemon
--no-kubernetes`` (a subprocess), Debian's Prometheus scraping it every second, and the
cluster-wide bundle of ``report --prometheus`` checked against a direct capture of the same
window. Then the sidecar is killed and started again: the new PID's requests are counted."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _prom import daemon_process, prometheus_server
from _testbed import send_requests

from profiler.capture import CaptureConfig, start_capture
from profiler.cli import main as cli
from profiler.daemon.promql import Prometheus
from profiler.loadgen import LoadSpec, run_load
from profiler.model import load_file
from profiler.smp import validate

pytestmark = [pytest.mark.bpf, pytest.mark.testbed, pytest.mark.envoy, pytest.mark.prometheus]
RATE, SECONDS = 250, 10
LEGS = ("request_proxy", "upstream", "response_proxy", "sidecar_total")


def _value(prom: Prometheus, expr: str) -> float | None:
    got = prom.query(expr)
    return got[0].value if got else None


def _wait_value(
    prom: Prometheus, expr: str, ok: Callable[[float], bool], timeout: float = 20.0
) -> float:
    deadline = time.monotonic() + timeout
    while True:
        v = _value(prom, expr)
        if v is not None and ok(v):
            return v
        assert time.monotonic() < deadline, f"{expr} = {v}"
        time.sleep(0.2)


def test_prometheus_scrapes_the_daemon_and_the_cluster_report_matches_a_capture(
    testbed_factory: Callable[..., Any], tmp_path: Path
) -> None:
    tb = testbed_factory()
    server, client = tb.state.server, tb.state.client
    pod_cgroup = str(Path(server.cgroups["istio-proxy"]).parent)
    args = ("--no-kubernetes", "--interval", "0.2", "--cgroup-root", pod_cgroup)
    with (
        daemon_process(tmp_path / "daemon.log", *args) as daemon,
        prometheus_server(tmp_path, [daemon.url.removeprefix("http://")]) as prom,
    ):
        sel = f'{{k8s_pod_name="{server.uid}",k8s_container_name="envoy"}}'
        _wait_value(prom, f"smp_sidecar_requests_total{sel}", lambda v: v == 0, 30)

        # load from the client pod, a direct capture of the same Envoy over the same window
        session = start_capture(CaptureConfig(sidecar_pids=[server.envoy_pid], duration_s=None))
        spec = LoadSpec("builtin", tb.state.url, RATE, SECONDS, connections=4,
                        netns=client.netns, cgroup=client.cgroups["client"])  # fmt: skip
        load = session.during(lambda: run_load(spec))
        cap = session.stop()
        start, end = load.start_time.timestamp(), load.end_time.timestamp()
        assert load.status_counts == {200: load.requests} and cap["drops"] == 0

        # Prometheus has the leg histograms and the CPU counters of the sidecar
        while time.time() < end + 3:  # a scrape after the window, of a snapshot after it
            time.sleep(0.2)
        for leg in LEGS:
            expr = (
                f'smp_sidecar_leg_duration_seconds_count{{k8s_pod_name="{server.uid}",leg="{leg}"}}'
            )
            assert (_value(prom, expr) or 0) >= load.requests, leg
        buckets = prom.query(f"smp_sidecar_leg_duration_seconds_bucket{sel}")
        assert len({s.labels["le"] for s in buckets}) > 20
        assert (_value(prom, f"smp_sidecar_cpu_seconds_total{sel}") or 0) > 0
        assert (_value(prom, f'smp_app_cpu_seconds_total{{k8s_pod_name="{server.uid}"}}') or 0) > 0

        # the cluster-wide bundle of the window against the capture
        out = tmp_path / "cluster.json"
        argv = ["report", "--prometheus", prom.url, "--start", str(start), "--end", str(end)]
        assert cli([*argv, "-o", str(out)]) == 0
        doc = load_file(out)
        assert validate(doc) == []
        sc, (direct,) = doc["details"]["sidecar"], cap["sidecars"]
        total, d_total = doc["details"]["legs"]["sidecar_total"], direct["legs"]["sidecar_total"]
        print(
            f"\nrequests: load {load.requests}, capture {direct['requests']}, "
            f"prometheus {sc['requests']}; cpu s: capture {direct['cpu_seconds']}, "
            f"prometheus {sc['cpu_seconds']}; sidecar_total p50 ms: capture "
            f"{d_total['p50_ms']}, prometheus {total['p50_ms']} in {total['p50_bucket_ms']}"
        )
        assert direct["requests"] == load.requests
        assert sc["requests"] == pytest.approx(direct["requests"], rel=0.05)
        assert doc["service_mesh_config"]["sidecar"]["count"] == 1
        assert doc["service_mesh_config"]["sidecar"]["rps"] == pytest.approx(RATE, rel=0.06)
        lo, hi = total["p50_bucket_ms"]
        assert abs(total["p50_ms"] - d_total["p50_ms"]) <= (hi - lo) + 0.2 * d_total["p50_ms"]
        assert sc["cpu_seconds"] == pytest.approx(direct["cpu_seconds"], rel=0.15)
        assert sc["mem_mb"] > 1 and sc["dropped_events"] == 0

        # the sidecar crashes and is started again: the new PID is traced within seconds
        before = _value(prom, f"smp_sidecar_requests_total{sel}")
        assert before is not None
        old = server.envoy_pid
        t0 = time.monotonic()
        new = tb.restart_envoy()
        daemon.wait_log(rf"targets: \+\[[^\]]*\b{new}\b", timeout=10)
        attached_s = time.monotonic() - t0
        assert new != old
        assert re.search(rf"targets: \+\[[^\]]*\] -\[[^\]]*\b{old}\b", daemon.text())
        replies = send_requests(tb, 23, "restart")
        assert [r["status"] for r in replies] == [200] * 23
        after = _wait_value(prom, f"smp_sidecar_requests_total{sel}", lambda v: v >= before + 23)
        seen_s = time.monotonic() - t0
        print(
            f"restart: new PID {new} attached after {attached_s:.1f} s, its requests in "
            f"Prometheus after {seen_s:.1f} s"
        )
        assert after == before + 23  # the pod's counter kept counting, none lost or doubled
        assert _value(prom, "smp_attached_sidecars") == 1
