"""The reconcile loop on real processes in real cgroups: the engine calls it makes.

The capture engine is the lead's; this one test records the calls the agent makes on it
(add_target, remove_target, poll, snapshot, close) and answers snapshots it builds itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
from _kubepods import kubelet_pod, named_binary, node_root

from profiler.capture.snapshot import Snapshot, TargetSnapshot
from profiler.daemon.agent import Agent, NodeDiscovery
from profiler.daemon.metrics import SnapshotCollector

pytestmark = pytest.mark.testbed


class RecordingEngine:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, str]] = []
        self.targets: dict[int, TargetSnapshot] = {}
        self.polls = 0
        self.closed = False

    def add_target(self, pid: int, role: str, labels: Mapping[str, str]) -> None:
        self.calls.append(("add", pid, role))
        self.targets[pid] = TargetSnapshot(dict(labels), role, requests=pid % 7)

    def remove_target(self, pid: int) -> None:
        self.calls.append(("remove", pid, ""))
        del self.targets[pid]

    def poll(self, timeout_ms: int = 100) -> None:
        self.polls += 1
        time.sleep(min(timeout_ms, 10) / 1000)

    def snapshot(self) -> Snapshot:
        attached = sum(t.role == "sidecar" for t in self.targets.values())
        return Snapshot(dict(self.targets), drops=0, attached=attached)

    def close(self) -> None:
        self.closed = True


def test_reconcile_follows_sidecars_and_detaches_on_stop(tmp_path: Path) -> None:
    with node_root("smp-agent") as root, kubelet_pod(root) as pod:
        proxy = pod.add_container("istio-proxy", [named_binary("envoy"), "600"])
        app = pod.add_container("app", [named_binary("app"), "600"], n=2)
        engine = RecordingEngine()
        collector = SnapshotCollector()
        agent = Agent(engine, NodeDiscovery(cgroup_root=str(root)), collector, interval=0.05)

        added, removed = agent.reconcile()
        assert sorted(engine.calls) == sorted(
            [("add", proxy.pids[0], "sidecar")] + [("add", p, "app") for p in app.pids]
        )
        assert agent.attached[proxy.pids[0]].labels == {
            "namespace": "",
            "pod": pod.uid,
            "container": "envoy",
            "mesh": "",  # node-only: no pod annotations, no evidence of a mesh
        }
        assert agent.reconcile() == ([], [])  # nothing changed, no calls
        assert len(engine.calls) == 3

        # the sidecar restarts: the old PID is removed, the new one added
        old = proxy.pids[0]
        pod.remove_container("istio-proxy")
        new = pod.add_container("istio-proxy", [named_binary("envoy"), "600"]).pids[0]
        added, removed = agent.reconcile()
        assert (added, removed) == ([new], [old])
        assert engine.calls[-2:] == [("remove", old, ""), ("add", new, "sidecar")]

        # the loop: snapshots reach the collector; stop detaches everything and closes
        stop = threading.Event()
        t = threading.Thread(target=agent.run, args=(stop,))
        t.start()
        deadline = time.monotonic() + 5
        while agent.reconciles < 5:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert agent.alive()[0]
        stop.set()
        t.join(timeout=5)
        assert not t.is_alive()
        assert engine.closed and engine.targets == {} and agent.attached == {}
        assert engine.polls > 0
        assert collector.updated and collector.label_sets() == 2  # envoy and app of the pod
