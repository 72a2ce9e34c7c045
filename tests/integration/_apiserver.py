"""A loopback HTTP server answering the two Kubernetes API calls the daemon makes (list and
watch pods), for driving the real kubernetes client (and the daemon) without a cluster.
Pods are JSON dicts as the API server returns them; a watch window streams the queued
events and ends after a short time, so clients relist (as after their resync)."""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, window_s: float = 0.3) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.pods: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.requests: list[dict[str, str]] = []
        self.window_s = window_s
        self.rv = 1
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def put(self, pod: dict[str, Any]) -> None:
        with self.lock:
            kind = "MODIFIED" if pod["metadata"]["uid"] in self.pods else "ADDED"
            self.pods[pod["metadata"]["uid"]] = pod
            self.rv += 1
            self.events.append({"type": kind, "object": pod})

    def delete(self, uid: str) -> None:
        with self.lock:
            pod = self.pods.pop(uid)
            self.rv += 1
            self.events.append({"type": "DELETED", "object": pod})

    def kubeconfig(self, path: Path) -> Path:
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "loop", "cluster": {"server": self.url}}],
            "users": [{"name": "agent", "user": {"token": "not-checked"}}],
            "contexts": [{"name": "loop", "context": {"cluster": "loop", "user": "agent"}}],
            "current-context": "loop",
        }
        path.write_text(json.dumps(doc))
        return path


class _Handler(BaseHTTPRequestHandler):
    server: ApiServer

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urllib.parse.urlparse(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        srv = self.server
        srv.requests.append({"path": url.path, **q})
        if q.get("watch") == "true":
            time.sleep(srv.window_s)
            with srv.lock:
                events, srv.events = srv.events, []
            self._send(b"".join(json.dumps(e).encode() + b"\n" for e in events))
            return
        with srv.lock:
            srv.events = []  # a list is the full state: what was queued is in it
            doc = {
                "apiVersion": "v1",
                "kind": "PodList",
                "metadata": {"resourceVersion": str(srv.rv)},
                "items": list(srv.pods.values()),
            }
        self._send(json.dumps(doc).encode())

    def log_message(self, format: str, *args: Any) -> None:
        return


@contextmanager
def api_server(window_s: float = 0.3) -> Iterator[ApiServer]:
    srv = ApiServer(window_s)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()


def pod_json(
    name: str,
    namespace: str,
    uid: str,
    containers: dict[str, str],
    annotations: dict[str, str] | None = None,
    node: str = "node-a",
) -> dict[str, Any]:
    """A running pod; ``containers`` maps names to runtime container ids (``containerd://``)."""
    statuses = [
        {
            "name": n,
            "containerID": cid,
            "image": f"example/{n}",
            "imageID": "",
            "ready": True,
            "restartCount": 0,
            "state": {"running": {"startedAt": "2026-12-02T00:00:00Z"}},
        }
        for n, cid in containers.items()
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid,
            "annotations": annotations or {},
        },
        "spec": {"nodeName": node, "containers": [{"name": n} for n in containers]},
        "status": {"phase": "Running", "containerStatuses": statuses},
    }
