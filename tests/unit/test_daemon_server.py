"""The daemon's endpoints over a real socket; readiness is the capability check, cached."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from profiler.capabilities import REQUIRED, Check
from profiler.capture.snapshot import Snapshot, TargetSnapshot
from profiler.daemon.metrics import SnapshotCollector
from profiler.daemon.server import CachedReadiness, MetricsServer
from profiler.errors import UsageError


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Node:
    """Answers of the capability check as a node would give them; counts the checks run."""

    def __init__(self) -> None:
        self.runs = 0
        self.bpf_ok = False

    def run(self) -> list[Check]:
        self.runs += 1
        checks = [Check(n, True, "ok") for n in REQUIRED if n != "bpf_syscall"]
        return [*checks, Check("bpf_syscall", self.bpf_ok, "bpf(BPF_MAP_CREATE) failed: EPERM")]


@pytest.fixture
def served() -> Iterator[tuple[MetricsServer, SnapshotCollector, Node, list[float]]]:
    reg = CollectorRegistry()
    collector = SnapshotCollector()
    reg.register(collector)
    node, now = Node(), [0.0]
    ready = CachedReadiness(ttl=60, run=node.run, clock=lambda: now[0])
    server = MetricsServer(reg, ready, lambda: (True, "alive"), port=0, host="127.0.0.1").start()
    try:
        yield server, collector, node, now
    finally:
        server.stop()


def test_metrics_healthz_readyz(
    served: tuple[MetricsServer, SnapshotCollector, Node, list[float]],
) -> None:
    server, collector, node, now = served
    labels = {"namespace": "shop", "pod": "p", "container": "istio-proxy", "mesh": "ISTIO"}
    collector.update(Snapshot({7: TargetSnapshot(labels, requests=23)}, attached=1))
    code, text = get(server.port, "/metrics")
    assert code == 200
    assert (
        'smp_sidecar_requests_total{k8s_container_name="istio-proxy",k8s_namespace_name="shop",'
        'k8s_pod_name="p",smp_mesh_type="ISTIO"} 23.0' in text
    )
    assert 'smp_attached_sidecars{k8s_node_name=""} 1.0' in text
    assert get(server.port, "/healthz") == (200, "alive\n")
    code, text = get(server.port, "/readyz")
    assert code == 503 and "bpf_syscall" in text
    node.bpf_ok = True
    assert get(server.port, "/readyz")[0] == 503  # cached for the ttl
    assert node.runs == 1
    now[0] = 61.0
    assert get(server.port, "/readyz") == (200, "captures possible\n")
    assert node.runs == 2
    assert get(server.port, "/nothing")[0] == 404


def test_port_in_use_is_a_usage_error(
    served: tuple[MetricsServer, SnapshotCollector, Node, list[float]],
) -> None:
    server = served[0]
    with pytest.raises(UsageError, match="cannot listen"):
        MetricsServer(
            CollectorRegistry(), lambda: (True, ""), lambda: (True, ""), server.port, "127.0.0.1"
        )


def test_a_failing_check_is_not_ready() -> None:
    def read_only() -> list[Check]:
        raise OSError(30, "Read-only file system", "/lib/modules/6.18.0/build")

    ok, detail = CachedReadiness(run=read_only)()
    assert not ok and "Read-only file system" in detail
