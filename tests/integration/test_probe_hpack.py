"""HPACK statuses across the ends of socket calls, against a scripted proxy
(tests/helpers/scripted_peer.py) that writes HTTP/2 responses downstream byte for byte as the
test chose them: a response's header block cut by the end of a write is decoded once the next
write brings its rest, so the dynamic-table shadow keeps count of the encoder's insertions.
A block that cannot be followed to its end is counted (``h2_blocks_lost``), never silent, and
no cut-off block's bytes stay in the kernel once its connection is gone. An upstream
connection whose answers are decoded only from its second stream on (the first was no span)
is counted too.

The responses are gRPC's: ``:status 200`` and ``grpc-status`` (inserted into the encoder's
dynamic table by the first response, a dynamic index in the second). When the shadow loses
count at the first block, the second response's grpc-status is unknown: what CI once saw on
a busy mTLS server sidecar (every OK call unknown for the rest of the connection)."""

from __future__ import annotations

import itertools
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import h2.config
import h2.connection
import hpack
import pytest

from profiler.probes.sidecar import SidecarProbe
from tests.scripted import ScriptedPeer

pytestmark = pytest.mark.bpf
HEADERS, END_STREAM_HEADERS = 0x1, 0x5
RESPONSE = [(":status", "200"), ("content-type", "application/grpc"), ("grpc-status", "0")]


def _frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
    head = struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", sid)
    return head + payload


SETTINGS = _frame(0x4, 0, 0, b"")


class H2Peer(ScriptedPeer):
    """The scripted proxy with one HTTP/2 downstream connection, traced by the real probe: the
    client's preface and two requests (streams 1 and 3) are read, so the probe knows the
    connection as HTTP/2 downstream, and every response write is the test's."""

    def __init__(self, downstream: bool = True) -> None:
        super().__init__()
        self.probe = SidecarProbe(lambda batch: None, ringbuf_pages=16)
        self.probe.add_target(self.pid, "proxy")
        self.encoder = hpack.Encoder()
        self.client: socket.socket | None = None
        if not downstream:
            return
        self.client = socket.create_connection(("127.0.0.1", self.port))
        self.do("accept")
        c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        c.initiate_connection()
        request_head = [(":method", "POST"), (":path", "/smp.Testbed/Unary"),
                        (":scheme", "http"), (":authority", "x")]  # fmt: skip
        for sid in (1, 3):
            c.send_headers(sid, request_head, end_stream=True)
        request = c.data_to_send()
        self.client.sendall(request)
        assert self.do("read", conn="ds", call="recv")["n"] == len(request)
        self.write(SETTINGS)

    def write(self, data: bytes) -> None:
        """One send() of exactly these bytes on the downstream connection."""
        assert self.do("write", conn="ds", call="send", hex=data.hex())["n"] == len(data)
        time.sleep(0.01)

    def response(self, sid: int) -> bytes:
        """Stream sid's response: one HEADERS frame, END_STREAM (a trailers-only answer)."""
        return _frame(HEADERS, END_STREAM_HEADERS, sid, self.encoder.encode(RESPONSE))

    def statuses(self) -> dict[str, Any]:
        return self.probe.status_tables()[0].get(self.pid, {"http": {}, "grpc": {}, "unknown": 0})

    def lost(self) -> int:
        return int(self.probe.proc_stats(self.pid)["h2_blocks_lost"])

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        self.stop()
        self.probe.close()


@pytest.fixture
def peer() -> Iterator[H2Peer]:
    p = H2Peer()
    try:
        yield p
    finally:
        p.close()


def _cuts(data: bytes, *at: int) -> list[bytes]:
    edges = [0, *at, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def test_whole_blocks_the_second_grpc_status_through_the_dynamic_table(peer: H2Peer) -> None:
    """The known answer with no cut: both decoded, the second one by the shadow (if the
    encoder did not index it, this test would not test the shadow: checked)."""
    first, second = peer.response(1), peer.response(3)
    assert len(second) < len(first) - 5  # the second block refers to the dynamic table
    peer.write(first)
    peer.write(second)
    assert peer.statuses() == {"http": {"200": 2}, "grpc": {"0": 2}, "unknown": 0}
    assert peer.lost() == 0


@pytest.mark.parametrize("cut", [10, 12, "last"])
def test_a_block_cut_by_the_end_of_a_write_is_decoded_with_its_rest(
    peer: H2Peer, cut: int | str
) -> None:
    """The first response's header block ends in the next write (cut after its frame header
    and 1 byte, 3 bytes, or before its last byte): without the kept part the first block is
    unknown and the shadow loses count, so the second is unknown too (unknown 2, lost 1)."""
    first = peer.response(1)
    at = len(first) - 1 if cut == "last" else int(cut)
    head, rest = _cuts(first, at)
    peer.write(head)
    peer.write(rest + peer.response(3))
    assert peer.statuses() == {"http": {"200": 2}, "grpc": {"0": 2}, "unknown": 0}
    assert peer.lost() == 0
    assert not _kept(peer)


def test_a_rest_cut_again_is_counted_lost_never_guessed(peer: H2Peer) -> None:
    """The first block in three writes: the kept part's rest is cut again, so the block is
    not followed to its end: counted lost, its grpc-status and the second one unknown (the
    shadow lost count of its insertions), no status guessed."""
    first = peer.response(1)
    for part in _cuts(first, 10, 13):
        peer.write(part)
    peer.write(peer.response(3))
    st = peer.statuses()
    assert st["grpc"] == {} and st["unknown"] == 2, st
    assert peer.lost() == 1
    assert not _kept(peer)


def test_a_kept_block_goes_when_its_connection_closes(peer: H2Peer) -> None:
    """Cut, then the connection closes before the rest: the kept bytes leave the kernel."""
    peer.write(_cuts(peer.response(1), 12)[0])
    assert _kept(peer) == 1
    peer.do("close", conn="ds")
    time.sleep(0.05)
    assert not _kept(peer)


def _kept(peer: H2Peer) -> int:
    """Header blocks kept in the kernel (the probe's own audit of its maps' values)."""
    return sum(1 for name, _ in peer.probe.map_bytes() if name == "smp_hp_parts")


@pytest.fixture
def proxy() -> Iterator[H2Peer]:
    """The scripted proxy with no HTTP/2 downstream (no request of its waits upstream)."""
    p = H2Peer(downstream=False)
    try:
        yield p
    finally:
        p.close()


def test_answers_read_before_the_shadow_began_are_counted(proxy: H2Peer) -> None:
    """An upstream connection's answers are decoded once one of its streams is a span of
    HTTP/2 inside TLS downstream. Its first stream here is not (no request waits when the
    proxy writes it), so the first answer, which inserts grpc-status into the table, goes by
    undecoded; the second stream is (a TLS downstream request waits), so the second answer
    is decoded, and its grpc-status (a reference to that entry) is unknown: counted once in
    h2_blocks_lost, never guessed (without the count: 0)."""
    up = socket.socket()
    up.bind(("127.0.0.1", 0))
    up.listen(1)
    proxy.do("connect", conn="us", port=up.getsockname()[1])
    server, _ = up.accept()
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    head = [(":method", "POST"), (":path", "/smp.Testbed/Unary"), (":scheme", "http"),
            (":authority", "x")]  # fmt: skip
    c.send_headers(1, head, end_stream=True)
    _us_write(proxy, server, c.data_to_send())
    answers = hpack.Encoder()
    _us_answer(proxy, server, SETTINGS + _frame(HEADERS, END_STREAM_HEADERS, 1,
                                               answers.encode(RESPONSE)))  # fmt: skip
    assert proxy.lost() == 0
    # a TLS downstream: its first record is a request waiting for the upstream
    tls = socket.create_connection(("127.0.0.1", proxy.port))
    proxy.do("accept", conn="tls")
    record = b"\x17\x03\x03\x00\x20" + bytes(32)
    tls.sendall(record)
    assert proxy.do("read", conn="tls", call="recv")["n"] == len(record)
    c.send_headers(3, head, end_stream=True)
    _us_write(proxy, server, c.data_to_send())
    second = _frame(HEADERS, END_STREAM_HEADERS, 3, answers.encode(RESPONSE))
    assert len(second) < 15  # grpc-status through the dynamic table
    _us_answer(proxy, server, second)
    assert proxy.statuses() == {"http": {"200": 1}, "grpc": {}, "unknown": 1}
    assert proxy.lost() == 1
    for s in (tls, server, up):
        s.close()


def _us_write(peer: H2Peer, server: socket.socket, data: bytes) -> None:
    """The proxy writes data upstream; the upstream reads all of it."""
    assert peer.do("write", conn="us", call="send", hex=data.hex())["n"] == len(data)
    got = b""
    while len(got) < len(data):
        got += server.recv(65536)


def _us_answer(peer: H2Peer, server: socket.socket, data: bytes) -> None:
    """The upstream answers; the proxy reads all of it in one call."""
    server.sendall(data)
    time.sleep(0.02)
    assert peer.do("read", conn="us", call="recv")["n"] == len(data)
    time.sleep(0.01)
