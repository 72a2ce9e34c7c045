"""The wire's account of each request through the server sidecar: packet captures as truth.

A capture (tcpdump, ``-i any`` in the server pod's network namespace, one clock for every
interface) is read as four instants per request, all first data packets:

    ds_req   the client's request reaches the pod (eth0, to the app's port; Envoy gets it
             through the REDIRECT to 15006, which tcpdump sees before NAT)
    us_req   Envoy's request to the app (lo, to 127.0.0.1:<app port>)
    us_resp  the app's response (lo, from 127.0.0.1:<app port>)
    ds_resp  Envoy's response leaves the pod (eth0, from the app's port)

so that ``request_proxy = us_req - ds_req``, ``upstream = us_resp - us_req`` and
``response_proxy = ds_resp - us_resp`` are what the sidecar cost on the wire.

Each TCP connection is cut into exchanges the HTTP/1.1 way (no pipelining, as Envoy and the
testbed's clients do): the first new data from the client after the previous response starts a
request, the first new data from the server after it starts its response. Retransmitted bytes
(sequence numbers already seen) are skipped. Requests are joined by their x-request-id: Envoy
always sends one to the app, and the app echoes it in the response Envoy forwards, so a client
that sent none is joined through the response. Encrypted connections (mTLS) carry no id: their
exchanges are joined to the app-side one they enclose in time (the earliest one still free),
and handshake bursts (TLS records of type handshake or change-cipher-spec) are not requests.

pcap is a small format (a 24-byte file header, a 16-byte header per packet); the Linux cooked
link types (``-i any``), Ethernet and raw IP are read. tcpdump's own count of packets the
kernel dropped is kept: a capture that lost packets says so.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from profiler.errors import BadInputFile, TestbedError

SNAPLEN = 2048  # enough for an HTTP head with Envoy's added headers
_PCAP_MAGIC = {0xA1B2C3D4: 1000, 0xA1B23C4D: 1}  # -> ns per timestamp fraction unit
LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_SLL, LINKTYPE_SLL2 = 1, 101, 113, 276
_TLS_HANDSHAKE = (0x14, 0x15, 0x16)  # change_cipher_spec, alert, handshake
_RID = re.compile(rb"\r\nx-request-id:[ \t]*([^\r\n]{1,128})", re.IGNORECASE)
_METHODS = (b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"PATC", b"OPTI")


@dataclass(frozen=True)
class Packet:
    ts_ns: int  # the capture's clock (CLOCK_REALTIME), nanoseconds
    src: str
    sport: int
    dst: str
    dport: int
    seq: int
    flags: int
    length: int  # TCP payload bytes on the wire (the capture may hold fewer)
    payload: bytes  # the captured part of the TCP payload


def read_pcap(path: Path) -> list[Packet]:
    """Every IPv4 TCP packet of a pcap file, in file order. BadInputFile if it is not one."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise BadInputFile(f"cannot read packet capture {path}: {e.strerror}") from None
    return list(parse_pcap(data, str(path)))


def parse_pcap(data: bytes, name: str = "pcap") -> Iterator[Packet]:
    if len(data) < 24:
        raise BadInputFile(f"{name}: not a pcap file (too short)")
    for endian in ("<", ">"):
        magic = struct.unpack(endian + "I", data[:4])[0]
        if magic in _PCAP_MAGIC:
            break
    else:
        raise BadInputFile(f"{name}: not a pcap file (magic {data[:4].hex()})")
    frac_ns = _PCAP_MAGIC[magic]
    linktype = struct.unpack(endian + "I", data[20:24])[0] & 0x0FFFFFFF
    hdr = struct.Struct(endian + "IIII")
    off = 24
    while off + 16 <= len(data):
        sec, frac, caplen, _origlen = hdr.unpack_from(data, off)
        off += 16
        frame = data[off : off + caplen]
        off += caplen
        if len(frame) < caplen:
            break  # a last packet still being written
        ip = _ip_of(frame, linktype)
        if ip is not None:
            pkt = _tcp_of(ip, sec * 1_000_000_000 + frac * frac_ns)
            if pkt is not None:
                yield pkt


def _ip_of(frame: bytes, linktype: int) -> bytes | None:
    """The IPv4 datagram in a frame, or None (another protocol or link type)."""
    if linktype == LINKTYPE_SLL2:
        proto, start = struct.unpack_from(">H", frame, 0)[0] if len(frame) >= 20 else 0, 20
    elif linktype == LINKTYPE_SLL:
        proto, start = struct.unpack_from(">H", frame, 14)[0] if len(frame) >= 16 else 0, 16
    elif linktype == LINKTYPE_ETHERNET:
        proto, start = struct.unpack_from(">H", frame, 12)[0] if len(frame) >= 14 else 0, 14
    elif linktype == LINKTYPE_RAW:
        proto, start = 0x0800, 0
    else:
        return None
    return frame[start:] if proto == 0x0800 else None


def _tcp_of(ip: bytes, ts_ns: int) -> Packet | None:
    if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
        return None
    ihl = (ip[0] & 0x0F) * 4
    total = struct.unpack_from(">H", ip, 2)[0]
    tcp = ip[ihl:]
    if len(tcp) < 20:
        return None
    sport, dport, seq = struct.unpack_from(">HHI", tcp, 0)
    doff = (tcp[12] >> 4) * 4
    length = max(total - ihl - doff, 0)
    src = ".".join(map(str, ip[12:16]))
    dst = ".".join(map(str, ip[16:20]))
    return Packet(ts_ns, src, sport, dst, dport, seq, tcp[13], length, bytes(tcp[doff:]))


# ----- exchanges on one connection ----------------------------------------------------------


@dataclass
class Exchange:
    """One request and its response on one connection, first data packet of each."""

    conn: tuple[str, int, str, int]  # client address, port, server address, port
    req_ns: int
    req_head: bytes
    resp_ns: int | None = None
    resp_head: bytes = b""
    tls: bool = False

    @property
    def request_id(self) -> str | None:
        """The request's x-request-id, else the one its response echoes."""
        for head in (self.req_head, self.resp_head):
            m = _RID.search(head)
            if m:
                return m.group(1).strip().decode("latin-1")
        return None


def _after(seq: int, mark: int) -> bool:
    """``seq`` is later than ``mark`` in 32-bit sequence space."""
    return 0 < ((seq - mark) & 0xFFFFFFFF) < 0x80000000


def exchanges(packets: Iterable[Packet], server_ports: set[int]) -> list[Exchange]:
    """Every connection to one of ``server_ports`` cut into request/response exchanges."""
    out: list[Exchange] = []
    nxt: dict[tuple[str, int, str, int], int] = {}  # next new sequence number per direction
    open_: dict[tuple[str, int, str, int], Exchange | None] = {}  # conn -> exchange awaiting
    state: dict[tuple[str, int, str, int], str] = {}  # conn -> "idle" | "req" | "resp"
    for p in sorted(packets, key=lambda p: p.ts_ns):
        if p.dport in server_ports:
            conn, to_server = (p.src, p.sport, p.dst, p.dport), True
        elif p.sport in server_ports:
            conn, to_server = (p.dst, p.dport, p.src, p.sport), False
        else:
            continue
        way = (p.src, p.sport, p.dst, p.dport)
        if p.flags & 0x02:  # SYN: a new connection on this 4-tuple
            nxt[way] = (p.seq + 1) & 0xFFFFFFFF
            if to_server:
                state[conn], open_[conn] = "idle", None
            continue
        if p.length == 0:
            continue
        end = (p.seq + p.length) & 0xFFFFFFFF
        if way in nxt and not _after(end, nxt[way]):
            continue  # retransmitted bytes
        nxt[way] = end
        st = state.get(conn, "idle")
        if to_server:
            if st == "req":
                continue  # more of the same request
            state[conn] = "req"
            tls = bool(p.payload) and _is_tls(p.payload)
            if tls and p.payload[0] in _TLS_HANDSHAKE:
                open_[conn] = None  # a handshake flight, not a request
                continue
            if not tls and not p.payload.startswith(_METHODS) and p.payload:
                open_[conn] = None  # joined mid-stream: not the start of a request
                continue
            ex = Exchange(conn, p.ts_ns, p.payload, tls=tls)
            open_[conn] = ex
            out.append(ex)
        else:
            if st == "resp":
                continue
            state[conn] = "resp"
            pending = open_.get(conn)
            if pending is not None and pending.resp_ns is None:
                pending.resp_ns, pending.resp_head = p.ts_ns, p.payload
            open_[conn] = None
    return out


def _is_tls(payload: bytes) -> bool:
    return len(payload) >= 3 and 0x14 <= payload[0] <= 0x17 and payload[1] == 3 and payload[2] <= 4


# ----- requests through the sidecar ---------------------------------------------------------


@dataclass(frozen=True)
class WireRequest:
    """One request through the sidecar on the wire; instants in capture-clock ns."""

    request_id: str | None
    ds_req_ns: int
    us_req_ns: int
    us_resp_ns: int
    ds_resp_ns: int
    joined_by: str  # "request_id" | "time" (encrypted downstream)
    # the client's connection (client address, port, server address, port): the requests of
    # one connection are one downstream socket's in the sidecar, whatever order they went in
    ds_conn: tuple[str, int, str, int] = ("", 0, "", 0)

    @property
    def request_proxy_us(self) -> float:
        return (self.us_req_ns - self.ds_req_ns) / 1e3

    @property
    def upstream_us(self) -> float:
        return (self.us_resp_ns - self.us_req_ns) / 1e3

    @property
    def response_proxy_us(self) -> float:
        return (self.ds_resp_ns - self.us_resp_ns) / 1e3


@dataclass
class WireResult:
    requests: list[WireRequest] = field(default_factory=list)
    downstream: int = 0  # complete exchanges seen from the client
    upstream: int = 0  # complete exchanges seen to the app
    unjoined: int = 0  # downstream exchanges with no app-side exchange found
    kernel_drops: int = 0  # packets tcpdump says the kernel dropped

    def by_id(self) -> dict[str, WireRequest]:
        return {r.request_id: r for r in self.requests if r.request_id}


def is_loopback(addr: str) -> bool:
    return addr.startswith("127.")


def join(exs: list[Exchange]) -> WireResult:
    """The sidecar's requests: client-side exchanges (not on loopback) joined to app-side
    ones (on loopback) by request id, encrypted ones by time (see the module's docstring)."""
    done = [e for e in exs if e.resp_ns is not None]
    ups = [e for e in done if is_loopback(e.conn[2])]
    downs = [e for e in done if not is_loopback(e.conn[2])]
    res = WireResult(downstream=len(downs), upstream=len(ups))
    up_by_id: dict[str, Exchange] = {}
    for u in ups:
        rid = u.request_id
        if rid is not None:
            up_by_id.setdefault(rid, u)
    used: set[int] = set()
    by_time: list[Exchange] = []
    for d in sorted(downs, key=lambda e: e.req_ns):
        rid = None if d.tls else d.request_id
        match = up_by_id.get(rid) if rid is not None else None
        if match is None or id(match) in used:
            by_time.append(d)
            continue
        used.add(id(match))
        res.requests.append(_request(rid, d, match, "request_id"))
    free = sorted((u for u in ups if id(u) not in used), key=lambda e: e.req_ns)
    for d in by_time:
        assert d.resp_ns is not None
        inside = (u for u in free if d.req_ns < u.req_ns and (u.resp_ns or 0) < d.resp_ns)
        inner = next(inside, None)
        if inner is None:
            res.unjoined += 1
            continue
        free.remove(inner)
        res.requests.append(_request(inner.request_id, d, inner, "time"))
    res.requests.sort(key=lambda r: r.ds_req_ns)
    return res


def _request(rid: str | None, d: Exchange, u: Exchange, how: str) -> WireRequest:
    assert d.resp_ns is not None and u.resp_ns is not None
    return WireRequest(rid, d.req_ns, u.req_ns, u.resp_ns, d.resp_ns, how, d.conn)


def analyse(path: Path, server_ports: Iterable[int], kernel_drops: int = 0) -> WireResult:
    """A pcap of the server pod -> its requests through the sidecar."""
    res = join(exchanges(read_pcap(path), set(server_ports)))
    res.kernel_drops = kernel_drops
    return res


# ----- tcpdump in a pod ---------------------------------------------------------------------


def _last(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:240] if lines else "no output"


class WireCapture:
    """tcpdump on every interface of a network namespace, writing ``path``, until ``stop()``.

    ``with WireCapture(netns, path, ports) as cap: ...`` then ``cap.result()``.
    """

    def __init__(self, netns: str, path: Path, ports: Iterable[int]) -> None:
        self.netns, self.path, self.ports = netns, path, sorted(set(ports))
        self.kernel_drops = 0
        self._proc: subprocess.Popen[str] | None = None

    def start(self, timeout_s: float = 10.0) -> WireCapture:
        from profiler.testbed.netns import exec_prefix

        tcpdump = shutil.which("tcpdump")
        if tcpdump is None:
            raise TestbedError("tcpdump is not installed (make setup)")
        bpf_filter = " or ".join(f"tcp port {p}" for p in self.ports)
        # every interface (one clock), packets written as they come (a stop loses none), as
        # root (tcpdump would drop to its own user, who cannot write the caller's directory)
        argv = [*exec_prefix(self.netns), tcpdump, "-i", "any", "-nn", "-U", "--immediate-mode",
                "-B", "16384", "-Z", "root", "-s", str(SNAPLEN), "--time-stamp-precision=nano",
                "-w", str(self.path), bpf_filter]  # fmt: skip
        self._proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, start_new_session=True,
        )  # fmt: skip
        assert self._proc.stderr is not None
        deadline = time.monotonic() + timeout_s
        seen = b""
        fd = self._proc.stderr.fileno()
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([fd], [], [], left)[0]:
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            seen += chunk
            if b"listening on" in seen:
                time.sleep(0.05)  # the packet socket is bound; let its ring start
                return self
        err = self._stop()
        raise TestbedError(f"tcpdump did not start in {self.netns}: {_last(err)}")

    def stop(self) -> None:
        self._stop()

    def _stop(self) -> str:
        p, self._proc = self._proc, None
        if p is None:
            return ""
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGINT)
        try:
            _, err = p.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
        m = re.search(r"(\d+) packets? dropped by kernel", err or "")
        self.kernel_drops = int(m.group(1)) if m else 0
        return err or ""

    def result(self) -> WireResult:
        return analyse(self.path, self.ports, self.kernel_drops)

    def __enter__(self) -> WireCapture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
