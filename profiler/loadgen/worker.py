"""One process of the built-in load generator: ``python -m profiler.loadgen.worker``.

Protocol on stdin/stdout (one JSON line each way, so a worker runs the same inside a network
namespace under ``ip netns exec``): the parent writes the config; the worker opens its
keep-alive connections and prints ``READY`` (or ``UNREACHABLE <why>``); the parent writes the
start time (epoch seconds); the worker runs its share of the schedule and prints its result.

Open loop: request ``n`` is *intended* at ``start + n / rate`` (or at Poisson arrival times),
whatever the responses do. A request waits in a queue for a free connection and its latency
counts from the intended time, so queueing behind a slow response is measured (no coordinated
omission). The time from the actual send to the response is kept apart (``service``): that is
what a closed-loop tool would report.
"""

from __future__ import annotations

import asyncio
import json
import random
import resource
import selectors
import sys
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from profiler.histogram import LatencyHistogram

ERROR_STATUS = 400  # as profiler.loadgen.result.ERROR_STATUS (kept import-light: a worker)


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.1 as we read it."""


@dataclass
class WorkerConfig:
    host: str
    port: int
    path: str
    host_header: str
    rate: float | None  # this worker's share; None = closed loop (back to back)
    duration_s: float
    warmup_s: float
    connections: int
    timeout_s: float
    headers: dict[str, str]
    poisson: bool
    run_id: str
    index: int  # this worker's number
    workers: int  # how many workers in all (request numbers interleave: k * workers + index)
    keep_ids: int
    seed: int = 0


@dataclass
class Tally:
    latency: array[int] = field(default_factory=lambda: array("q"))
    service: array[int] = field(default_factory=lambda: array("q"))
    error_latency: array[int] = field(default_factory=lambda: array("q"))  # status >= 400
    status: dict[int, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    completed_in_window: int = 0
    sent: int = 0
    bytes_received: int = 0
    ids: list[str] = field(default_factory=list)
    max_lag_s: float = 0.0
    cpu_s: float = 0.0  # this process's CPU time over the run (warm-up included)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def error_kind(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timeout"
    if isinstance(e, ConnectionRefusedError):
        return "connect"
    if isinstance(e, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return "reset"
    if isinstance(e, asyncio.IncompleteReadError | asyncio.LimitOverrunError):
        return "read"
    if isinstance(e, ProtocolError | ValueError):
        return "protocol"
    return "socket"


async def read_response(reader: asyncio.StreamReader) -> tuple[int, int, bool]:
    """Read one HTTP/1.1 response: (status, bytes read, server wants the connection closed)."""
    n = 0
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        n += len(head)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise ProtocolError(f"bad status line {lines[0][:40]!r}")
        status = int(parts[1])
        if 100 <= status < 200:
            continue  # 100 Continue and friends: the real answer follows
        break
    hdr: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            hdr[k.strip().lower()] = v.strip()
    close = hdr.get("connection", "").lower() == "close" or parts[0] == "HTTP/1.0"
    if "chunked" in hdr.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            chunk = await reader.readexactly(size + 2)
            n += len(size_line) + len(chunk)
            if size == 0:
                break
    elif "content-length" in hdr:
        n += len(await reader.readexactly(int(hdr["content-length"])))
    elif status not in (204, 304):
        n += len(await reader.read())  # body runs to the end of the connection
        close = True
    return status, n, close


class Conn:
    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.cfg.host, self.cfg.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def exchange(self, request: bytes) -> tuple[int, int]:
        if self.reader is not None and self.reader.at_eof():
            self.close()  # the server closed this idle keep-alive connection
        reused = self.writer is not None
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(request)
        try:
            status, n, close = await read_response(self.reader)
        except asyncio.IncompleteReadError as e:
            if not reused or e.partial:
                raise
            # closed by the server while idle, before any answer: once more on a new one
            self.close()
            await self.open()
            assert self.reader is not None and self.writer is not None
            self.writer.write(request)
            status, n, close = await read_response(self.reader)
        if close:
            self.close()
        return status, n


class Worker:
    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        self.tally = Tally()
        self.conns = [Conn(cfg) for _ in range(cfg.connections)]
        extra = "".join(f"{k}: {v}\r\n" for k, v in cfg.headers.items())
        self.prefix = f"GET {cfg.path} HTTP/1.1\r\nHost: {cfg.host_header}\r\n{extra}".encode()

    async def connect_all(self) -> str | None:
        """Open the pool before the start; None when at least one connection opened."""
        why = None
        for c in self.conns:
            try:
                await asyncio.wait_for(c.open(), self.cfg.timeout_s)
            except (OSError, TimeoutError) as e:
                why = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        if all(c.writer is None for c in self.conns):
            return why or "no connection"
        return None

    def request_id(self, k: int) -> str:
        return f"smp-{self.cfg.run_id}-{k * self.cfg.workers + self.cfg.index}"

    async def one(self, conn: Conn, k: int, intended: float) -> None:
        """Send request k (intended at loop time ``intended``) and account for it."""
        loop = asyncio.get_running_loop()
        cfg, t = self.cfg, self.tally
        measured = intended >= self.window_start
        rid = self.request_id(k)
        sent = loop.time()
        t.max_lag_s = max(t.max_lag_s, sent - intended)
        left = intended + cfg.timeout_s - sent
        try:
            if left <= 0:
                raise TimeoutError
            t.sent += measured
            req = self.prefix + f"x-request-id: {rid}\r\n\r\n".encode()
            async with asyncio.timeout(left):  # no extra task, unlike wait_for
                status, n = await conn.exchange(req)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ProtocolError, ValueError) as e:
            conn.close()
            if measured:
                t.error(error_kind(e))
            return
        done = loop.time()
        t.bytes_received += n
        if self.window_start <= done < self.window_end:
            t.completed_in_window += 1
        if measured:
            if status >= ERROR_STATUS:  # an error's latency is not the service's
                t.error_latency.append(int((done - intended) * 1e6))
            else:
                t.latency.append(int((done - intended) * 1e6))
                t.service.append(int((done - sent) * 1e6))
            t.status[status] = t.status.get(status, 0) + 1
            if len(t.ids) < cfg.keep_ids:
                t.ids.append(rid)

    async def open_loop(self, start: float) -> None:
        cfg = self.cfg
        assert cfg.rate is not None
        queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()

        async def serve(conn: Conn) -> None:
            while (item := await queue.get()) is not None:
                await self.one(conn, *item)

        tasks = [asyncio.create_task(serve(c)) for c in self.conns]
        loop = asyncio.get_running_loop()
        rng = random.Random(cfg.seed)
        total_rate = cfg.rate * cfg.workers
        k, nxt = 0, start + cfg.index / total_rate
        while nxt < self.window_end:
            now = loop.time()
            while nxt <= now and nxt < self.window_end:
                queue.put_nowait((k, nxt))
                k += 1
                nxt = (
                    nxt + rng.expovariate(cfg.rate)
                    if cfg.poisson
                    else start + (k * cfg.workers + cfg.index) / total_rate
                )
            await asyncio.sleep(max(0.0, min(nxt, self.window_end) - loop.time()))
        for _ in tasks:
            queue.put_nowait(None)
        await asyncio.gather(*tasks)

    async def closed_loop(self) -> None:
        loop = asyncio.get_running_loop()
        counter = iter(range(sys.maxsize))

        async def serve(conn: Conn) -> None:
            while (now := loop.time()) < self.window_end:
                await self.one(conn, next(counter), now)

        await asyncio.gather(*(serve(c) for c in self.conns))

    async def run(self, start_epoch: float) -> None:
        self.cpu0 = _cpu_s()
        loop = asyncio.get_running_loop()
        start = start_epoch - time.time() + loop.time()
        self.window_start = start + self.cfg.warmup_s
        self.window_end = self.window_start + self.cfg.duration_s
        await asyncio.sleep(max(0.0, start - loop.time()))
        if self.cfg.rate is None:
            await self.closed_loop()
        else:
            await self.open_loop(start)
        for c in self.conns:
            c.close()
        self.tally.cpu_s = _cpu_s() - self.cpu0

    def result(self) -> dict[str, Any]:
        t = self.tally
        lat, svc, err = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
        lat.record_many(np.frombuffer(t.latency, dtype=np.int64))
        svc.record_many(np.frombuffer(t.service, dtype=np.int64))
        err.record_many(np.frombuffer(t.error_latency, dtype=np.int64))
        return {
            "latency": lat.to_json(),
            "service": svc.to_json(),
            "error_latency": err.to_json(),
            "status": {str(k): v for k, v in t.status.items()},
            "errors": t.errors,
            "completed_in_window": t.completed_in_window,
            "sent": t.sent,
            "bytes_received": t.bytes_received,
            "ids": t.ids,
            "max_lag_s": t.max_lag_s,
            "cpu_s": t.cpu_s,
        }


async def _main(cfg: WorkerConfig) -> int:
    loop = asyncio.get_running_loop()
    w = Worker(cfg)
    why = await w.connect_all()
    if why is not None:
        print(f"UNREACHABLE {why}", flush=True)
        return 4
    print("READY", flush=True)
    start_line = await loop.run_in_executor(None, sys.stdin.readline)
    if not start_line.strip():
        return 1  # parent went away
    await w.run(float(start_line))
    print(json.dumps(w.result()), flush=True)
    return 0


def new_loop(connections: int) -> asyncio.AbstractEventLoop:
    """An event loop whose timers wake within tens of microseconds.

    epoll and poll take their timeout in whole milliseconds (rounded up), which would make
    every request late by ~0.5 ms on average and count that as latency. select() takes
    microseconds; it is limited to descriptors below 1024, plenty for a worker's pool.
    """
    if connections > 900:
        return asyncio.new_event_loop()
    return asyncio.SelectorEventLoop(selectors.SelectSelector())


def main() -> int:
    cfg = WorkerConfig(**json.loads(sys.stdin.readline()))
    with asyncio.Runner(loop_factory=lambda: new_loop(cfg.connections)) as runner:
        return runner.run(_main(cfg))


if __name__ == "__main__":
    sys.exit(main())
