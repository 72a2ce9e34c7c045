"""Debian's Prometheus, started on loopback, scrapes the daemon's /metrics served from
snapshots that grow at known rates; the query layer of ``report --prometheus`` and the
Grafana dashboard's queries then run against it.

The scrape is set up as a cluster's often is, badly: two jobs scrape the same agent (the
pod annotations and the Service's, as the community chart does), both with
``honor_labels: false`` and the target labels kubernetes_sd gives (``namespace``, ``pod``,
``container``, ``node`` of the agent's own pod). The numbers must still be the agent's, once."""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from profiler.capture.snapshot import Snapshot, TargetSnapshot
from profiler.daemon.metrics import ContainerUsage, SnapshotCollector
from profiler.daemon.promql import Prometheus, quantile
from profiler.daemon.server import MetricsServer
from profiler.histogram import LatencyHistogram

pytestmark = pytest.mark.prometheus

ROOT = Path(__file__).resolve().parents[2]
LABELS = {"namespace": "shop", "pod": "reviews-1", "container": "istio-proxy", "mesh": "ISTIO"}
# what kubernetes_sd relabeling puts on the agent's target: its own pod's namespace and name
TARGET_LABELS = {
    "namespace": "smp-profiler",
    "pod": "smp-profiler-x7k2p",
    "container": "smp-profiler",
    "node": "node-a",
}
TICK = 0.2  # seconds between snapshots: +10 requests, +10 ms CPU each (50 rps, 50 mcores)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GrowingSidecar:
    """Snapshots of one sidecar whose counters grow at known rates until stopped."""

    def __init__(self, collector: SnapshotCollector) -> None:
        self.collector = collector
        self.hist = LatencyHistogram()
        self.requests, self.cpu = 0, 0.0
        self.statuses: dict[tuple[str, str], int] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.hist.record_many([100] * 8 + [900] * 2)
            self.requests += 10
            self.cpu += 0.01
            # the 10 requests' statuses: 8 x 200, 1 x 503, 1 not read; and 5 gRPC
            # UNAVAILABLE, which are not HTTP responses
            for k, n in (
                (("http1", "200"), 8),
                (("http1", "503"), 1),
                (("http1", "unknown"), 1),
                (("grpc", "14"), 5),
            ):
                self.statuses[k] = self.statuses.get(k, 0) + n
            legs = {"sidecar_total": self.hist}
            t = TargetSnapshot(LABELS, "sidecar", self.requests, legs, self.cpu, 30 * 2**20)
            t.statuses = dict(self.statuses)
            # the container's cgroup: the same working set, 1.25x the proxy's CPU
            own = ContainerUsage(LABELS, "sidecar", 30 * 2**20, 1.25 * self.cpu)
            self.collector.update(Snapshot({4242: t}, drops=0, attached=1), [own])
            self.stop.wait(TICK)


@pytest.fixture(scope="module")
def scraped(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Prometheus, GrowingSidecar]]:
    tmp_path = tmp_path_factory.mktemp("prometheus")
    reg = CollectorRegistry()
    collector = SnapshotCollector(node="node-a")
    reg.register(collector)
    server = MetricsServer(reg, lambda: (True, ""), lambda: (True, ""), 0, "127.0.0.1").start()
    target = {"targets": [f"127.0.0.1:{server.port}"], "labels": TARGET_LABELS}
    sidecar = GrowingSidecar(collector)
    sidecar.thread.start()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "500ms", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {"job_name": job, "honor_labels": False, "static_configs": [target]}
                    for job in ("kubernetes-pods", "kubernetes-service-endpoints")
                ],
            }
        )
    )
    port = free_port()
    binary = shutil.which("prometheus")
    assert binary
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={cfg}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("w"),
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                with urllib.request.urlopen(url + "/-/ready", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "Prometheus did not become ready"
            time.sleep(0.1)
        yield Prometheus(url), sidecar
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        sidecar.stop.set()
        sidecar.thread.join(timeout=5)
        server.stop()


def test_prometheus_scrapes_and_the_window_queries_agree(
    scraped: tuple[Prometheus, GrowingSidecar],
) -> None:
    prom, _ = scraped
    deadline = time.monotonic() + 30
    while True:  # data for longer than the window: at least 8 scrapes (4 s) by both jobs
        got = prom.query("count_over_time(smp_sidecar_requests_total[1m])")
        if len(got) == 2 and min(g.value for g in got) >= 8:
            break
        assert time.monotonic() < deadline, "no scrapes"
        time.sleep(0.25)
    end = time.time()
    w = prom.window(end - 3, end)
    assert w.sidecars == 1 and w.dropped == 0
    assert w.rps == pytest.approx(50, rel=0.35)
    assert w.sidecar_cpu_mcores == pytest.approx(50, rel=0.35)
    assert w.sidecar_mem_mb == pytest.approx(30)
    buckets = w.legs["sidecar_total"]
    assert math.isinf(buckets[-1][0]) and buckets[-1][1] > 0
    # 80% of the values are 100 us, 20% 900 us
    below = dict(buckets)
    assert below[0.0001] / buckets[-1][1] == pytest.approx(0.8, abs=0.01)
    assert below[0.001] == buckets[-1][1]
    # our quantile of the merged buckets is Prometheus' own histogram_quantile
    for q in (0.5, 0.9, 0.99):
        expr = (
            f"histogram_quantile({q}, sum by (le) (increase("
            f'smp_sidecar_leg_duration_seconds_bucket{{job="kubernetes-pods"}}[{w.window_s}s])))'
        )
        (theirs,) = prom.query(expr, at=end)
        assert quantile(q, buckets) == pytest.approx(theirs.value, rel=1e-9)
    assert 0.00075 < w.percentile("sidecar_total", 99) <= 0.001


def test_dashboard_queries_run(scraped: tuple[Prometheus, GrowingSidecar]) -> None:
    prom, _ = scraped
    deadline = time.monotonic() + 30
    while not prom.query("rate(smp_sidecar_requests_total[2s]) > 0"):
        assert time.monotonic() < deadline, "no rate yet"
        time.sleep(0.5)
    dash = json.loads((ROOT / "daemonset" / "grafana-dashboard.json").read_text())
    empty = []
    for panel in dash["panels"]:
        for t in panel["targets"]:
            expr = t["expr"].replace("$__rate_interval", "5s")
            expr = expr.replace("$namespace", ".*").replace("$pod", ".*")
            if not prom.query(expr):  # a PromQL error raises
                empty.append(panel["title"])
    # every panel has data except the app share (no app in this snapshot)
    assert empty == ["Sidecar CPU as a share of the app's"]
    # the container's CPU beside the proxy's: 1.25x, as the snapshots grow them
    (panel,) = [p for p in dash["panels"] if p["title"].startswith("Sidecar container CPU")]
    container, proxy = (
        prom.query(t["expr"].replace("$__rate_interval", "5s").replace("$namespace", ".*")
                   .replace("$pod", ".*"))[0].value
        for t in panel["targets"]
    )  # fmt: skip
    assert container / proxy == pytest.approx(1.25, rel=0.1)
    # the 5xx share: 1 of the 9 HTTP responses with a known status (the unknown one and the
    # gRPC calls left out of the denominator: 1/10 or 1/14 otherwise)
    (panel,) = [p for p in dash["panels"] if p["title"].startswith("Sidecar 5xx share")]
    expr = panel["targets"][0]["expr"].replace("$__rate_interval", "5s")
    (share,) = prom.query(expr.replace("$namespace", ".*").replace("$pod", ".*"))
    assert share.value == pytest.approx(1 / 9, rel=0.01)


def test_two_jobs_and_target_labels_neither_rename_nor_double(
    scraped: tuple[Prometheus, GrowingSidecar],
) -> None:
    prom, _ = scraped
    deadline = time.monotonic() + 30
    while len(prom.query("rate(smp_sidecar_requests_total[2s]) > 0")) < 2:
        assert time.monotonic() < deadline, "not scraped by both jobs yet"
        time.sleep(0.25)
    # both jobs stored the agent's series; the target's namespace/pod did not rename ours
    (series,) = prom.query('smp_sidecar_requests_total{job="kubernetes-pods"}')
    labels = dict(series.labels)
    assert labels["k8s_namespace_name"] == "shop" and labels["namespace"] == "smp-profiler"
    assert not any(k.startswith("exported_") for k in labels), labels
    end = time.time()
    w = prom.window(end - 3, end, namespace="shop")
    assert w.sidecars == 1
    assert w.rps == pytest.approx(50, rel=0.35)  # doubled would be 100
    assert w.sidecar_cpu_mcores == pytest.approx(50, rel=0.35)
    assert w.sidecar_mem_mb == pytest.approx(30)  # not 60
    assert w.dropped == 0
    # the agent's own pod namespace is not the sidecar's: nothing there
    assert prom.window(end - 3, end, namespace="smp-profiler").sidecars == 0
    from profiler.daemon.cluster import cluster_bundle

    doc = cluster_bundle(prom, end - 3, end, "shop")
    assert doc["details"]["nodes_reporting"] == 1  # one agent, scraped twice
    assert doc["service_mesh_config"]["mesh_type"]["type"] == "ISTIO"
    assert doc["details"]["sidecar_containers"] == {"istio-proxy": 1}
