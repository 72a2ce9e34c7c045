"""The built-in generator's HTTP/2 mode (``protocol="http2"``): h2c with prior knowledge, as
gRPC and h2load speak it, with the ``h2`` package.

``run(spec)`` starts one process (``python -m profiler.loadgen.h2``, inside the spec's
network namespace and cgroup like the HTTP/1.1 workers) that opens ``spec.connections``
connections and runs the load on them:

- closed loop (no rate): up to ``STREAMS`` concurrent streams per connection, each answered
  stream replaced at once (h2load's ``-m``);
- open loop: request ``n`` intended at ``start + n / rate`` on connection ``n % C`` (any
  number of streams in flight); latency counts from the intended time.

Each request carries ``x-request-id: smp-<run id>-<n>``; statuses are counted like the
HTTP/1.1 workers'. The child prints one JSON line (profiler.loadgen.protocols reads it).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import sys
import time
from typing import Any

from profiler.loadgen.protocols import ChildConfig, Tally, child_main, run_child

STREAMS = 8  # concurrent streams per connection in the closed loop


def run(spec: Any) -> Any:
    return run_child(spec, "profiler.loadgen.h2", "http2")


def _connect(cfg: ChildConfig) -> tuple[socket.socket, Any]:
    import h2.config
    import h2.connection

    s = socket.create_connection((cfg.host, cfg.port), timeout=cfg.timeout_s)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setblocking(False)
    h = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    h.initiate_connection()
    s.sendall(h.data_to_send())
    return s, h


def load(cfg: ChildConfig) -> dict[str, Any]:
    import h2.events

    tally = Tally()
    sel = selectors.DefaultSelector()
    conns = []
    for i in range(cfg.connections):
        s, h = _connect(cfg)
        c: dict[str, Any] = {"sock": s, "h2": h, "streams": {}, "i": i}
        sel.register(s, selectors.EVENT_READ, c)
        conns.append(c)
    start = time.monotonic()
    measure_from = start + cfg.warmup_s
    end = measure_from + cfg.duration_s
    n = 0

    def send(c: dict[str, Any], intended: float) -> None:
        nonlocal n
        h = c["h2"]
        sid = h.get_next_available_stream_id()
        headers = [(":method", "GET"), (":path", cfg.path), (":scheme", "http"),
                   (":authority", cfg.host_header), ("x-request-id", f"smp-{cfg.run_id}-{n}"),
                   *cfg.headers.items()]  # fmt: skip
        h.send_headers(sid, headers, end_stream=True)
        c["streams"][sid] = (intended, time.monotonic(), n)
        n += 1
        c["sock"].sendall(h.data_to_send())

    def fill(c: dict[str, Any], now: float) -> None:
        if cfg.rate is None and now < end:
            while len(c["streams"]) < STREAMS:
                send(c, time.monotonic())

    for c in conns:
        fill(c, start)
    status: dict[int, int] = {}
    while True:
        now = time.monotonic()
        if cfg.rate is not None:
            due = start + n / cfg.rate
            while due <= now and due < end:
                send(conns[n % len(conns)], due)
                due = start + n / cfg.rate
            wait = max(0.0, min(due, end) - now)
        else:
            wait = 0.05
        if now >= end and not any(c["streams"] for c in conns):
            break
        if now >= end + cfg.timeout_s:
            for c in conns:
                tally.error("timeout", len(c["streams"]))
            break
        for key, _ in sel.select(min(wait, 0.05)):
            c = key.data
            try:
                data = c["sock"].recv(1 << 16)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                tally.error("reset", len(c["streams"]))
                sel.unregister(c["sock"])
                c["streams"].clear()
                conns.remove(c)
                if not conns:
                    return tally.result(status, n)
                continue
            tally.bytes_received += len(data)
            for ev in c["h2"].receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    code = dict(ev.headers).get(b":status", b"0")
                    status[int(code)] = status.get(int(code), 0) + 1
                elif isinstance(ev, h2.events.DataReceived):
                    c["h2"].acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded | h2.events.StreamReset):
                    got = c["streams"].pop(ev.stream_id, None)
                    if got is None:
                        continue
                    intended, sent, k = got
                    done = time.monotonic()
                    if isinstance(ev, h2.events.StreamReset):
                        tally.error("reset", 1)
                    elif sent >= measure_from and sent < end:
                        tally.record(done - intended, done - sent, f"smp-{cfg.run_id}-{k}")
            with contextlib.suppress(OSError):
                c["sock"].sendall(c["h2"].data_to_send())
            fill(c, time.monotonic())
    return tally.result(status, n)


if __name__ == "__main__":
    sys.exit(child_main(load))


__all__ = ["STREAMS", "load", "run"]
