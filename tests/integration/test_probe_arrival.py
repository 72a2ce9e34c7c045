"""Arrival stamps (``ds_rx_arr``: when a request's bytes reached the socket, before the traced
process read them) against a known answer: a scripted app (tests/helpers/scripted_peer.py)
reads each request only after the test has held it back for HOLD_MS. On the syscalls path
the stamp goes through the join of ``tcp_rcv_space_adjust`` (the sk a read names) to the
connection's key, on the sock path straight from ``sk_data_ready``: a broken join gives 0, a
stale stamp (an earlier request's bytes) a gap of PAUSE_S or more. A second connection's first
request is stamped too: its socket is known from the handshake on a listener the probe has
learnt (without that, its stamp is 0)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from profiler.probes.sidecar import KIND_PROXY, KIND_SERVER, SidecarProbe

pytestmark = pytest.mark.bpf
PEER = Path(__file__).resolve().parents[1] / "helpers" / "scripted_peer.py"
HOLD_MS = 40  # the bytes wait in the socket this long before the app reads them
PAUSE_S = 0.3  # between requests: a stale stamp would add at least this much
WARMUP = 2  # the first requests of a connection may have no stamp (the join is learned)
MEASURED = 4
RESPONSE = "HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n"


def test_request_arrival_is_when_its_bytes_reached_the_socket() -> None:
    peer = subprocess.Popen(
        [sys.executable, str(PEER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert peer.stdin is not None and peer.stdout is not None

    def do(op: str, **kw: Any) -> dict[str, Any]:
        assert peer.stdin is not None and peer.stdout is not None
        peer.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        peer.stdin.flush()
        out: dict[str, Any] = json.loads(peer.stdout.readline())
        return out

    batches: list[np.ndarray] = []
    probe = SidecarProbe(batches.append, ringbuf_pages=16)
    try:
        hello = json.loads(peer.stdout.readline())
        assert probe.arrival != "none", probe.arrival_reason  # this kernel has both hooks
        probe.add_target(int(hello["pid"]), "app")

        def exchange(client: socket.socket, conn: str, i: int) -> None:
            req = f"GET /{i} HTTP/1.1\r\nhost: x\r\nx-request-id: arr-{i}\r\n\r\n".encode()
            client.sendall(req)
            time.sleep(HOLD_MS / 1000)
            assert do("read", conn=conn, call="recv")["n"] == len(req)
            do("write", conn=conn, call="send", data=RESPONSE)
            got = b""
            while len(got) < len(RESPONSE):
                got += client.recv(4096)
            time.sleep(PAUSE_S)

        client = socket.create_connection(("127.0.0.1", int(hello["port"])))
        do("accept")
        for i in range(WARMUP + MEASURED):
            exchange(client, "ds", i)
        # A new connection to the same listener: the probe knows the listener from the first
        # one, so the socket has its entry from the handshake and its very first request is
        # stamped (no read had named the socket before its bytes arrived).
        client2 = socket.create_connection(("127.0.0.1", int(hello["port"])))
        do("accept", conn="ds2")
        exchange(client2, "ds2", WARMUP + MEASURED)
        client.close()
        client2.close()
        time.sleep(0.1)
        probe.consume()
        s = np.concatenate([*batches, probe.drain_pending()])
        s = s[s["kind"] == KIND_SERVER]
        assert len(s) == WARMUP + MEASURED + 1
        s = s[np.argsort(s["ds_rx_beg"])]
        assert len(set(s["ds_fd"][-2:])) == 2  # the last span is the second connection's
        held = s[WARMUP:]
        assert (held["ds_rx_arr"] > 0).all(), held["ds_rx_arr"]
        waited_ms = (held["ds_rx_beg"] - held["ds_rx_arr"]) / 1e6
        assert (waited_ms >= HOLD_MS).all(), waited_ms
        assert (waited_ms < HOLD_MS + PAUSE_S * 1000 / 2).all(), waited_ms
    finally:
        probe.close()
        peer.kill()
        peer.wait()


def test_first_response_on_a_new_upstream_connection_is_stamped() -> None:
    """A proxy's upstream connection made after the probe attached: its very first response
    is stamped (the sock path has the connection from its SYN_SENT; the syscalls path maps
    the sk that connect() names to the connection's fd), and, held HOLD_MS in the socket
    before the proxy reads it, it waited that long. Without the join the stamp is 0."""
    peer = subprocess.Popen(
        [sys.executable, str(PEER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert peer.stdin is not None and peer.stdout is not None

    def do(op: str, **kw: Any) -> dict[str, Any]:
        assert peer.stdin is not None and peer.stdout is not None
        peer.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        peer.stdin.flush()
        out: dict[str, Any] = json.loads(peer.stdout.readline())
        return out

    batches: list[np.ndarray] = []
    probe = SidecarProbe(batches.append, ringbuf_pages=16)
    up_listener = socket.socket()
    try:
        hello = json.loads(peer.stdout.readline())
        probe.add_target(int(hello["pid"]), "proxy")
        up_listener.bind(("127.0.0.1", 0))
        up_listener.listen(1)
        client = socket.create_connection(("127.0.0.1", int(hello["port"])))
        do("accept")
        do("connect", port=up_listener.getsockname()[1])
        upstream, _ = up_listener.accept()
        req = b"GET / HTTP/1.1\r\nhost: x\r\nx-request-id: arr-up\r\n\r\n"
        client.sendall(req)
        assert do("read", conn="ds", call="recv")["n"] == len(req)
        do("write", conn="us", call="send", data="forward")
        got = b""
        while len(got) < len(req):
            got += upstream.recv(4096)
        upstream.sendall(RESPONSE.encode())
        time.sleep(HOLD_MS / 1000)
        assert do("read", conn="us", call="recv")["n"] == len(RESPONSE)
        do("write", conn="ds", call="send", data="forward")
        got = b""
        while len(got) < len(RESPONSE):
            got += client.recv(4096)
        for sock in (client, upstream):
            sock.close()
        time.sleep(0.1)
        probe.consume()
        s = np.concatenate([*batches, probe.drain_pending()])
        s = s[s["kind"] == KIND_PROXY]
        assert len(s) == 1
        assert s["us_rx_arr"][0] > 0
        waited_ms = (int(s["us_rx_beg"][0]) - int(s["us_rx_arr"][0])) / 1e6
        assert HOLD_MS <= waited_ms < HOLD_MS + PAUSE_S * 1000 / 2, waited_ms
    finally:
        up_listener.close()
        probe.close()
        peer.kill()
        peer.wait()
