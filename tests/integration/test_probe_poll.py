"""SidecarProbe.poll: waits its whole timeout while the ring buffer holds little, and returns
early once the ring is half full (so a long timeout still never lets a busy ring run out).
A real probe with a one-page ring (4 KiB: 24 records, half of it 13) traces a real HTTP
server (tests/helpers/http_server.py) answering requests on keep-alive connections."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from profiler.probes.sidecar import KIND_SERVER, SidecarProbe

pytestmark = pytest.mark.bpf
SERVER = Path(__file__).resolve().parents[1] / "helpers" / "http_server.py"
REQUESTS = 40  # 40 records: the ring is half full after 13 (a request is emitted when the
# connection's next request or its close comes)
BODY = 3  # the server's default body


def _get(c: socket.socket, i: int) -> None:
    """One request and its whole answer (the server's body is BODY bytes)."""
    c.sendall(f"GET /{i} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
    got = b""
    while b"\r\n\r\n" not in got or len(got.partition(b"\r\n\r\n")[2]) < BODY:
        chunk = c.recv(4096)
        assert chunk, "the server closed the connection"
        got += chunk


def test_poll_waits_its_timeout_on_a_quiet_ring_and_returns_early_on_a_half_full_one() -> None:
    server = subprocess.Popen([sys.executable, str(SERVER)], stdout=subprocess.PIPE, text=True)
    batches: list[np.ndarray] = []
    probe = SidecarProbe(batches.append, ringbuf_pages=1)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        probe.add_target(server.pid, "app")
        probe.poll(0)
        batches.clear()
        t0 = time.monotonic()
        probe.poll(300)  # nothing traced happens: the whole timeout
        quiet_s = time.monotonic() - t0
        with socket.create_connection(("127.0.0.1", port)) as c:
            for i in range(REQUESTS):
                _get(c, i)
        t0 = time.monotonic()
        probe.poll(10_000)
        busy_s = time.monotonic() - t0
        got = sum(int((b["kind"] == KIND_SERVER).sum()) for b in batches)
    finally:
        probe.close()
        server.kill()
        server.wait()
    assert 0.29 <= quiet_s < 1.0
    assert busy_s < 1.0  # not the 10 s timeout
    assert got >= 13  # what made the ring half full (at most 24 fit: the rest were dropped)
