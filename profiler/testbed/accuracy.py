"""The probe's legs next to the wire's and Envoy's own timers, request by request.

``wire_case`` runs one load case on a testbed with three witnesses at once: the probe (its
spans file), tcpdump in the server pod (:mod:`profiler.testbed.wire`, the truth) and Envoy's
access log; ``join_requests`` pairs them by request id and :class:`WireComparison` holds the
per-request legs of all three. ``compare``/``measure`` are the older per-leg medians against
Envoy's timers alone, used by the accuracy benchmark (docs/accuracy.md).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from profiler.capture.document import read_spans
from profiler.errors import TestbedError
from profiler.legs import MAIN
from profiler.testbed.accesslog import AccessLogEntry, read_access_log

LEGS = MAIN


@dataclass
class LegComparison:
    ours_p50: float
    envoy_p50: float
    ours_p99: float
    envoy_p99: float


@dataclass
class Comparison:
    ours: int  # sidecar spans with the prefix
    envoy: int  # access-log lines with the prefix
    matched: int
    legs: dict[str, LegComparison] = field(default_factory=dict)


def envoy_entries(
    access_log: Path, prefix: str, expect: int, timeout_s: float = 8.0
) -> dict[str, AccessLogEntry]:
    """The access log's requests whose id starts with ``prefix``, waiting (Envoy flushes its
    log every few hundred ms) until ``expect`` of them are there or the time is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        entries = {
            e.request_id: e
            for e in read_access_log(access_log)
            if e.request_id and e.request_id.startswith(prefix)
        }
        if len(entries) >= expect or time.monotonic() > deadline:
            return entries
        time.sleep(0.1)


def compare(spans_file: Path, access_log: Path, prefix: str, expect: int) -> Comparison:
    envoy = envoy_entries(access_log, prefix, expect)
    ours = {
        r["request_id"]: r
        for r in read_spans(spans_file)
        if r["role"] == "sidecar" and r["request_id"].startswith(prefix)
    }
    matched = sorted(set(envoy) & set(ours))
    out = Comparison(ours=len(ours), envoy=len(envoy), matched=len(matched))
    if not matched:
        return out
    a = {leg: np.array([float(ours[k][f"{leg}_us"]) for k in matched]) for leg in LEGS}
    b = {leg: np.array([float(getattr(envoy[k], f"{leg}_us")) for k in matched]) for leg in LEGS}
    a["first_byte_to_first_byte"] = a["request_proxy"] + a["upstream"]
    b["first_byte_to_first_byte"] = b["request_proxy"] + b["upstream"]
    for leg in a:
        out.legs[leg] = LegComparison(
            ours_p50=round(float(np.median(a[leg])), 1),
            envoy_p50=round(float(np.median(b[leg])), 1),
            ours_p99=round(float(np.percentile(a[leg], 99)), 1),
            envoy_p99=round(float(np.percentile(b[leg], 99)), 1),
        )
    return out


@dataclass
class Measured:
    comparison: Comparison
    capture: dict[str, Any]  # the capture document of the window
    load: Any  # the LoadResult
    proc_cpu_s: float  # the sidecar's utime + stime over the window, from /proc


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads) in seconds: the kernel's own account."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    tb: Any, rate: float, seconds: float, tag: str, spans_file: Path, connections: int = 8
) -> Measured:
    """Capture the testbed's server sidecar and app while the built-in open-loop generator
    sends ``rate`` req/s for ``seconds`` from the client pod (request ids ``smp-<tag>-<n>``),
    then compare the window's spans with Envoy's access log."""
    from profiler.capture import CaptureConfig, start_capture
    from profiler.loadgen import LoadSpec, run_load

    server = tb.state.server
    session = start_capture(
        CaptureConfig(
            sidecar_pids=[server.envoy_pid],
            app_pids=[server.app_pid],
            duration_s=None,
            spans_file=spans_file,
        )
    )
    spec = LoadSpec(
        "builtin", tb.state.url, rate, seconds, connections, netns=tb.state.client.netns, run_id=tag
    )
    cpu0 = proc_cpu_s(server.envoy_pid)
    result = session.during(lambda: run_load(spec))
    cpu = proc_cpu_s(server.envoy_pid) - cpu0
    doc = session.stop()
    cmp = compare(spans_file, Path(tb.state.access_log), f"smp-{tag}-", result.requests)
    return Measured(cmp, doc, result, cpu)


# ----- the wire as truth, per request ------------------------------------------------------

# Sends rounds of requests: each round one request on each of ``conns`` keep-alive connections
# (all sent, then all read), a round every ``period`` s for ``seconds``. Ids "<prefix>-<n>"
# unless the prefix is "-"; with ``alt_delay_ms`` every odd request asks the app for that much
# more wait (x-smp-delay-ms). Prints {"sent": n, "errors": n, "delayed": [ids]}.
BURST_CLIENT = r"""
import json, socket, sys, time
host, port, conns, period, seconds, prefix, alt = sys.argv[1:8]
port, conns, period, seconds, alt = int(port), int(conns), float(period), float(seconds), int(alt)
socks = [socket.create_connection((host, port), timeout=10) for _ in range(conns)]
for s in socks:
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
bufs = [b""] * conns
def read_one(i):
    s = socks[i]
    while b"\r\n\r\n" not in bufs[i]:
        d = s.recv(65536)
        if not d:
            raise OSError("closed")
        bufs[i] += d
    head, _, rest = bufs[i].partition(b"\r\n\r\n")
    n = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            n = int(v)
    while len(rest) < n:
        d = s.recv(65536)
        if not d:
            raise OSError("closed")
        rest += d
    bufs[i] = rest[n:]
    return int(head.split(b" ", 2)[1])
sent = errors = k = 0
delayed = []
t0 = time.monotonic()
nxt = t0
while time.monotonic() - t0 < seconds:
    for i, s in enumerate(socks):
        h = f"GET / HTTP/1.1\r\nhost: {host}\r\n"
        if prefix != "-":
            h += f"x-request-id: {prefix}-{k}\r\n"
        if alt and k % 2:
            h += f"x-smp-delay-ms: {alt}\r\n"
            delayed.append(f"{prefix}-{k}")
        s.sendall((h + "\r\n").encode())
        k += 1
    for i in range(conns):
        sent += 1
        if read_one(i) != 200:
            errors += 1
    nxt += period
    time.sleep(max(0.0, nxt - time.monotonic()))
print(json.dumps({"sent": sent, "errors": errors, "delayed": delayed}))
"""

WIRE_LEGS = MAIN


@dataclass
class WireComparison:
    """Per-request legs (us) of the requests the wire saw, with ours and Envoy's where joined.

    ``ours``/``envoy`` arrays are aligned with ``wire``; NaN where that witness has no record
    of the request."""

    ids: list[str]
    wire: dict[str, np.ndarray]
    ours: dict[str, np.ndarray]
    envoy: dict[str, np.ndarray]
    sent: int = 0
    spans: int = 0  # our sidecar spans in the window
    wire_unjoined: int = 0
    wire_drops: int = 0
    notes: list[str] = field(default_factory=list)
    ours_flags: np.ndarray | None = None  # our spans' flags (struct smp_span), 0 where none

    @property
    def with_span(self) -> int:
        return int(np.count_nonzero(~np.isnan(self.ours["request_proxy"]))) if self.ids else 0

    def table(self) -> dict[str, dict[str, float]]:
        """leg -> wire/ours/envoy p50 and p99 over the requests all three have."""
        both = ~np.isnan(self.ours["request_proxy"]) & ~np.isnan(self.envoy["request_proxy"])
        out: dict[str, dict[str, float]] = {}
        for leg in self.wire:
            row: dict[str, float] = {}
            for who, d in (("wire", self.wire), ("ours", self.ours), ("envoy", self.envoy)):
                if leg not in d:
                    continue
                v = d[leg][both]
                if v.size:
                    row[f"{who}_p50"] = round(float(np.median(v)), 1)
                    row[f"{who}_p99"] = round(float(np.percentile(v, 99)), 1)
            out[leg] = row
        return out


def join_requests(
    wire: Any, spans_file: Path, entries: list[AccessLogEntry], ours_legs: tuple[str, ...]
) -> WireComparison:
    """The wire's requests (a :class:`~profiler.testbed.wire.WireResult`) with our sidecar
    spans and Envoy's access-log entries of the same request ids."""
    rows = [r for r in read_spans(spans_file) if r["role"] == "sidecar"]
    ours = {r["request_id"]: r for r in rows if r["request_id"]}
    envoy = {e.request_id: e for e in entries if e.request_id}
    reqs = [r for r in wire.requests if r.request_id]
    ids = [str(r.request_id) for r in reqs]
    nan = float("nan")

    def col(get: Any) -> np.ndarray:
        return np.array([get(i) for i in ids], dtype=np.float64)

    w = {leg: np.array([getattr(r, f"{leg}_us") for r in reqs], dtype=np.float64)
         for leg in WIRE_LEGS}  # fmt: skip
    o = {
        leg: col(lambda i, leg=leg: float(ours[i][f"{leg}_us"]) if i in ours else nan)
        for leg in ours_legs
    }
    e = {
        leg: col(
            lambda i, leg=leg: (
                nan
                if i not in envoy or getattr(envoy[i], f"{leg}_us") is None
                else float(getattr(envoy[i], f"{leg}_us"))
            )
        )
        for leg in WIRE_LEGS
    }
    flags = np.array([int(ours[i]["flags"]) if i in ours else 0 for i in ids], dtype=np.int64)
    return WireComparison(ids, w, o, e, spans=len(rows), wire_unjoined=wire.unjoined,
                          wire_drops=wire.kernel_drops, ours_flags=flags)  # fmt: skip


def wire_case(
    tb: Any,
    tmp: Path,
    tag: str,
    *,
    conns: int = 1,
    period_s: float = 0.005,
    seconds: float = 3.0,
    ids: bool = True,
    alt_delay_ms: int = 0,
    ours_legs: tuple[str, ...] = WIRE_LEGS,
) -> tuple[WireComparison, dict[str, Any]]:
    """One load case with the probe, tcpdump and Envoy's log watching the server sidecar: a
    short warm-up (connection pools, TLS handshakes) not measured, then ``seconds`` of rounds
    from the client pod (see BURST_CLIENT). Returns the comparison and the capture document."""
    from profiler.capture import CaptureConfig, start_capture
    from profiler.testbed.wire import WireCapture

    server = tb.state.server
    host, port = server.ip, tb.state.ports["app"]

    def client(secs: float, prefix: str) -> dict[str, Any]:
        argv = [sys.executable, "-c", BURST_CLIENT, host, str(port), str(conns), str(period_s),
                str(secs), prefix, str(alt_delay_ms)]  # fmt: skip
        r = tb.run_in_client(argv, capture_output=True, text=True, timeout=secs + 60)
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["no output"])[-1]
            raise TestbedError(f"load client failed: {last}")
        out: dict[str, Any] = json.loads(r.stdout)
        return out

    client(0.3, "-")  # warm-up: pools and handshakes
    spans_file = tmp / f"{tag}.csv"
    config = CaptureConfig(
        sidecar_pids=[server.envoy_pid],
        app_pids=[server.app_pid],
        duration_s=None,
        spans_file=spans_file,
    )
    session = start_capture(config)
    cap = WireCapture(server.netns, tmp / f"{tag}.pcap", [port]).start()
    try:
        load = session.during(lambda: client(seconds, f"{tag}" if ids else "-"))
    finally:
        time.sleep(0.1)
        cap.stop()
    doc = session.stop()
    wire = cap.result()
    n = len(wire.requests)
    entries = tb.wait_access_log(0, timeout=0.0)
    deadline = time.monotonic() + 5
    want = {r.request_id for r in wire.requests}
    while sum(e.request_id in want for e in entries) < n and time.monotonic() < deadline:
        time.sleep(0.1)
        entries = tb.wait_access_log(0, timeout=0.0)
    cmp = join_requests(wire, spans_file, entries, ours_legs)
    cmp.sent = int(load["sent"])
    doc["_delayed_ids"] = load["delayed"]
    return cmp, doc


# The load cases: testbed options and load (conns, period between rounds, ids).
WIRE_CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "one connection, 200 req/s": ({}, {"conns": 1, "period_s": 0.005}),
    "bursts, 10 keep-alive connections, no ids": (
        {},
        {"conns": 10, "period_s": 0.02, "ids": False},
    ),
    "mTLS, one connection, 200 req/s": (
        {"mtls": True, "client_sidecar": True},
        {"conns": 1, "period_s": 0.005},
    ),
    "--concurrency 2, bursts of 10": ({"concurrency": 2}, {"conns": 10, "period_s": 0.02}),
}


def wire_table_rows(case: str, cmp: WireComparison) -> list[str]:
    """Markdown rows: per leg, wire / ours / Envoy p50 and p99 (us) over the joined requests."""
    rows = []
    for leg, r in cmp.table().items():
        cells = [f"{r.get(f'{w}_{q}', float('nan')):.0f}" for q in ("p50", "p99")
                 for w in ("wire", "ours", "envoy")]  # fmt: skip
        rows.append(f"| {case} | {leg} | " + " | ".join(cells) + " |")
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m profiler.testbed.accuracy [SECONDS]``: every wire case on a fresh testbed
    (1 ms app), the table of docs/accuracy.md on stdout. Needs root."""
    import secrets
    import tempfile

    from profiler.testbed import Testbed, TestbedConfig

    seconds = float((argv or sys.argv[1:] or ["3"])[0])
    counts: list[str] = []
    print("| load | leg | wire p50 | ours p50 | Envoy p50 | wire p99 | ours p99 | Envoy p99 |")
    print("|---|---|---|---|---|---|---|---|")
    for i, (case, (options, load)) in enumerate(WIRE_CASES.items()):
        with tempfile.TemporaryDirectory(prefix="smp-wire-") as d:
            tmp = Path(d)
            name = f"wire{secrets.token_hex(2)}"
            cfg = TestbedConfig(name=name, state_dir=tmp / "tb", app_delay_s=0.001, **options)
            tb = Testbed.up(cfg)
            try:
                cmp, doc = wire_case(tb, tmp, f"w{i}", seconds=seconds, **load)
            finally:
                tb.down()
        print("\n".join(wire_table_rows(case, cmp)), flush=True)
        n = (f"sent {cmp.sent}, wire {len(cmp.ids)}, with a span {cmp.with_span}, "
             f"probe drops {doc['drops']}, tcpdump drops {cmp.wire_drops}")  # fmt: skip
        counts.append(f"{case}: {n}")
    print("\nCounts: " + "; ".join(counts) + ".")
    return 0


if __name__ == "__main__":
    sys.exit(main())
