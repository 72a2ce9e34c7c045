"""Debian's Prometheus, started on loopback, scrapes the daemon's /metrics served from
snapshots that grow at known rates; the query layer of ``report --prometheus`` and the
Grafana dashboard's queries then run against it."""

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

from profiler.daemon.metrics import SnapshotCollector
from profiler.daemon.promql import Prometheus, quantile
from profiler.daemon.server import MetricsServer
from profiler.daemon.snapshot import Snapshot, TargetSnapshot
from profiler.histogram import LatencyHistogram

pytestmark = pytest.mark.prometheus

ROOT = Path(__file__).resolve().parents[2]
LABELS = {"namespace": "shop", "pod": "reviews-1", "container": "istio-proxy"}
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
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.hist.record_many([100] * 8 + [900] * 2)
            self.requests += 10
            self.cpu += 0.01
            legs = {"sidecar_total": self.hist}
            t = TargetSnapshot(LABELS, "sidecar", self.requests, legs, self.cpu, 30 * 2**20)
            self.collector.update(Snapshot({4242: t}, drops=0, attached=1))
            self.stop.wait(TICK)


@pytest.fixture(scope="module")
def scraped(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Prometheus, GrowingSidecar]]:
    tmp_path = tmp_path_factory.mktemp("prometheus")
    reg = CollectorRegistry()
    collector = SnapshotCollector()
    reg.register(collector)
    server = MetricsServer(reg, lambda: (True, ""), lambda: (True, ""), 0, "127.0.0.1").start()
    sidecar = GrowingSidecar(collector)
    sidecar.thread.start()
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "500ms", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "smp-profiler",
                        "static_configs": [{"targets": [f"127.0.0.1:{server.port}"]}],
                    }
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
    while True:  # data for longer than the window: at least 8 scrapes (4 s)
        got = prom.query("count_over_time(smp_sidecar_requests_total[1m])")
        if got and got[0].value >= 8:
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
            f"smp_sidecar_leg_duration_seconds_bucket[{w.window_s}s])))"
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
