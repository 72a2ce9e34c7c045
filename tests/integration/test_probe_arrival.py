"""Arrival stamps (``ds_rx_arr``: when a request's bytes reached the socket, before the traced
process read them) against a known answer: a scripted app (tests/helpers/scripted_peer.py)
reads each request only after the test has held it back for HOLD_MS. On the syscalls path
the stamp goes through the join of ``tcp_rcv_space_adjust`` (the sk a read names) to the
connection's key, on the sock path straight from ``sk_data_ready``: a broken join gives 0, a
stale stamp (an earlier request's bytes) a gap of PAUSE_S or more. A second connection's first
request is stamped too: its socket is known from the handshake on a listener the probe has
learnt (without that, its stamp is 0)."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator

import numpy as np
import pytest

from profiler.probes.sidecar import KIND_PROXY, KIND_SERVER, SidecarProbe
from tests.scripted import ScriptedPeer

pytestmark = pytest.mark.bpf
HOLD_MS = 40  # the bytes wait in the socket this long before the app reads them
PAUSE_S = 0.3  # between requests: a stale stamp would add at least this much
WARMUP = 2  # the first requests of a connection may have no stamp (the join is learned)
MEASURED = 4
RESPONSE = "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n"


class TracedPeer(ScriptedPeer):
    """The scripted peer (tests/helpers/scripted_peer.py) traced by the real probe in ``mode``:
    ``do`` drives one socket call, ``spans(kind)`` is every record of that kind so far."""

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.batches: list[np.ndarray] = []
        self.probe = SidecarProbe(self.batches.append, ringbuf_pages=16)
        self.probe.add_target(self.pid, mode)

    def spans(self, kind: int) -> np.ndarray:
        time.sleep(0.1)
        self.probe.consume()
        s = np.concatenate([*self.batches, self.probe.drain_pending()])
        return s[s["kind"] == kind]

    def close(self) -> None:
        self.probe.close()
        self.stop()


@contextlib.contextmanager
def traced_peer(mode: str) -> Iterator[TracedPeer]:
    peer = TracedPeer(mode)
    try:
        yield peer
    finally:
        peer.close()


def _recv_exactly(s: socket.socket, n: int) -> None:
    got = b""
    while len(got) < n:
        got += s.recv(4096)


def test_request_arrival_is_when_its_bytes_reached_the_socket() -> None:
    with traced_peer("app") as peer:
        assert peer.probe.arrival != "none", peer.probe.arrival_reason  # both hooks here

        def exchange(client: socket.socket, conn: str, i: int) -> None:
            req = f"GET /{i} HTTP/1.1\r\nhost: x\r\nx-request-id: arr-{i}\r\n\r\n".encode()
            client.sendall(req)
            time.sleep(HOLD_MS / 1000)
            assert peer.do("read", conn=conn, call="recv")["n"] == len(req)
            peer.do("write", conn=conn, call="send", data=RESPONSE)
            _recv_exactly(client, len(RESPONSE))
            time.sleep(PAUSE_S)

        client = socket.create_connection(("127.0.0.1", peer.port))
        peer.do("accept")
        for i in range(WARMUP + MEASURED):
            exchange(client, "ds", i)
        # A new connection to the same listener: the probe knows the listener from the first
        # one, so the socket has its entry from the handshake and its very first request is
        # stamped (no read had named the socket before its bytes arrived).
        client2 = socket.create_connection(("127.0.0.1", peer.port))
        peer.do("accept", conn="ds2")
        exchange(client2, "ds2", WARMUP + MEASURED)
        client.close()
        client2.close()
        s = peer.spans(KIND_SERVER)
        assert len(s) == WARMUP + MEASURED + 1
        s = s[np.argsort(s["ds_rx_beg"])]
        assert len(set(s["ds_fd"][-2:])) == 2  # the last span is the second connection's
        held = s[WARMUP:]
        assert (held["ds_rx_arr"] > 0).all(), held["ds_rx_arr"]
        waited_ms = (held["ds_rx_beg"] - held["ds_rx_arr"]) / 1e6
        assert (waited_ms >= HOLD_MS).all(), waited_ms
        assert (waited_ms < HOLD_MS + PAUSE_S * 1000 / 2).all(), waited_ms


def test_first_response_on_a_new_upstream_connection_is_stamped() -> None:
    """A proxy's upstream connection made after the probe attached: its very first response
    is stamped (the sock path has the connection from its SYN_SENT; the syscalls path maps
    the sk that connect() names to the connection's fd), and, held HOLD_MS in the socket
    before the proxy reads it, it waited that long. Without the join the stamp is 0."""
    with traced_peer("proxy") as peer, socket.socket() as up_listener:
        up_listener.bind(("127.0.0.1", 0))
        up_listener.listen(1)
        client = socket.create_connection(("127.0.0.1", peer.port))
        peer.do("accept")
        peer.do("connect", port=up_listener.getsockname()[1])
        upstream, _ = up_listener.accept()
        req = b"GET / HTTP/1.1\r\nhost: x\r\nx-request-id: arr-up\r\n\r\n"
        client.sendall(req)
        assert peer.do("read", conn="ds", call="recv")["n"] == len(req)
        peer.do("write", conn="us", call="send", data="forward")
        _recv_exactly(upstream, len(req))
        upstream.sendall(RESPONSE.encode())
        time.sleep(HOLD_MS / 1000)
        assert peer.do("read", conn="us", call="recv")["n"] == len(RESPONSE)
        peer.do("write", conn="ds", call="send", data="forward")
        _recv_exactly(client, len(RESPONSE))
        for sock in (client, upstream):
            sock.close()
        s = peer.spans(KIND_PROXY)
        assert len(s) == 1
        assert s["us_rx_arr"][0] > 0
        waited_ms = (int(s["us_rx_beg"][0]) - int(s["us_rx_arr"][0])) / 1e6
        assert HOLD_MS <= waited_ms < HOLD_MS + PAUSE_S * 1000 / 2, waited_ms
