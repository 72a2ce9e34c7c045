"""The pod watch against a stand-in API server that fails over: a watch connection that
never sends another byte (half-open TCP) is noticed by the client's read timeout and
reconnected from the last resourceVersion, and a pod created after the stall is traced.
Real kubernetes client, real sockets, real kubelet-style cgroups and processes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from _apiserver import api_server, pod_json
from _kubepods import Pod, kubelet_pod, named_binary, node_root
from kubernetes import client
from test_daemon_agent import RecordingEngine

from profiler.daemon.agent import Agent, KubernetesDiscovery
from profiler.daemon.metrics import SnapshotCollector
from profiler.discovery.kubernetes import PodSet, PodWatcher

pytestmark = pytest.mark.testbed
READ_TIMEOUT = 1.5


def _meshed(pod: Pod, name: str, node: str = "node-a") -> dict[str, object]:
    pod.add_container("istio-proxy", [named_binary("envoy"), "600"])
    pod.add_container("app", [named_binary("app"), "600"])
    cids = {n: f"containerd://{c.container_id}" for n, c in pod.containers.items() if n != "POD"}
    return pod_json(name, "shop", pod.uid, cids, node=node)


def _until(cond: Callable[[], bool], timeout: float, why: Callable[[], object]) -> float:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, why()
        time.sleep(0.02)
    return time.monotonic() - t0


def test_stalled_watch_reconnects_and_a_new_pod_is_traced() -> None:
    with (
        node_root("smp-watch") as root,
        kubelet_pod(root) as a,
        kubelet_pod(root) as b,
        kubelet_pod(root) as other,
        api_server(window_s=0.5) as api,
    ):
        api.put(_meshed(a, "a"))
        # a meshed pod of another node whose processes happen to be here: the field
        # selector must keep it out
        api.put(_meshed(other, "elsewhere", node="node-b"))
        core = client.CoreV1Api(client.ApiClient(client.Configuration(host=api.url)))
        watcher = PodWatcher(
            PodSet(), "node-a", core, read_timeout=READ_TIMEOUT, backoff_initial=0.1
        )
        engine = RecordingEngine()
        source = KubernetesDiscovery(watcher, cgroup_root=str(root))
        agent = Agent(engine, source, SnapshotCollector(), interval=0.1)
        stop = threading.Event()
        t = threading.Thread(target=agent.run, args=(stop,), daemon=True)
        t.start()
        try:
            envoy_a = a.containers["istio-proxy"].pids[0]
            _until(lambda: envoy_a in engine.targets, 10, lambda: api.requests)
            others = {p for c in other.containers.values() for p in c.pids}
            assert not others & set(engine.targets)
            assert watcher.relists == 1 and api.requests[0]["resourceVersion"] == "0"
            assert all(r["fieldSelector"] == "spec.nodeName=node-a" for r in api.requests)

            # the API server fails over: the next watch connection hangs, silent
            api.stall.set()
            _until(lambda: api.stalled_watches == 1, 5, lambda: api.requests)
            stalled_at, errors = time.monotonic(), watcher.errors
            api.stall.clear()
            # a pod created while the agent's connection hangs
            api.put(_meshed(b, "b"))
            envoy_b = b.containers["istio-proxy"].pids[0]
            _until(lambda: envoy_b in engine.targets, 3 * READ_TIMEOUT + 5, lambda: api.requests)
            took = time.monotonic() - stalled_at
            assert watcher.errors == errors + 1  # one read timeout, one reconnect
            assert READ_TIMEOUT * 0.9 <= took <= READ_TIMEOUT + 3, took
            # continued from the last resourceVersion: no second list (a quorum read per node)
            assert watcher.relists == 1
            watches = [r for r in api.requests if r.get("watch") == "true"]
            assert int(watches[-1]["resourceVersion"]) >= 3  # a and elsewhere were rv 2, 3
            assert all(w["allowWatchBookmarks"] == "true" for w in watches)
            assert watcher.synced()[0]
        finally:
            stop.set()
            t.join(timeout=10)
        assert not t.is_alive()
