"""``smp-profiler daemon`` in Kubernetes mode with the real engine: the pod of the testbed's
server (real Envoy, real app, kubelet-style cgroups) is served by a loopback stand-in for the
API server through a kubeconfig; the daemon watches it, traces istio-proxy and the app under
their Kubernetes names, and stops tracing when the pod is deleted."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _apiserver import api_server, pod_json
from _prom import http_get, metrics_url, scrape, stop
from _testbed import send_requests

from profiler.discovery.containers import container_id_of_name

pytestmark = [pytest.mark.bpf, pytest.mark.testbed, pytest.mark.envoy]
CLI = [sys.executable, "-m", "profiler.cli"]
ISTIO = {"sidecar.istio.io/status": json.dumps({"containers": ["istio-proxy"]})}


def test_daemon_kubernetes_mode(testbed_factory: Callable[..., Any], tmp_path: Path) -> None:
    tb = testbed_factory()
    server = tb.state.server
    ids = {c: container_id_of_name(Path(p).name) for c, p in server.cgroups.items()}
    pod = pod_json(
        "reviews-1",
        "shop",
        server.uid,
        {c: f"containerd://{i}" for c, i in ids.items()},
        annotations=ISTIO,
    )
    log = tmp_path / "daemon.log"
    with api_server() as api:
        api.put(pod)
        kubeconfig = api.kubeconfig(tmp_path / "kubeconfig")
        argv = [*CLI, "daemon", "--node-name", "node-a", "--kubeconfig", str(kubeconfig)]
        argv += ["--metrics-port", "0", "--metrics-address", "127.0.0.1", "--interval", "0.5"]
        with log.open("w") as err:
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 60
            url = metrics_url(proc, log)
            while http_get(url + "/readyz")[0] != 200:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            pod_labels = (("k8s_namespace_name", "shop"), ("k8s_pod_name", "reviews-1"))
            labels = (
                ("k8s_container_name", "istio-proxy"),
                *pod_labels,
                ("smp_mesh_type", "ISTIO"),
            )
            app = (("k8s_container_name", "app"), *pod_labels, ("smp_mesh_type", "ISTIO"))
            key = ("smp_sidecar_requests_total", labels)
            while key not in scrape(url):
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            assert [r["status"] for r in send_requests(tb, 23, "k23")] == [200] * 23
            while scrape(url).get(key) != 23:
                assert time.monotonic() < deadline, scrape(url).get(key)
                time.sleep(0.2)
            got = scrape(url)
            assert got["smp_attached_sidecars", (("k8s_node_name", "node-a"),)] == 1
            assert ("smp_app_cpu_seconds_total", app) in got
            pids = ", ".join(str(p) for p in sorted([server.app_pid, server.envoy_pid]))
            assert f"targets: +[{pids}] -[]" in log.read_text()
            assert all(r["fieldSelector"] == "spec.nodeName=node-a" for r in api.requests)

            # the pod is deleted: its processes are no longer traced
            api.delete(server.uid)
            while scrape(url).get(("smp_attached_sidecars", (("k8s_node_name", "node-a"),))) != 0:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            assert scrape(url)[key] == 23  # kept (retired) for a while, still monotonic
        finally:
            code = stop(proc)  # SIGTERM; killed (and failed) after 20 s
    text = log.read_text()
    assert code == 0, text
    assert "Traceback" not in text
