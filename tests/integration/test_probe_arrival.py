"""Arrival stamps (``ds_rx_arr``: when a request's bytes reached the socket, before the traced
process read them) against a known answer: a scripted app (tests/helpers/scripted_peer.py)
reads each request only after the test has held it back for HOLD_MS. On the syscalls path
the stamp goes through the join of ``tcp_rcv_space_adjust`` (the sk a read names) to the
connection's key, on the sock path straight from ``sk_data_ready``: a broken join gives 0, a
stale stamp (an earlier request's bytes) a gap of PAUSE_S or more."""

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

from profiler.probes.sidecar import KIND_SERVER, SidecarProbe

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
        client = socket.create_connection(("127.0.0.1", int(hello["port"])))
        do("accept")
        for i in range(WARMUP + MEASURED):
            req = f"GET /{i} HTTP/1.1\r\nhost: x\r\nx-request-id: arr-{i}\r\n\r\n".encode()
            client.sendall(req)
            time.sleep(HOLD_MS / 1000)
            assert do("read", conn="ds", call="recv")["n"] == len(req)
            do("write", conn="ds", call="send", data=RESPONSE)
            got = b""
            while len(got) < len(RESPONSE):
                got += client.recv(4096)
            time.sleep(PAUSE_S)
        client.close()
        time.sleep(0.1)
        probe.consume()
        s = np.concatenate([*batches, probe.drain_pending()])
        s = s[s["kind"] == KIND_SERVER]
        assert len(s) == WARMUP + MEASURED
        held = s[WARMUP:]
        assert (held["ds_rx_arr"] > 0).all(), held["ds_rx_arr"]
        waited_ms = (held["ds_rx_beg"] - held["ds_rx_arr"]) / 1e6
        assert (waited_ms >= HOLD_MS).all(), waited_ms
        assert (waited_ms < HOLD_MS + PAUSE_S * 1000 / 2).all(), waited_ms
    finally:
        probe.close()
        peer.kill()
        peer.wait()
