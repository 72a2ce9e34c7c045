"""The sidecar probe's state machine against a scripted proxy (tests/helpers/scripted_peer.py):
every socket call of the traced process is chosen by the test, so each behaviour has a known
answer (spans, instants in order, injected gaps, byte counts, counters). No Envoy. Runs on
the path the feature probe picks; CI runs it again with SMP_PROBE_PATH=syscalls."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from profiler.probes.sidecar import (
    F_DS_TX_CALL,
    F_MATCH_RID,
    F_MATCH_THREAD,
    F_US_TX_CALL,
    KIND_PROXY,
    KIND_SERVER,
    KIND_UNPARSED,
    SidecarProbe,
    request_ids,
)
from tests.scripted import ScriptedPeer

pytestmark = pytest.mark.bpf
GAP_MS = 30  # an injected gap: a leg that spans it must be at least this long


def request(rid: str | None, path: str = "/") -> bytes:
    head = f"GET {path} HTTP/1.1\r\nhost: x\r\n"
    if rid:
        head += f"x-request-id: {rid}\r\n"
    return (head + "\r\n").encode()


RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n"


class Peer(ScriptedPeer):
    """The scripted process, its client (downstream) and its upstream server."""

    def __init__(self) -> None:
        super().__init__()
        self.up_listener = socket.socket()
        self.up_listener.bind(("127.0.0.1", 0))
        self.up_listener.listen(4)
        self.client: socket.socket | None = None
        self.upstream: socket.socket | None = None

    def open(self, upstream: bool = True) -> None:
        self.client = socket.create_connection(("127.0.0.1", self.port))
        self.do("accept")
        if upstream:
            self.do("connect", port=self.up_listener.getsockname()[1])
            self.upstream, _ = self.up_listener.accept()

    def exchange(
        self,
        req: bytes,
        read_call: str = "recv",
        write_call: str = "send",
        upstream_delay_s: float = 0.0,
    ) -> None:
        """One proxied request: client -> peer -> upstream -> peer -> client."""
        assert self.client is not None and self.upstream is not None
        self.client.sendall(req)
        assert self.do("read", conn="ds", call=read_call)["n"] == len(req)
        self.do("write", conn="us", call=write_call, data="forward")
        _recv_exactly(self.upstream, len(req))
        time.sleep(upstream_delay_s)
        self.upstream.sendall(RESPONSE)
        assert self.do("read", conn="us", call=read_call)["n"] == len(RESPONSE)
        self.do("write", conn="ds", call=write_call, data="forward")
        _recv_exactly(self.client, len(RESPONSE))

    def close(self) -> None:
        for s in (self.client, self.upstream, self.up_listener):
            if s is not None:
                s.close()
        self.stop()


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = s.recv(n - len(got))
        assert chunk, "peer closed"
        got += chunk
    return got


class Traced:
    """The real probe tracing the peer as a proxy (or app); spans collected as they come."""

    def __init__(self, peer: Peer, mode: str = "proxy") -> None:
        self.batches: list[np.ndarray] = []
        self.probe = SidecarProbe(self.batches.append, ringbuf_pages=16)
        self.probe.add_target(peer.pid, "proxy" if mode == "proxy" else "app")
        self.pid = peer.pid

    def spans(self) -> np.ndarray:
        """Everything emitted so far plus the answered requests still in the table (request
        records: a connection's unparsed-bytes record is not a span)."""
        time.sleep(0.05)
        self.probe.consume()
        rows = [*self.batches, self.probe.drain_pending()]
        out: np.ndarray = np.concatenate(rows) if rows else np.empty(0, self.probe.dtype)
        return out[out["kind"] != KIND_UNPARSED]

    def stats(self) -> dict[str, int]:
        return self.probe.proc_stats(self.pid)


@pytest.fixture
def peer() -> Iterator[Peer]:
    p = Peer()
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def traced(peer: Peer) -> Iterator[Traced]:
    t = Traced(peer)
    try:
        yield t
    finally:
        t.probe.close()


def _ordered(s: np.ndarray) -> None:
    for row in s:
        assert 0 < row["ds_rx_beg"] <= row["us_tx_beg"] <= row["us_tx_end"], row
        assert row["us_tx_end"] < row["us_rx_beg"] <= row["ds_tx_end"], row


def _ms(ns: Any) -> float:
    return float(ns) / 1e6


CALLS = [("recv", "send"), ("read", "write"), ("readv", "writev"), ("recvmsg", "sendmsg")]
CALLS += [("recvfrom", "sendto")]


def test_keep_alive_one_span_per_request_for_every_socket_call(peer: Peer, traced: Traced) -> None:
    """Five requests on one connection, each moved with another pair of calls (read/write,
    readv/writev, recv/send, recvfrom/sendto, recvmsg/sendmsg): five spans, in order, each
    with its own id, its byte counts and the injected upstream delay in its upstream leg."""
    peer.open()
    for i, (rd, wr) in enumerate(CALLS):
        peer.exchange(request(f"ka-{i}"), rd, wr, upstream_delay_s=GAP_MS / 1000)
    s = traced.spans()
    assert len(s) == len(CALLS)
    assert request_ids(s) == [f"ka-{i}" for i in range(len(CALLS))]
    assert set(s["kind"].tolist()) == {KIND_PROXY}
    assert set(s["tgid"].tolist()) == {peer.pid}
    _ordered(s)
    for row, (i, (_rd, wr)) in zip(s, enumerate(CALLS), strict=True):
        assert row["req_bytes"] == len(request(f"ka-{i}"))
        assert row["resp_bytes"] == len(RESPONSE)
        # writev's first buffer (all the probe scans) ends before the id here: the upstream
        # write is matched by worker thread, and no prefix of the id is taken for one
        assert row["flags"] & (F_MATCH_THREAD if wr == "writev" else F_MATCH_RID), s["flags"]
        assert _ms(row["us_rx_beg"] - row["us_tx_end"]) >= GAP_MS
        assert _ms(row["us_tx_end"] - row["ds_rx_beg"]) < GAP_MS  # nothing injected there
    assert len(set(s["ds_fd"].tolist())) == 1 and len(set(s["us_fd"].tolist())) == 1
    assert s["ds_fd"][0] != s["us_fd"][0]
    st = traced.stats()
    assert st["spans"] + len(traced.probe.drain_pending()) == len(CALLS)
    assert st["unparsed_bytes"] == 0 and st["unattributed"] == 0


def test_request_split_over_several_reads(peer: Peer, traced: Traced) -> None:
    """A request head arriving in three pieces, GAP_MS apart, read three times and sent on
    at once: one span from the FIRST read (request_proxy covers both gaps), all its bytes."""
    peer.open()
    req = request("split-1")
    assert peer.client is not None and peer.upstream is not None
    for part in (req[:10], req[10:25], req[25:]):
        peer.client.sendall(part)
        assert peer.do("read", conn="ds", call="recv")["n"] == len(part)
        time.sleep(GAP_MS / 1000)
    peer.do("write", conn="us", call="send", data="forward")
    _recv_exactly(peer.upstream, len(req))
    peer.upstream.sendall(RESPONSE)
    peer.do("read", conn="us", call="recv")
    peer.do("write", conn="ds", call="send", data="forward")
    _recv_exactly(peer.client, len(RESPONSE))
    s = traced.spans()
    assert len(s) == 1
    _ordered(s)
    assert s[0]["req_bytes"] == len(req)
    assert _ms(s[0]["us_tx_end"] - s[0]["ds_rx_beg"]) >= 3 * GAP_MS
    # the id was in the third piece: not seen by the head scan, matched by thread instead
    assert s[0]["flags"] & F_MATCH_THREAD


def test_partial_writes_stamp_the_last_one(peer: Peer, traced: Traced) -> None:
    """The request sent upstream in two writes and the response downstream in three, GAP_MS
    apart: us_tx_beg is the first upstream write, us_tx_end the last; ds_tx_end the last
    downstream write; the gaps land in request_proxy and response_proxy, not upstream."""
    peer.open()
    req = request("partial-1")
    assert peer.client is not None and peer.upstream is not None
    peer.client.sendall(req)
    peer.do("read", conn="ds", call="recv")
    peer.do("write", conn="us", call="write", data="forward", parts=2, gap_ms=GAP_MS)
    _recv_exactly(peer.upstream, len(req))
    peer.upstream.sendall(RESPONSE)
    peer.do("read", conn="us", call="read")
    peer.do("write", conn="ds", call="write", data="forward", parts=3, gap_ms=GAP_MS)
    _recv_exactly(peer.client, len(RESPONSE))
    s = traced.spans()
    assert len(s) == 1
    row = s[0]
    _ordered(s)
    assert _ms(row["us_tx_end"] - row["us_tx_beg"]) >= GAP_MS
    assert _ms(row["ds_tx_end"] - row["us_rx_beg"]) >= 2 * GAP_MS
    assert _ms(row["us_rx_beg"] - row["us_tx_end"]) < GAP_MS
    assert row["resp_bytes"] == len(RESPONSE) and row["req_bytes"] == len(req)


def test_a_write_tcp_holds_back_is_timed_by_its_call_and_flagged(
    peer: Peer, traced: Traced
) -> None:
    """Write stamps (net_dev_queue): a write whose bytes leave at once takes its first
    packet's instant, unflagged; one TCP holds back (the client reads nothing and its small
    receive window is full: no packet can leave) takes its call's instant and flags its leg,
    SMP_F_DS_TX_CALL, and only that one (the request sent upstream left: no
    SMP_F_US_TX_CALL)."""
    assert peer.upstream is None
    peer.client = socket.socket()
    peer.client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # before the handshake
    peer.client.connect(("127.0.0.1", peer.port))
    peer.do("accept")
    peer.do("connect", port=peer.up_listener.getsockname()[1])
    peer.upstream, _ = peer.up_listener.accept()
    peer.exchange(request("left-1"))  # both writes leave at once
    req = request("held-2")
    peer.client.sendall(req)
    assert peer.do("read", conn="ds", call="recv")["n"] == len(req)
    peer.do("write", conn="us", call="send", data="forward")
    _recv_exactly(peer.upstream, len(req))
    body = b"x" * 6000  # more than the client's window, less than the peer's send buffer
    head = f"HTTP/1.1 200 OK\r\ncontent-length: {len(body) + 100}\r\n\r\n".encode()
    peer.upstream.sendall(head + body)
    got = 0
    while got < len(head + body):
        got += peer.do("read", conn="us", call="recv")["n"]
    peer.do("write", conn="ds", call="send", data="forward")  # its first packets leave
    time.sleep(0.05)  # the window fills: the client reads nothing
    peer.do("write", conn="ds", call="send", data="y" * 100)  # held back: no packet
    _recv_exactly(peer.client, len(head + body) + 100)
    s = traced.spans()
    assert request_ids(s) == ["left-1", "held-2"]
    _ordered(s)
    left, held = int(s[0]["flags"]), int(s[1]["flags"])
    assert not left & (F_US_TX_CALL | F_DS_TX_CALL), hex(left)
    assert held & F_DS_TX_CALL and not held & F_US_TX_CALL, hex(held)
    assert s[1]["resp_bytes"] == len(head + body) + 100


def test_reads_that_return_eagain_change_nothing(peer: Peer, traced: Traced) -> None:
    """A non-blocking read that finds nothing (EAGAIN) before and after each real read, as an
    event loop does: the spans are exactly those of the requests, first read stamped."""
    peer.open()
    assert peer.client is not None and peer.upstream is not None
    for i in range(3):
        assert peer.do("read", conn="ds", call="recv", nonblock=True).get("eagain")
        time.sleep(GAP_MS / 1000)  # an EAGAIN read must not start the request
        req = request(f"eagain-{i}")
        t_send = time.monotonic_ns()
        peer.client.sendall(req)
        peer.do("read", conn="ds", call="recv")
        assert peer.do("read", conn="ds", call="recv", nonblock=True).get("eagain")
        peer.do("write", conn="us", call="send", data="forward")
        _recv_exactly(peer.upstream, len(req))
        assert peer.do("read", conn="us", call="recvmsg", nonblock=True).get("eagain")
        peer.upstream.sendall(RESPONSE)
        peer.do("read", conn="us", call="recvmsg")
        peer.do("write", conn="ds", call="send", data="forward")
        _recv_exactly(peer.client, len(RESPONSE))
        s = traced.spans()
        assert len(s) == i + 1
        assert int(s[-1]["ds_rx_beg"]) >= t_send  # not the EAGAIN read before it
    _ordered(s)
    assert request_ids(s) == ["eagain-0", "eagain-1", "eagain-2"]
    assert traced.stats()["unparsed_bytes"] == 0


def test_pipelined_request_is_counted_not_lost(peer: Peer, traced: Traced) -> None:
    """A second request read while the first is still open (HTTP/1.1 pipelining): one span
    per connection at a time, so the second gets none, and it is counted (pipelined,
    unparsed bytes), never silent."""
    peer.open()
    assert peer.client is not None and peer.upstream is not None
    r1, r2 = request("pipe-1"), request("pipe-2")
    peer.client.sendall(r1)
    peer.do("read", conn="ds", call="recv")
    peer.client.sendall(r2)
    peer.do("read", conn="ds", call="recv")
    peer.do("write", conn="us", call="send", data="forward")
    _recv_exactly(peer.upstream, len(r1) + len(r2))
    peer.upstream.sendall(RESPONSE + RESPONSE)
    peer.do("read", conn="us", call="recv")
    peer.do("write", conn="ds", call="send", data="forward")
    _recv_exactly(peer.client, 2 * len(RESPONSE))
    s = traced.spans()
    assert request_ids(s) == ["pipe-1"]
    assert s[0]["req_bytes"] == len(r1)
    st = traced.stats()
    assert st["pipelined"] == 1
    assert st["unparsed_bytes"] == len(r2)


def test_close_mid_request_gives_no_span_and_is_counted(peer: Peer, traced: Traced) -> None:
    """The client gives up after the request went upstream; the proxy closes downstream
    before any response: no span (it would have no end), one aborted request. The next
    connection's request is measured normally."""
    peer.open()
    assert peer.client is not None and peer.upstream is not None
    req = request("abort-1")
    peer.client.sendall(req)
    peer.do("read", conn="ds", call="recv")
    peer.do("write", conn="us", call="send", data="forward")
    _recv_exactly(peer.upstream, len(req))
    peer.client.close()
    peer.do("close", conn="ds")
    time.sleep(0.05)
    assert len(traced.spans()) == 0
    assert traced.stats()["aborted"] == 1
    # the upstream answers late; the proxy reads it and has nowhere to send it
    peer.upstream.sendall(RESPONSE)
    peer.do("read", conn="us", call="recv")
    peer.client = socket.create_connection(("127.0.0.1", peer.port))
    peer.do("accept")
    peer.exchange(request("after-1"))
    s = traced.spans()
    assert request_ids(s) == ["after-1"]
    _ordered(s)


def test_local_reply_is_no_span_and_counted(peer: Peer, traced: Traced) -> None:
    """The proxy answers a request itself (Envoy's 404, a rate limit): no upstream, no span,
    one local reply. A proxied request after it on the same connection gets its span."""
    peer.open()
    assert peer.client is not None
    req = request("local-1", "/nope")
    peer.client.sendall(req)
    peer.do("read", conn="ds", call="recv")
    reply = "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
    peer.do("write", conn="ds", call="send", data=reply)
    _recv_exactly(peer.client, len(reply))
    assert len(traced.spans()) == 0
    st = traced.stats()
    assert st["local_replies"] == 1
    assert st["unparsed_bytes"] == len(req) + len(reply)
    peer.exchange(request("proxied-1"))
    s = traced.spans()
    assert request_ids(s) == ["proxied-1"]
    _ordered(s)


def test_app_mode_one_server_span_per_request(peer: Peer) -> None:
    """The same peer traced as an app (it serves, no upstream): one SERVER span per request,
    from the request read to the last response write (the injected gap inside)."""
    traced = Traced(peer, mode="app")
    try:
        peer.open(upstream=False)
        assert peer.client is not None
        for i in range(3):
            req = request(f"app-{i}")
            peer.client.sendall(req)
            peer.do("read", conn="ds", call="read")
            time.sleep(GAP_MS / 1000)
            peer.do("write", conn="ds", call="write", data=RESPONSE.decode(), parts=2)
            _recv_exactly(peer.client, len(RESPONSE))
        s = traced.spans()
        assert request_ids(s) == ["app-0", "app-1", "app-2"]
        assert set(s["kind"].tolist()) == {KIND_SERVER}
        assert all(_ms(r["ds_tx_end"] - r["ds_rx_beg"]) >= GAP_MS for r in s)
        assert s["resp_bytes"].tolist() == [len(RESPONSE)] * 3
    finally:
        traced.probe.close()


def _head(code: int, body: bytes = b"ok\n") -> bytes:
    return f"HTTP/1.1 {code} X\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body


def test_response_status_in_the_span_from_every_write_call(peer: Peer) -> None:
    """The status of the response head the traced process writes, per span (app mode: what
    the app wrote), through each write call (writev: from its first buffer); the final one
    after a 100 Continue; not replaced by a later write that merely starts like a head (a
    body); 0 (unknown) when the head's first write is shorter than "HTTP/1.1 NNN" (the
    classifier's 12 bytes: no second read for it)."""
    traced = Traced(peer, mode="app")
    writes: dict[str, list[tuple[str, bytes, int]]] = {
        "w-write": [("write", _head(201), 1)],
        "w-writev": [("writev", _head(404), 1)],
        "w-send": [("send", _head(503), 1)],
        "w-sendto": [("sendto", _head(302), 1)],
        "w-sendmsg": [("sendmsg", _head(599), 1)],
        "continue": [("write", b"HTTP/1.1 100 Continue\r\n\r\n", 1), ("write", _head(207), 1)],
        "body-like-a-head": [
            ("write", b"HTTP/1.1 200 OK\r\ncontent-length: 20\r\n\r\n", 1),
            ("write", b"HTTP/1.1 500 oops!\r\n", 1),
        ],
        "head-split": [("write", _head(502), 4)],  # a first write of 11 bytes
    }
    want = {"w-write": 201, "w-writev": 404, "w-send": 503, "w-sendto": 302, "w-sendmsg": 599,
            "continue": 207, "body-like-a-head": 200, "head-split": 0}  # fmt: skip
    try:
        peer.open(upstream=False)
        assert peer.client is not None
        for rid, calls in writes.items():
            peer.client.sendall(request(rid))
            peer.do("read", conn="ds", call="read")
            for call, data, parts in calls:
                peer.do("write", conn="ds", call=call, data=data.decode(), parts=parts)
                _recv_exactly(peer.client, len(data))
        s = traced.spans()
        got = dict(zip(request_ids(s), s["status"].tolist(), strict=True))
        assert got == want
    finally:
        traced.probe.close()


def test_pool_reordering_is_repaired(peer: Peer, traced: Traced) -> None:
    """Requests without ids read A then B (two downstream connections) but sent upstream B
    first (a connection pool that had one connection free): thread order matches them the
    wrong way round. B's response, written with no upstream answer of its own, is matched to
    the oldest unanswered upstream response and the two swap upstream halves: two spans, each
    with its own upstream delay (B 1 gap, A 2 gaps), none lost."""
    assert peer.client is None
    ups = peer.up_listener.getsockname()[1]
    a = socket.create_connection(("127.0.0.1", peer.port))
    peer.do("accept", conn="ds")
    b = socket.create_connection(("127.0.0.1", peer.port))
    peer.do("accept", conn="ds2")
    peer.do("connect", port=ups, conn="us")
    up1, _ = peer.up_listener.accept()
    peer.do("connect", port=ups, conn="us2")
    up2, _ = peer.up_listener.accept()
    try:
        req = request(None)
        a.sendall(req)
        peer.do("read", conn="ds", call="recv")
        b.sendall(req)
        peer.do("read", conn="ds2", call="recv")
        peer.do("write", conn="us", call="send", data="forward", src="ds2")  # B's first
        peer.do("write", conn="us2", call="send", data="forward", src="ds")
        _recv_exactly(up1, len(req))
        _recv_exactly(up2, len(req))
        time.sleep(GAP_MS / 1000)
        up1.sendall(RESPONSE)  # B's answer
        peer.do("read", conn="us", call="recv")
        peer.do("write", conn="ds2", call="send", data="forward", src="us")
        _recv_exactly(b, len(RESPONSE))
        time.sleep(GAP_MS / 1000)
        up2.sendall(RESPONSE)  # A's answer
        peer.do("read", conn="us2", call="recv")
        peer.do("write", conn="ds", call="send", data="forward", src="us2")
        _recv_exactly(a, len(RESPONSE))
        s = traced.spans()
        assert len(s) == 2, traced.stats()
        assert traced.stats()["local_replies"] == 0
        _ordered(s)
        by_fd = {int(r["ds_fd"]): r for r in s}
        assert len(by_fd) == 2
        first, second = sorted(by_fd.values(), key=lambda r: int(r["ds_rx_beg"]))  # A, B
        up_a = _ms(first["us_rx_beg"] - first["us_tx_end"])
        up_b = _ms(second["us_rx_beg"] - second["us_tx_end"])
        assert up_a >= 2 * GAP_MS, (up_a, up_b)
        assert GAP_MS <= up_b < 2 * GAP_MS, (up_a, up_b)
        assert first["us_fd"] != second["us_fd"]
    finally:
        for sock in (a, b, up1, up2):
            sock.close()


def test_request_id_found_at_every_byte_offset_in_any_case(peer: Peer) -> None:
    """The id scan (eight bytes at a time, bytes by shifts) finds the header whatever byte of
    a word its line starts at, in any letter case, takes the value whole, and never reads past
    the bytes the call moved: a header line that ends the head too close to its end (less
    than the name and one byte of value) is no id. 16 requests put the id's line at 16
    consecutive offsets (two words' worth); a slip of one byte in the shifts loses or clips
    some of them."""
    names = ["x-request-id", "X-Request-ID", "X-REQUEST-ID", "x-Request-Id"]
    traced = Traced(peer, mode="app")
    try:
        peer.open(upstream=False)
        assert peer.client is not None
        sent = []
        for k in range(16):
            rid = f"off-{k}-{'abcdefghij'[: k % 7 + 1]}"
            head = f"GET / HTTP/1.1\r\nhost: x\r\na: {'b' * k}\r\n{names[k % 4]}: {rid}\r\n\r\n"
            sent.append(rid)
            peer.client.sendall(head.encode())
            peer.do("read", conn="ds", call="read")
            peer.do("write", conn="ds", call="write", data=RESPONSE.decode())
            _recv_exactly(peer.client, len(RESPONSE))
        # the id's line is the last thing moved, cut after 14 bytes of "\nx-request-id:"
        short = b"GET / HTTP/1.1\r\nhost: x\r\nx-request-id:"
        peer.client.sendall(short)
        peer.do("read", conn="ds", call="read")
        peer.do("write", conn="ds", call="write", data=RESPONSE.decode())
        _recv_exactly(peer.client, len(RESPONSE))
        s = traced.spans()
        assert request_ids(s) == [*sent, ""]
    finally:
        traced.probe.close()
