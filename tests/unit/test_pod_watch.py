"""The pod watch through the real kubernetes client over a real loopback socket, against an
HTTP server that answers like the API server (PodList, watch event stream, 410 Gone as an
ERROR event, a 500): list, watch, relist on 410, back off and reconnect on errors."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client

from profiler.discovery.kubernetes import PodSet, PodWatcher

CID = {"a": "a" * 64, "b": "b" * 64}


def pod(name: str) -> dict[str, Any]:
    def status(c: str) -> dict[str, Any]:
        return {
            "name": c,
            "containerID": f"containerd://{CID[name]}" if c == "istio-proxy" else None,
            "image": c,
            "imageID": "",
            "ready": True,
            "restartCount": 0,
            "state": {"running": {"startedAt": "2026-12-02T00:00:00Z"}},
        }

    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "uid": f"uid-{name}"},
        "spec": {"nodeName": "node-a", "containers": [{"name": "istio-proxy"}]},
        "status": {"phase": "Running", "containerStatuses": [status("istio-proxy")]},
    }


def pod_list(rv: str, *names: str) -> dict[str, Any]:
    items = [pod(n) for n in names]
    return {
        "apiVersion": "v1",
        "kind": "PodList",
        "metadata": {"resourceVersion": rv},
        "items": items,
    }


GONE = {
    "type": "ERROR",
    "object": {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": "too old resource version: 100 (150)",
        "reason": "Expired",
        "code": 410,
    },
}


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[dict[str, str]] = []
        self.lists = [pod_list("100", "a"), "500", pod_list("200", "b")]
        self.watches: dict[str, list[dict[str, Any]]] = {
            "100": [{"type": "ADDED", "object": pod("b")}, GONE],
        }


class Handler(BaseHTTPRequestHandler):
    server: ApiServer

    def do_GET(self) -> None:
        url = urllib.parse.urlparse(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        self.server.requests.append({"path": url.path, **q})
        if q.get("watch") == "true":
            events = self.server.watches.pop(q.get("resourceVersion", ""), [])
            body = b"".join(json.dumps(e).encode() + b"\n" for e in events)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            if not events:
                time.sleep(0.05)  # an idle watch window that ends
            return
        answer = self.server.lists.pop(0) if len(self.server.lists) > 1 else self.server.lists[0]
        if answer == "500":
            body, code = b'{"kind":"Status","code":500,"message":"etcd unavailable"}', 500
        else:
            body, code = json.dumps(answer).encode(), 200
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def api() -> Iterator[ApiServer]:
    srv = ApiServer()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def test_list_watch_410_relist_and_reconnect(api: ApiServer) -> None:
    cfg = client.Configuration(host=f"http://127.0.0.1:{api.server_address[1]}")
    core = client.CoreV1Api(client.ApiClient(cfg))
    podset = PodSet()
    changes: list[list[str]] = []
    watcher = PodWatcher(
        podset,
        "node-a",
        core,
        resync_seconds=1,
        backoff_initial=0.05,
        on_change=lambda: changes.append(sorted(c.pod for c in podset.desired())),
    )
    stop = threading.Event()
    t = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    t.start()
    deadline = time.monotonic() + 10
    while len([r for r in api.requests if r.get("watch") == "true"]) < 3:
        assert time.monotonic() < deadline, api.requests
        time.sleep(0.02)
    stop.set()
    t.join(timeout=5)
    assert not t.is_alive()
    # list (a), watch from 100: b added, then 410 -> relist fails (500) -> backoff -> list (b)
    assert changes[:3] == [["a"], ["a", "b"], ["b"]]
    assert [c.container_id for c in podset.desired()] == [CID["b"]]
    assert all(r["fieldSelector"] == "spec.nodeName=node-a" for r in api.requests)
    watches = [r for r in api.requests if r.get("watch") == "true"]
    assert watches[0]["resourceVersion"] == "100"
    assert watches[1]["resourceVersion"] == "200"
    # an idle window that ended: the next watch continues from where it was, no relist
    assert watches[2]["resourceVersion"] == "200"
    assert watcher.relists == 2 and watcher.errors == 1
    assert watches[0]["timeoutSeconds"] == "1"
    assert all(w["allowWatchBookmarks"] == "true" for w in watches)
    lists = [r for r in api.requests if r.get("watch") != "true"]
    assert all(r["resourceVersion"] == "0" for r in lists)  # the watch cache, no quorum read
    assert watcher.synced()[0]


def test_api_connections_have_tcp_keepalive(api: ApiServer, tmp_path: Any) -> None:
    """A half-open connection (the API server gone without a FIN) is found by the kernel:
    the sockets the client really opens carry SO_KEEPALIVE with client-go's timings."""
    import socket

    from profiler.discovery.kubernetes import core_api

    kubeconfig = tmp_path / "config"
    server = f"http://127.0.0.1:{api.server_address[1]}"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    core = core_api(str(kubeconfig))
    assert core.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-a").items
    # a connection as the client's own pool opens it (the stand-in closes each after use)
    conn = core.api_client.rest_client.pool_manager.connection_from_url(server)._new_conn()
    conn.connect()
    s = conn.sock
    assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 30
    assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 15
    assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 9
    conn.close()


def test_synced_turns_false_after_minutes_without_an_answer() -> None:
    now = [1000.0]
    w = PodWatcher(PodSet(), "node-a", api=None, stale_after=600, clock=lambda: now[0])
    ok, why = w.synced()
    assert not ok and "no pod list" in why
    w._contact()
    now[0] += 599
    assert w.synced()[0]
    now[0] += 2  # 601 s: the watch may be hung on a dead connection
    w.errors = 4
    ok, why = w.synced()
    assert not ok and "601 s" in why and "4 errors" in why
