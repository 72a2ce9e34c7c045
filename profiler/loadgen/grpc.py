"""The built-in generator's gRPC mode (``protocol="grpc"``), with grpcio.

The target's path is the method (``http://host:port/package.Service/Method``; the testbed
app's ``/smp.Testbed/Unary`` when none); messages are raw bytes (no generated code), so any
method that takes and returns bytes-compatible messages can be loaded. A method whose name
ends in ``Stream`` is called as server-streaming and a call ends with its last message.
One channel per connection; closed loop (no rate): 8 calls in flight per channel; open loop:
call ``n`` intended at ``start + n / rate`` on channel ``n % C``. Every call sends
``x-request-id: smp-<run id>-<n>``; its grpc-status is counted by name (``OK``,
``NOT_FOUND``, ...) in the result's gRPC status counts; SMP calls the client PROTOCOL_GRPC.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

from profiler.loadgen.protocols import ChildConfig, Tally, child_main, run_child

IN_FLIGHT = 8  # calls per channel in the closed loop


def run(spec: Any) -> Any:
    return run_child(spec, "profiler.loadgen.grpc", "grpc")


def load(cfg: ChildConfig) -> dict[str, Any]:
    import grpc

    tally = Tally(keep_ids=cfg.keep_ids)
    lock = threading.Lock()
    status: dict[str, int] = {}
    target = f"{cfg.host}:{cfg.port}"
    # one subchannel each: separate channels with distinct args get separate connections
    channels = [grpc.insecure_channel(target, options=[("smp.channel", i)])
                for i in range(cfg.connections)]  # fmt: skip
    streaming = cfg.path.rsplit("/", 1)[-1].endswith("Stream")
    calls = [
        (ch.unary_stream(cfg.path) if streaming else ch.unary_unary(cfg.path)) for ch in channels
    ]
    for ch in channels:
        grpc.channel_ready_future(ch).result(timeout=cfg.timeout_s)
    start = time.monotonic()
    measure_from = start + cfg.warmup_s
    end = measure_from + cfg.duration_s
    sent = 0
    outstanding = threading.Semaphore(0)
    pending = 0
    done_all = threading.Event()

    def finished(code: Any, intended: float, t_sent: float, k: int, nbytes: int) -> None:
        nonlocal pending
        now = time.monotonic()
        with lock:
            name = code.name if code is not None else "UNKNOWN"
            if measure_from <= t_sent < end:
                status[name] = status.get(name, 0) + 1
                tally.bytes_received += nbytes
                tally.record(now - intended, now - t_sent, f"smp-{cfg.run_id}-{k}")
            pending -= 1
            if pending == 0 and now >= end:
                done_all.set()
        outstanding.release()

    def one(i: int, intended: float) -> None:
        nonlocal sent, pending
        with lock:
            k = sent
            sent += 1
            pending += 1
        meta = (("x-request-id", f"smp-{cfg.run_id}-{k}"), *cfg.headers.items())
        t_sent = time.monotonic()
        if streaming:

            def drain() -> None:
                n, code = 0, None
                try:
                    for m in calls[i](b"", metadata=meta, timeout=cfg.timeout_s):
                        n += len(m)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as e:
                    code = e.code()
                finished(code, intended, t_sent, k, n)

            threading.Thread(target=drain, daemon=True).start()
            return
        fut = calls[i].future(b"", metadata=meta, timeout=cfg.timeout_s)

        def cb(f: Any) -> None:
            try:
                n = len(f.result())
                code = grpc.StatusCode.OK
            except grpc.RpcError as e:
                n, code = 0, e.code()
            finished(code, intended, t_sent, k, n)

        fut.add_done_callback(cb)

    if cfg.rate is None:
        for i in range(cfg.connections):
            for _ in range(IN_FLIGHT):
                one(i, time.monotonic())
        j = 0
        while time.monotonic() < end:
            if outstanding.acquire(timeout=0.05) and time.monotonic() < end:
                one(j % cfg.connections, time.monotonic())
                j += 1
    else:
        n = 0
        while True:
            due = start + n / cfg.rate
            if due >= end:
                break
            time.sleep(max(0.0, due - time.monotonic()))
            one(n % cfg.connections, due)
            n += 1
    with lock:
        if pending == 0:
            done_all.set()
    if not done_all.wait(cfg.timeout_s + 5):
        tally.error("timeout", pending)
    for ch in channels:
        ch.close()
    return tally.result(status, sent)


if __name__ == "__main__":
    sys.exit(child_main(load))
