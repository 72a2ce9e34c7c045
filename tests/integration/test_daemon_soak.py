"""Soak: the daemon's agent with the real engine (probe loaded once) through many sidecar
start/stop cycles on real processes in kubelet-style cgroups, plus real Envoy restarts with
traffic. Its RSS, the probe's map occupancy and the collector's label sets stay flat.

A cycle is a container restart (new container, same pod: same labels) or a whole new pod
that comes and goes; the agent reconciles and snapshots twice per cycle, as its loop does.
200 cycles use stand-in processes named ``envoy`` (pods of three runtimes' cgroup naming),
then 200 more restart a real Envoy that proxies requests (its sockets enter the probe's
connection map). ~45 s here, most of it Envoy's start (~0.15 s each).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from _kubepods import Pod, kubelet_pod, named_binary, node_root

from profiler.daemon.agent import Agent, NodeDiscovery
from profiler.daemon.metrics import SnapshotCollector

pytestmark = [pytest.mark.bpf, pytest.mark.testbed, pytest.mark.envoy, pytest.mark.slow]
CYCLES, ENVOY_RESTARTS, REQUESTS = 200, 200, 5
HERE = Path(__file__).resolve().parent
_T = "type.googleapis.com/envoy.extensions."


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bootstrap(port: int, admin: int, app: int) -> dict[str, Any]:
    addr = {"socket_address": {"address": "127.0.0.1", "port_value": port}}
    hcm = {
        "@type": _T + "filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "in",
        "http_filters": [
            {"name": "router", "typed_config": {"@type": _T + "filters.http.router.v3.Router"}}
        ],
        "route_config": {
            "virtual_hosts": [
                {"name": "app", "domains": ["*"],
                 "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}
            ]
        },
    }  # fmt: skip
    endpoint = {"address": {"socket_address": {"address": "127.0.0.1", "port_value": app}}}
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [
                {"name": "in", "address": addr,
                 "filter_chains": [{"filters": [{"name": "hcm", "typed_config": hcm}]}]}
            ],
            "clusters": [
                {"name": "app", "type": "STATIC",
                 "load_assignment": {"cluster_name": "app",
                                     "endpoints": [{"lb_endpoints": [{"endpoint": endpoint}]}]}}
            ],
        },
    }  # fmt: skip


def _envoy_argv(config: dict[str, Any]) -> list[str]:
    from profiler.testbed.envoy import envoy_binary

    return [str(envoy_binary()), "--config-yaml", json.dumps(config), "--concurrency", "1",
            "--disable-hot-restart", "--log-level", "warn"]  # fmt: skip


def _wait(ok: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _envoy_ready(admin: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1) as r:
            return bool(r.read().strip() == b"LIVE")
    except OSError:
        return False


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


# every hash map the probe declares, whatever it is called: BPF_HASH(name, ...) and
# BPF_TABLE("hash" | "lru_hash", key, leaf, name, size)
_HASH_MAPS = re.compile(r'^BPF_(?:HASH\((\w+)|TABLE\("(?:lru_)?hash",[^,]+,[^,]+,\s*(\w+))', re.M)


def _hash_maps() -> list[str]:
    source = (HERE.parents[1] / "bpf" / "sidecar.c").read_text()
    names = sorted(a or b for a, b in _HASH_MAPS.findall(source))
    assert "smp_filter_pids" in names and "smp_conns" in names, names
    return names


def _map_sizes(engine: Any, names: list[str]) -> dict[str, int]:
    from bcc import lib

    bpf = engine._probe._bpf  # the probe's own maps, read through the engine
    # a map declared for the other probe path only (#if SMP_PATH ...) is not in this build:
    # on the sock path, the syscalls path's sk joins (smp_sk_key, smp_early_arr,
    # smp_connecting)
    loaded = [n for n in names if lib.bpf_table_fd(bpf.module, n.encode()) >= 0]
    assert "smp_conns" in loaded and len(loaded) >= len(names) - 3, (names, loaded)
    sizes = {name: len(bpf[name]) for name in loaded}
    assert sizes["smp_conns"] == engine.conns_in_use()
    return sizes


def _requests_of(collector: SnapshotCollector, pod: str) -> float:
    for fam in collector.collect():
        for s in fam.samples:
            if s.name == "smp_sidecar_requests_total" and s.labels.get("k8s_pod_name") == pod:
                return float(s.value)
    return 0.0


@contextlib.contextmanager
def _pod(root: Path, **kw: Any) -> Iterator[Pod]:
    with kubelet_pod(root, **kw) as pod:
        yield pod


def test_soak_sidecar_churn_keeps_rss_maps_and_label_sets_flat() -> None:
    from profiler.capture.engine import Engine

    now = [0.0]
    maps = _hash_maps()
    engine = Engine()
    collector = SnapshotCollector(retire_after=60.0, clock=lambda: now[0])
    proc = psutil.Process()
    try:
        with node_root("smp-soak") as root, _pod(root) as steady, _pod(root) as proxied:
            agent = Agent(engine, NodeDiscovery(cgroup_root=str(root)), collector)

            def step() -> None:  # what one turn of the agent's loop does
                agent.reconcile()
                engine.poll(0)
                agent.flush()
                now[0] += 5.0

            steady.add_container("app", [named_binary("app"), "600"])
            held: list[int] = []
            rest: list[dict[str, int]] = []
            rss: list[int] = []
            t0 = time.monotonic()
            for i in range(CYCLES):
                if i % 2 == 0:  # the steady pod's sidecar restarts: new container, same pod
                    if "istio-proxy" in steady.containers:
                        steady.remove_container("istio-proxy")
                    steady.add_container("istio-proxy", [named_binary("envoy"), "600"])
                    step()
                else:  # a pod comes with its sidecar and app, and goes
                    with _pod(root, runtime=("cri-o", "containerd", "cgroupfs")[i % 3]) as pod:
                        pod.add_container("istio-proxy", [named_binary("envoy"), "600"])
                        pod.add_container("app", [named_binary("app"), "600"], n=2)
                        step()
                        assert len(agent.attached) == 5  # 2 sidecars, 3 app processes
                step()
                held.append(collector.label_sets())
                rest.append(_map_sizes(engine, maps))
                if i in (19, CYCLES - 1):
                    rss.append(proc.memory_info().rss)
            churn_s = time.monotonic() - t0

            # real Envoy restarts in the second pod, each proxying requests to its app
            app_port, port, admin = _free_port(), _free_port(), _free_port()
            proxied.add_container("app", [sys.executable, str(HERE.parent / "helpers" /
                                  "http_server.py"), "--port", str(app_port)])  # fmt: skip
            _wait(lambda: _listening(app_port), "the app did not listen")
            argv = _envoy_argv(_bootstrap(port, admin, app_port))
            counted: list[float] = []
            envoy_rest: list[dict[str, int]] = []
            t1 = time.monotonic()
            for _ in range(ENVOY_RESTARTS):
                if "istio-proxy" in proxied.containers:
                    proxied.remove_container("istio-proxy")  # SIGKILL: a crashed sidecar
                envoy = proxied.add_container("istio-proxy", argv).pids[0]
                _wait(lambda: _envoy_ready(admin), "Envoy did not become ready")
                step()
                assert envoy in agent.attached
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                for _ in range(REQUESTS):
                    conn.request("GET", "/")
                    r = conn.getresponse()
                    assert r.status == 200
                    r.read()
                conn.close()
                target = engine.targets[envoy]
                _wait(lambda t=target: (engine.poll(50), t.requests)[1] >= REQUESTS, "spans")
                step()
                counted.append(_requests_of(collector, proxied.uid))
                envoy_rest.append(_map_sizes(engine, maps))
            proxied.remove_container("istio-proxy")
            step()
            envoy_s = time.monotonic() - t1
            final = _map_sizes(engine, maps)
            rss.append(proc.memory_info().rss)
    finally:
        engine.close()

    mb = [r / 2**20 for r in rss]
    print(f"\nchurn: {CYCLES} cycles in {churn_s:.1f} s, {ENVOY_RESTARTS} Envoy restarts in "
          f"{envoy_s:.1f} s; RSS MiB after 20 cycles {mb[0]:.1f}, after {CYCLES} {mb[1]:.1f}, "
          f"after the Envoys {mb[2]:.1f}; maps at rest {rest[19]} -> {rest[-1]}, with an "
          f"Envoy {envoy_rest[0]} -> {envoy_rest[-1]}, at the end {final}; label sets max "
          f"{max(held)}")  # fmt: skip
    # the probe's maps hold what is attached now, never what is gone
    assert rest[-1] == rest[19] == rest[CYCLES // 2]
    # every map exactly flat over the restarts, and back to the steady pod at the end
    assert envoy_rest[-1] == envoy_rest[0]
    assert final == rest[-1]
    # the collector holds the live label sets plus those retired within 60 s, no more
    assert max(held[20:]) <= 2 + 2 * 7 and held[-1] == held[-21]
    # the restarted Envoys' requests all counted, under one label set
    assert counted == [REQUESTS * (k + 1) for k in range(ENVOY_RESTARTS)]
    assert rss[1] - rss[0] < 8 * 2**20 and rss[2] - rss[0] < 16 * 2**20
