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
from collections.abc import Iterator
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


class Traced:
    """A real probe with a one-page ring (24 records, half of it 12) tracing the HTTP server
    in app mode: ``port`` to send requests to, ``batches`` what polls handed over."""

    def __init__(self) -> None:
        self.server = subprocess.Popen(
            [sys.executable, str(SERVER)], stdout=subprocess.PIPE, text=True
        )
        self.batches: list[np.ndarray] = []
        self.probe = SidecarProbe(self.batches.append, ringbuf_pages=1)
        assert self.server.stdout is not None
        self.port = int(self.server.stdout.readline())
        self.probe.add_target(self.server.pid, "app")
        self.probe.poll(0)
        self.batches.clear()

    def requests(self, n: int, first: int = 0) -> None:
        with socket.create_connection(("127.0.0.1", self.port)) as c:
            for i in range(first, first + n):
                _get(c, i)

    def got(self) -> int:
        return sum(int((b["kind"] == KIND_SERVER).sum()) for b in self.batches)

    def close(self) -> None:
        self.probe.close()
        self.server.kill()
        self.server.wait()


@pytest.fixture
def traced() -> Iterator[Traced]:
    t = Traced()
    try:
        yield t
    finally:
        t.close()


def test_poll_waits_its_timeout_on_a_quiet_ring_and_returns_early_on_a_half_full_one(
    traced: Traced,
) -> None:
    t0 = time.monotonic()
    traced.probe.poll(300)  # nothing traced happens: the whole timeout
    quiet_s = time.monotonic() - t0
    traced.requests(REQUESTS)
    t0 = time.monotonic()
    traced.probe.poll(10_000)
    busy_s = time.monotonic() - t0
    assert 0.29 <= quiet_s < 1.0
    assert busy_s < 1.0  # not the 10 s timeout
    assert traced.got() >= 13  # what made the ring half full (at most 24 fit: the rest dropped)


def test_a_poll_already_asleep_is_woken_when_half_the_ring_is_unread(traced: Traced) -> None:
    """The poll starts first, on an empty ring, with a 10 s timeout; then the requests come.
    The record that makes half the ring unread wakes it (nothing else looks at the ring): it
    returns within a second with at least that half. Twice: the read re-arms the wakeup.
    Without the wakeup it sleeps 10 s; without the re-arming, the second time."""
    woke: list[float] = []

    def sleeper() -> None:
        t0 = time.monotonic()
        traced.probe.poll(10_000)
        woke.append(time.monotonic() - t0)

    got = []
    for _ in range(2):
        traced.batches.clear()
        th = threading.Thread(target=sleeper)
        th.start()
        time.sleep(0.2)  # asleep in its poll
        traced.requests(REQUESTS)
        th.join(timeout=15)
        got.append(traced.got())
        traced.probe.poll(0)  # the rest
    assert len(woke) == 2 and max(woke) < 1.5, woke  # not the 10 s timeout
    assert min(got) >= 12, got  # the half that woke it (12 of the one page's 24)


def test_a_wakeup_for_records_already_read_does_not_end_the_next_poll(traced: Traced) -> None:
    """20 requests with nobody polling: the 12th unread record signals a wakeup. A poll(0)
    reads them all; then one more record comes (no wakeup: 1 unread). A poll(2000) must
    sleep its 2 s: the signalled wakeup was for records already read (kept, it ended that
    poll at once with 1 record: what CI once saw as a batch of 1)."""
    traced.requests(20)
    time.sleep(0.1)
    traced.probe.poll(0)
    traced.requests(1, first=20)
    time.sleep(0.1)
    t0 = time.monotonic()
    traced.probe.poll(2000)
    quiet_s = time.monotonic() - t0
    assert quiet_s >= 1.9, quiet_s
