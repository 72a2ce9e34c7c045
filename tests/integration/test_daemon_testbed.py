"""``smp-profiler daemon --no-kubernetes`` with the real engine on the testbed's real Envoy:
it finds the sidecar and its app by name and cgroup, counts 23 requests on /metrics, then 8
more answered 503 and 404 and their statuses, follows a sidecar restart to the new PID (the
counters kept), and exits 0 on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from _kubepods import named_binary
from _prom import http_get, metrics_url, scrape, stop
from _testbed import send_requests, send_statuses

from profiler.commands.daemon import NICE

pytestmark = [pytest.mark.bpf, pytest.mark.testbed, pytest.mark.envoy]
CLI = [sys.executable, "-m", "profiler.cli"]


def _responses(m: dict[Any, float], labels: tuple[tuple[str, str], ...]) -> dict[Any, float]:
    """smp_sidecar_responses_total of one sidecar's labels: (protocol, code) -> count."""
    out = {}
    for (name, key), v in m.items():
        d = dict(key)
        if name == "smp_sidecar_responses_total" and {*key} >= {*labels}:
            out[d["protocol"], d["code"]] = v
    return out


def test_daemon_node_only_on_the_testbed(
    testbed_factory: Callable[..., Any], tmp_path: Path
) -> None:
    tb = testbed_factory()
    server = tb.state.server
    pod_cgroup = str(Path(server.cgroups["istio-proxy"]).parent)
    log = tmp_path / "daemon.log"
    argv = [*CLI, "daemon", "--no-kubernetes", "--metrics-port", "0"]
    argv += ["--metrics-address", "127.0.0.1", "--interval", "0.5", "--cgroup-root", pod_cgroup]
    extra: list[subprocess.Popen[bytes]] = []
    with log.open("w") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 60
        url = metrics_url(proc, log)
        while http_get(url + "/readyz")[0] != 200:
            assert time.monotonic() < deadline, http_get(url + "/readyz")
            time.sleep(0.1)
        assert http_get(url + "/healthz")[0] == 200
        # below the sidecars it measures, every thread (the default --nice)
        nices = {psutil.Process(proc.pid).nice()}
        for t in psutil.Process(proc.pid).threads():
            try:  # a short-lived thread may end between the listing and the read
                stat = Path(f"/proc/{proc.pid}/task/{t.id}/stat").read_text()
            except FileNotFoundError:
                continue
            nices.add(int(stat.rsplit(")", 1)[1].split()[16]))
        assert nices == {NICE}, nices

        sidecar = (
            ("k8s_container_name", "envoy"),
            ("k8s_namespace_name", ""),
            ("k8s_pod_name", server.uid),
            ("smp_mesh_type", ""),
        )
        app = (
            ("k8s_container_name", "app"),
            ("k8s_namespace_name", ""),
            ("k8s_pod_name", server.uid),
            ("smp_mesh_type", ""),
        )
        while ("smp_sidecar_requests_total", sidecar) not in scrape(url):
            assert time.monotonic() < deadline, http_get(url + "/metrics")[1]
            time.sleep(0.1)
        replies = send_requests(tb, 23, "d23")
        assert [r["status"] for r in replies] == [200] * 23
        while True:
            m = scrape(url)
            if m.get(("smp_sidecar_requests_total", sidecar)) == 23:
                break
            assert time.monotonic() < deadline, m.get(("smp_sidecar_requests_total", sidecar))
            time.sleep(0.2)
        total = tuple(sorted([*sidecar, ("leg", "sidecar_total")]))
        assert m["smp_sidecar_leg_duration_seconds_count", total] == 23
        assert m["smp_attached_sidecars", (("k8s_node_name", os.uname().nodename),)] == 1
        assert m["smp_probe_events_dropped_total", (("k8s_node_name", os.uname().nodename),)] == 0
        assert m["smp_sidecar_cpu_seconds_total", sidecar] > 0
        assert ("smp_app_cpu_seconds_total", app) in m
        assert m["smp_sidecar_memory_working_set_bytes", sidecar] > 1 << 20

        # statuses: 5 x 503 and 3 x 404 more, interleaved; every response counted by the
        # status Envoy wrote to the client, nothing unknown, no HTTP/2 or gRPC series
        codes = [503, 404, 503, 503, 404, 503, 404, 503]
        assert send_statuses(tb, codes, "d8") == codes
        while m.get(("smp_sidecar_requests_total", sidecar)) != 31:
            assert time.monotonic() < deadline, m.get(("smp_sidecar_requests_total", sidecar))
            time.sleep(0.2)
            m = scrape(url)
        responses = _responses(m, sidecar)
        assert responses == {("http1", "200"): 23, ("http1", "503"): 5, ("http1", "404"): 3}
        assert m["smp_sidecar_http2_blocks_lost_total", sidecar] == 0

        # the sidecar restarts: a new proxy process in the container replaces the old PID,
        # and the counters of the label set stay monotonic
        old = server.envoy_pid
        os.kill(old, signal.SIGKILL)
        new = subprocess.Popen([named_binary("envoy"), "600"])
        extra.append(new)
        Path(server.cgroups["istio-proxy"], "cgroup.procs").write_text(str(new.pid))
        while f"+[{new.pid}] -[{old}]" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        m = scrape(url)
        assert m["smp_attached_sidecars", (("k8s_node_name", os.uname().nodename),)] == 1
        assert m["smp_sidecar_requests_total", sidecar] == 31
        assert _responses(m, sidecar) == responses
    finally:
        for p in extra:
            p.kill()
            p.wait()
        code = stop(proc)  # SIGTERM; killed (and failed) after 20 s
    text = log.read_text()
    assert code == 0, text
    assert "Traceback" not in text and "detaching" in text
