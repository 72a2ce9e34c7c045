"""profiler.testbed.wire on small packet captures this test writes itself (known instants)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from profiler.errors import BadInputFile
from profiler.testbed.wire import (
    LINKTYPE_ETHERNET,
    LINKTYPE_RAW,
    LINKTYPE_SLL,
    LINKTYPE_SLL2,
    analyse,
    exchanges,
    join,
    parse_pcap,
    read_pcap,
)

CLIENT, POD, LO = "10.1.2.3", "10.1.2.2", "127.0.0.1"
APP = 8080
SYN, ACK, PSH = 0x02, 0x10, 0x08


def _ip(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


def _frame(linktype: int, src: str, sport: int, dst: str, dport: int, seq: int, flags: int,
           payload: bytes) -> bytes:  # fmt: skip
    tcp = struct.pack(">HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 65535, 0, 0) + payload
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, _ip(src), _ip(dst))
    ip += tcp
    if linktype == LINKTYPE_SLL2:
        return struct.pack(">HHIHBB8s", 0x0800, 0, 1, 1, 0, 6, b"") + ip
    if linktype == LINKTYPE_SLL:
        return struct.pack(">HHH8sH", 0, 1, 6, b"", 0x0800) + ip
    if linktype == LINKTYPE_ETHERNET:
        return b"\x00" * 12 + b"\x08\x00" + ip
    return ip


class Pcap:
    """Writes a pcap: ``add(t_us, src, sport, dst, dport, payload)`` keeps sequence numbers."""

    def __init__(self, linktype: int = LINKTYPE_SLL2, nano: bool = True, endian: str = "<"):
        self.linktype, self.nano, self.endian = linktype, nano, endian
        self.seq: dict[tuple[str, int, str, int], int] = {}
        self.rows: list[tuple[int, bytes]] = []

    def syn(self, t_us: float, src: str, sport: int, dst: str, dport: int) -> None:
        self.seq[(src, sport, dst, dport)] = 1001
        self._row(t_us, _frame(self.linktype, src, sport, dst, dport, 1000, SYN, b""))

    def add(self, t_us: float, src: str, sport: int, dst: str, dport: int, data: bytes,
            seq: int | None = None) -> None:  # fmt: skip
        way = (src, sport, dst, dport)
        s = self.seq.get(way, 5000) if seq is None else seq
        if seq is None:
            self.seq[way] = s + len(data)
        self._row(t_us, _frame(self.linktype, src, sport, dst, dport, s, ACK | PSH, data))
        # a pure ACK back, which must change nothing
        self._row(t_us + 1, _frame(self.linktype, dst, dport, src, sport, 1, ACK, b""))

    def _row(self, t_us: float, frame: bytes) -> None:
        self.rows.append((round(t_us * 1000), frame))

    def bytes(self) -> bytes:
        e = self.endian
        magic = 0xA1B23C4D if self.nano else 0xA1B2C3D4
        out = struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, 65535, self.linktype)
        for ns, frame in self.rows:
            frac = ns % 1_000_000_000 if self.nano else (ns % 1_000_000_000) // 1000
            out += struct.pack(e + "IIII", 1_700_000_000 + ns // 10**9, frac, len(frame),
                               len(frame)) + frame  # fmt: skip
        return out


def _req(rid: str | None = None) -> bytes:
    h = b"GET / HTTP/1.1\r\nhost: pod\r\n"
    return h + (f"x-request-id: {rid}\r\n".encode() if rid else b"") + b"\r\n"


def _resp(rid: str | None = None) -> bytes:
    h = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n"
    return h + (f"x-request-id: {rid}\r\n".encode() if rid else b"") + b"\r\nok"


def _one_request(p: Pcap, t0: float, cport: int, uport: int, rid: str, client_rid: bool = True,
                 legs: tuple[float, float, float] = (300, 1000, 200)) -> None:  # fmt: skip
    """Client -> pod at t0; Envoy -> app after request_proxy; app -> Envoy after upstream;
    Envoy -> client after response_proxy (microseconds)."""
    rq, up, rs = legs
    p.add(t0, CLIENT, cport, POD, APP, _req(rid if client_rid else None))
    p.add(t0 + rq, LO, uport, LO, APP, _req(rid))
    p.add(t0 + rq + up, LO, APP, LO, uport, _resp(rid))
    p.add(t0 + rq + up + rs, POD, APP, CLIENT, cport, _resp(rid))


def _analyse(tmp_path: Path, p: Pcap) -> list[tuple[str | None, float, float, float]]:
    f = tmp_path / "w.pcap"
    f.write_bytes(p.bytes())
    res = analyse(f, [APP])
    return [(r.request_id, r.request_proxy_us, r.upstream_us, r.response_proxy_us)
            for r in res.requests]  # fmt: skip


def test_three_requests_on_one_connection_give_their_legs(tmp_path: Path) -> None:
    p = Pcap()
    p.syn(0, CLIENT, 40000, POD, APP)
    _one_request(p, 100, 40000, 50000, "a-1", legs=(300, 1000, 200))
    _one_request(p, 5000, 40000, 50000, "a-2", legs=(17, 3001, 41))
    _one_request(p, 9000, 40000, 50000, "a-3", legs=(29, 7, 1013))
    assert _analyse(tmp_path, p) == [
        ("a-1", 300.0, 1000.0, 200.0),
        ("a-2", 17.0, 3001.0, 41.0),
        ("a-3", 29.0, 7.0, 1013.0),
    ]


def test_client_without_ids_joined_through_the_echoed_response(tmp_path: Path) -> None:
    """Envoy made the ids; the app echoes them, Envoy forwards the echo to the client.
    Two connections interleaved, the app answering the second first."""
    p = Pcap()
    p.add(0, CLIENT, 40001, POD, APP, _req())
    p.add(10, CLIENT, 40002, POD, APP, _req())
    p.add(50, LO, 50001, LO, APP, _req("gen-1"))
    p.add(60, LO, 50002, LO, APP, _req("gen-2"))
    p.add(500, LO, APP, LO, 50002, _resp("gen-2"))
    p.add(700, LO, APP, LO, 50001, _resp("gen-1"))
    p.add(530, POD, APP, CLIENT, 40002, _resp("gen-2"))
    p.add(760, POD, APP, CLIENT, 40001, _resp("gen-1"))
    got = sorted(_analyse(tmp_path, p), key=lambda r: str(r[0]))
    assert got == [("gen-1", 50.0, 650.0, 60.0), ("gen-2", 50.0, 440.0, 30.0)]


def test_retransmitted_request_and_split_response_start_nothing(tmp_path: Path) -> None:
    p = Pcap()
    _one_request(p, 0, 40000, 50000, "r-1", legs=(100, 200, 300))
    # the client's request retransmitted (same sequence numbers) after the answer
    p.add(700, CLIENT, 40000, POD, APP, _req("r-1"), seq=5000)
    # the response's second segment: same exchange, not a new one
    p.add(650, POD, APP, CLIENT, 40000, b"more body")
    _one_request(p, 1000, 40000, 50000, "r-2", legs=(11, 13, 17))
    assert _analyse(tmp_path, p) == [("r-1", 100.0, 200.0, 300.0), ("r-2", 11.0, 13.0, 17.0)]


def _tls(kind: int, n: int = 40) -> bytes:
    return bytes([kind, 3, 3]) + struct.pack(">H", n) + b"\xaa" * n


def test_encrypted_downstream_joined_by_time_handshake_skipped(tmp_path: Path) -> None:
    """mTLS: the handshake flights are no request; each encrypted exchange encloses its
    app-side one (two connections overlapping in time)."""
    p = Pcap()
    p.add(0, CLIENT, 41000, POD, APP, _tls(0x16))  # ClientHello
    p.add(100, POD, APP, CLIENT, 41000, _tls(0x16))  # ServerHello ...
    p.add(200, CLIENT, 41000, POD, APP, _tls(0x14, 1))  # CCS + Finished
    p.add(300, POD, APP, CLIENT, 41000, _tls(0x17))  # NewSessionTicket: no response
    p.add(1000, CLIENT, 41000, POD, APP, _tls(0x17, 300))  # request A
    p.add(1050, CLIENT, 41001, POD, APP, _tls(0x17, 300))  # request B (another conn)
    p.add(1200, LO, 50000, LO, APP, _req("A"))
    p.add(1250, LO, 50001, LO, APP, _req("B"))
    p.add(2200, LO, APP, LO, 50000, _resp("A"))
    p.add(2400, LO, APP, LO, 50001, _resp("B"))
    p.add(2300, POD, APP, CLIENT, 41000, _tls(0x17, 90))
    p.add(2500, POD, APP, CLIENT, 41001, _tls(0x17, 90))
    f = tmp_path / "w.pcap"
    f.write_bytes(p.bytes())
    res = analyse(f, [APP])
    got = [(r.request_id, r.request_proxy_us, r.upstream_us, r.response_proxy_us, r.joined_by)
           for r in res.requests]  # fmt: skip
    assert got == [("A", 200.0, 1000.0, 100.0, "time"), ("B", 200.0, 1150.0, 100.0, "time")]
    assert res.unjoined == 0 and res.downstream == 2 and res.upstream == 2


@pytest.mark.parametrize(
    ("linktype", "nano", "endian"),
    [
        (LINKTYPE_SLL2, True, "<"),
        (LINKTYPE_SLL, False, "<"),
        (LINKTYPE_ETHERNET, True, ">"),
        (LINKTYPE_RAW, False, ">"),
    ],
)
def test_link_types_and_timestamp_precisions(
    tmp_path: Path, linktype: int, nano: bool, endian: str
) -> None:
    p = Pcap(linktype, nano, endian)
    _one_request(p, 100, 40000, 50000, "x-7", legs=(23, 1009, 47))
    assert _analyse(tmp_path, p) == [("x-7", 23.0, 1009.0, 47.0)]


def test_microsecond_pcap_keeps_whole_microseconds(tmp_path: Path) -> None:
    p = Pcap(nano=False)
    p.add(0.4, CLIENT, 1, POD, APP, _req("u"))
    pkts = list(parse_pcap(p.bytes()))
    assert pkts[0].ts_ns % 1000 == 0


def test_request_without_answer_is_not_a_request(tmp_path: Path) -> None:
    p = Pcap()
    p.add(0, CLIENT, 40000, POD, APP, _req("lost"))
    p.add(10, LO, 50000, LO, APP, _req("lost"))
    assert _analyse(tmp_path, p) == []


def test_midstream_bytes_start_no_request() -> None:
    p = Pcap()
    p.add(0, CLIENT, 40000, POD, APP, b"tail of a body that began before the capture")
    p.add(10, POD, APP, CLIENT, 40000, _resp("z"))
    assert exchanges(parse_pcap(p.bytes()), {APP}) == []
    assert join([]).requests == []


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"", "too short"), (b"\x00" * 24, "magic"), (b"GET / HTTP/1.1\r\n" * 3, "magic")],
)
def test_not_a_pcap_is_one_clear_error(tmp_path: Path, data: bytes, message: str) -> None:
    f = tmp_path / "bad.pcap"
    f.write_bytes(data)
    with pytest.raises(BadInputFile, match=message):
        read_pcap(f)


def test_truncated_last_packet_is_skipped() -> None:
    p = Pcap()
    _one_request(p, 0, 40000, 50000, "t-1")
    data = p.bytes()
    assert len(list(parse_pcap(data[:-5]))) == len(p.rows) - 1
