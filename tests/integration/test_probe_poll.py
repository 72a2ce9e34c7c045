"""SidecarProbe.poll: waits its whole timeout while the ring buffer holds little, and returns
early once the ring is half full (so a long timeout still never lets a busy ring run out).
A real probe with a one-page ring (4 KiB: 24 records, half of it 13) traces a real HTTP
server (tests/helpers/http_server.py) answering requests on keep-alive connections."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
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


def test_a_poll_already_asleep_is_woken_when_half_the_ring_is_unread() -> None:
    """The poll starts first, on an empty ring, with a 10 s timeout; then the requests come.
    The record that makes half the ring unread wakes it (nothing else looks at the ring): it
    returns within a second with at least that half. Twice: the read re-arms the wakeup.
    Without the wakeup it sleeps 10 s; without the re-arming, the second time."""
    server = subprocess.Popen([sys.executable, str(SERVER)], stdout=subprocess.PIPE, text=True)
    batches: list[np.ndarray] = []
    probe = SidecarProbe(batches.append, ringbuf_pages=1)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        probe.add_target(server.pid, "app")
        probe.poll(0)
        batches.clear()
        woke: list[float] = []

        def sleeper() -> None:
            t0 = time.monotonic()
            probe.poll(10_000)
            woke.append(time.monotonic() - t0)

        got = []
        for _ in range(2):
            batches.clear()
            th = threading.Thread(target=sleeper)
            th.start()
            time.sleep(0.2)  # asleep in its poll
            with socket.create_connection(("127.0.0.1", port)) as c:
                for i in range(REQUESTS):
                    _get(c, i)
            th.join(timeout=15)
            got.append(sum(int((b["kind"] == KIND_SERVER).sum()) for b in batches))
            probe.poll(0)  # the rest
    finally:
        probe.close()
        server.kill()
        server.wait()
    assert len(woke) == 2 and max(woke) < 1.5, woke  # not the 10 s timeout
    assert min(got) >= 12, got  # the half that woke it (12 of the one page's 24)


def test_a_wakeup_for_records_already_read_does_not_end_the_next_poll() -> None:
    """20 requests with nobody polling: the 12th unread record signals a wakeup. A poll(0)
    reads them all; then one more record comes (no wakeup: 1 unread). A poll(2000) must
    sleep its 2 s: the signalled wakeup was for records already read (kept, it ended that
    poll at once with 1 record: what CI once saw as a batch of 1)."""
    server = subprocess.Popen([sys.executable, str(SERVER)], stdout=subprocess.PIPE, text=True)
    probe = SidecarProbe(lambda batch: None, ringbuf_pages=1)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        probe.add_target(server.pid, "app")
        probe.poll(0)
        with socket.create_connection(("127.0.0.1", port)) as c:
            for i in range(20):
                _get(c, i)
        time.sleep(0.1)
        probe.poll(0)
        with socket.create_connection(("127.0.0.1", port)) as c:
            _get(c, 20)
        time.sleep(0.1)
        t0 = time.monotonic()
        probe.poll(2000)
        quiet_s = time.monotonic() - t0
    finally:
        probe.close()
        server.kill()
        server.wait()
    assert quiet_s >= 1.9, quiet_s
