"""A loopback HTTP server answering the two Kubernetes API calls the daemon makes (list and
watch pods), for driving the real kubernetes client (and the daemon) without a cluster.
Pods are JSON dicts as the API server returns them; a watch window streams the events after
its resourceVersion as they happen and ends after a short time, so clients reconnect."""

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
    """Pods and an event log with resourceVersions, as the API server keeps them.

    A list honours ``fieldSelector=spec.nodeName=<node>`` and records whether it asked for
    ``resourceVersion=0`` (the watch cache); a watch streams the events after its
    ``resourceVersion`` as they happen, for ``window_s`` (or its ``timeoutSeconds``, the
    shorter), then a BOOKMARK when ``allowWatchBookmarks`` asks for one. With ``stall`` set, a
    new watch gets its headers and then nothing, forever, as a connection to an API server
    that failed over (half-open TCP) does."""

    daemon_threads = True

    def __init__(self, window_s: float = 0.3) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.pods: dict[str, dict[str, Any]] = {}
        self.log: list[tuple[int, dict[str, Any]]] = []
        self.requests: list[dict[str, str]] = []
        self.window_s = window_s
        self.rv = 1
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.stall = threading.Event()
        self.closing = threading.Event()
        self.stalled_watches = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def _record(self, kind: str, pod: dict[str, Any]) -> None:
        self.rv += 1
        pod = json.loads(json.dumps(pod))
        pod["metadata"]["resourceVersion"] = str(self.rv)
        self.log.append((self.rv, {"type": kind, "object": pod}))
        self.changed.notify_all()

    def put(self, pod: dict[str, Any]) -> None:
        with self.lock:
            kind = "MODIFIED" if pod["metadata"]["uid"] in self.pods else "ADDED"
            self.pods[pod["metadata"]["uid"]] = pod
            self._record(kind, pod)

    def delete(self, uid: str) -> None:
        with self.lock:
            self._record("DELETED", self.pods.pop(uid))

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

    def shutdown(self) -> None:
        self.closing.set()
        with self.lock:
            self.changed.notify_all()
        super().shutdown()


def _on_node(pod: dict[str, Any], selector: str | None) -> bool:
    if not selector:
        return True
    field_, _, value = selector.partition("=")
    assert field_ == "spec.nodeName", f"unsupported fieldSelector {selector}"
    return bool(pod.get("spec", {}).get("nodeName") == value)


class _Handler(BaseHTTPRequestHandler):
    server: ApiServer

    def _line(self, doc: dict[str, Any]) -> None:
        self.wfile.write(json.dumps(doc).encode() + b"\n")
        self.wfile.flush()

    def _watch(self, q: dict[str, str]) -> None:
        srv = self.server
        # HTTP/1.0 without Content-Length: the body is the stream, until the connection closes
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.flush()
        if srv.stall.is_set():
            srv.stalled_watches += 1
            srv.closing.wait()  # nothing, ever: the client must notice on its own
            return
        since = int(q.get("resourceVersion") or 0)
        window = min(srv.window_s, float(q.get("timeoutSeconds", srv.window_s)))
        end = time.monotonic() + window
        selector = q.get("fieldSelector")
        with srv.lock:
            while not srv.closing.is_set():
                for rv, ev in srv.log:
                    if rv > since and _on_node(ev["object"], selector):
                        self._line(ev)
                since = max([since, *(rv for rv, _ in srv.log)])
                left = end - time.monotonic()
                if left <= 0:
                    break
                srv.changed.wait(left)
            rv = srv.rv
        if q.get("allowWatchBookmarks") == "true":
            meta = {"resourceVersion": str(rv)}
            self._line({"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": meta}})

    def do_GET(self) -> None:
        url = urllib.parse.urlparse(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        srv = self.server
        srv.requests.append({"path": url.path, **q})
        if q.get("watch") == "true":
            self._watch(q)
            return
        with srv.lock:
            doc = {
                "apiVersion": "v1",
                "kind": "PodList",
                "metadata": {"resourceVersion": str(srv.rv)},
                "items": [p for p in srv.pods.values() if _on_node(p, q.get("fieldSelector"))],
            }
        body = json.dumps(doc).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

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
