"""The daemon's HTTP endpoints: ``/metrics``, ``/healthz`` (the agent loop is alive) and
``/readyz`` (captures are possible: the same capability check as ``doctor``, cached)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from profiler import capabilities
from profiler.errors import SmpError, UsageError

Probe = Callable[[], tuple[bool, str]]


class CachedReadiness:
    """``capabilities.run_all()`` (which compiles and attaches a test program) at most once
    per ``ttl`` seconds; ready when every check a capture needs passes."""

    def __init__(
        self,
        ttl: float = 300.0,
        run: Callable[[], list[capabilities.Check]] = capabilities.run_all,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl, self._run, self._clock = ttl, run, clock
        self._lock = threading.Lock()
        self._at: float | None = None
        self._answer = (False, "not checked yet")

    def __call__(self) -> tuple[bool, str]:
        with self._lock:
            now = self._clock()
            if self._at is None or now - self._at >= self._ttl:
                try:
                    checks = self._run()
                except (OSError, SmpError) as e:  # e.g. headers cannot be presented: read-only
                    self._answer, self._at = (False, f"capability check failed: {e}"), now
                    return self._answer
                missing = capabilities.missing(checks)
                if missing:
                    detail = "; ".join(f"{c.name}: {c.detail}" for c in missing)
                    self._answer = (False, f"captures not possible: {detail}")
                else:
                    self._answer = (True, "captures possible")
                self._at = now
            return self._answer


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            body, code, ctype = generate_latest(self.server.registry), 200, CONTENT_TYPE_LATEST
        elif path in ("/healthz", "/readyz"):
            probe = self.server.liveness if path == "/healthz" else self.server.readiness
            ok, detail = probe()
            body, code = (detail + "\n").encode(), 200 if ok else 503
            ctype = "text/plain; charset=utf-8"
        else:
            body, code, ctype = b"not found: try /metrics, /healthz, /readyz\n", 404, "text/plain"
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: Prometheus scrapes often
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    registry: CollectorRegistry
    readiness: Probe
    liveness: Probe


class MetricsServer:
    """Serves a registry and the two probes on ``host:port`` (port 0 picks a free one)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        readiness: Probe,
        liveness: Probe,
        port: int = 9464,
        host: str = "0.0.0.0",
    ) -> None:
        try:
            self._httpd = _Server((host, port), _Handler)
        except OSError as e:
            raise UsageError(f"cannot listen on {host}:{port}: {e.strerror}") from None
        self._httpd.registry = registry
        self._httpd.readiness = readiness
        self._httpd.liveness = liveness
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="smp-metrics", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
