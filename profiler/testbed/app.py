"""The testbed's app container: a small HTTP/1.1 keep-alive server (asyncio protocols).

``python -m profiler.testbed.app --port 8080 --delay 1ms --size 128``. Every response waits
``--delay`` (a timer, not CPU) and carries ``--size`` bytes and the request's x-request-id.
``GET /__stats`` returns the counters as JSON and is not itself counted. The process's comm is
``smp-app``. ``--h2c-port`` adds an HTTP/2 cleartext port (prior knowledge, as gRPC uses)
with the same behaviour; ``--grpc-port`` a real gRPC server (profiler.testbed.grpc_app);
``--echo-port`` a raw TCP echo (bytes no HTTP parser explains). When listening it prints one
line ``ready <port> [<other ports>...]`` on stdout (the bound ports: 0 picks a free one).

A request header ``x-smp-delay-ms: N`` adds N ms to that request's wait (a known delay in
the upstream leg, for the accuracy tests); ``x-smp-status: NNN`` (200..599, not 204 or 304:
those carry no body) makes the response that status, for tests that count statuses (the
HTTP/2 port has the same header, profiler.testbed.h2c).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import signal
import sys
from collections import deque

_MAX_HEAD = 64 * 1024
_PR_SET_NAME = 15


class Stats:
    def __init__(self) -> None:
        self.requests = 0
        self.connections = 0
        self.bytes_sent = 0


class HttpProtocol(asyncio.Protocol):
    def __init__(self, stats: Stats, delay: float, body: bytes) -> None:
        self.stats, self.delay, self.body = stats, delay, body
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.queue: deque[tuple[float, bytes, bool]] = deque()  # (due, response, close) in order

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.stats.connections += 1

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.transport is not None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > _MAX_HEAD:
                    self._send(_response(431, b"header too large\n", None, True), True)
                return
            head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            headers = {}
            for h in head[1:]:
                k, _, v = h.partition(":")
                headers[k.strip().lower()] = v.strip()
            length = int(headers.get("content-length", "0") or 0)
            if len(self.buf) < end + 4 + length:
                return
            del self.buf[: end + 4 + length]
            self._handle(head[0], headers)

    def _handle(self, request_line: str, headers: dict[str, str]) -> None:
        parts = request_line.split(" ")
        path = parts[1] if len(parts) > 1 else "/"
        version = parts[2] if len(parts) > 2 else "HTTP/1.0"
        conn = headers.get("connection", "").lower()
        close = conn == "close" or (version == "HTTP/1.0" and conn != "keep-alive")
        rid = headers.get("x-request-id")
        if path == "/__stats":
            doc = {
                "requests": self.stats.requests,
                "connections": self.stats.connections,
                "bytes_sent": self.stats.bytes_sent,
            }
            body = (json.dumps(doc) + "\n").encode()
            self._send(_response(200, body, rid, close, "application/json"), close)
            return
        self.stats.requests += 1
        self.stats.bytes_sent += len(self.body)
        resp = _response(_status(headers), self.body, rid, close)
        delay = self.delay + _extra_delay(headers)
        if delay <= 0 and not self.queue:
            self._send(resp, close)
            return
        loop = asyncio.get_running_loop()
        self.queue.append((loop.time() + delay, resp, close))
        loop.call_later(delay, self._release)

    def _release(self) -> None:
        """Send the responses that are due, in request order (a later request with a shorter
        wait waits for the ones before it)."""
        now = asyncio.get_running_loop().time()
        while self.queue and self.queue[0][0] <= now + 1e-6:
            _, resp, close = self.queue.popleft()
            self._send(resp, close)

    def _send(self, resp: bytes, close: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(resp)
        if close:
            self.transport.close()
            self.transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def _extra_delay(headers: dict[str, str]) -> float:
    """The ``x-smp-delay-ms`` header in seconds (0 when absent or not a number 0..10000)."""
    try:
        ms = float(headers.get("x-smp-delay-ms", "0"))
    except ValueError:
        return 0.0
    return ms / 1000.0 if 0 < ms <= 10_000 else 0.0


def _status(headers: dict[str, str]) -> int:
    """The ``x-smp-status`` header's code (200 when absent or not one it can send)."""
    v = headers.get("x-smp-status", "200")
    code = int(v) if v.isdigit() else 200
    return code if 200 <= code <= 599 and code not in (204, 304) else 200


def _response(
    code: int, body: bytes, rid: str | None, close: bool, ctype: str = "text/plain"
) -> bytes:
    reason = {
        200: "OK",
        404: "Not Found",
        431: "Request Header Fields Too Large",
        503: "Service Unavailable",
    }.get(code, "")
    head = [
        f"HTTP/1.1 {code} {reason}",
        f"content-type: {ctype}",
        f"content-length: {len(body)}",
    ]
    if rid is not None:
        head.append(f"x-request-id: {rid}")
    if close:
        head.append("connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


def set_comm(name: str) -> None:
    try:
        libc = ctypes.CDLL(None)
        libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except OSError:
        pass


class EchoProtocol(asyncio.Protocol):
    """Raw TCP: every byte read is written back."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def serve(host: str, port: int, delay: float, size: int, h2c_port: int | None,
                grpc_port: int | None = None, echo_port: int | None = None) -> None:  # fmt: skip
    stats = Stats()
    body = (b"smp-profiler testbed app\n" * (size // 25 + 1))[:size]
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: HttpProtocol(stats, delay, body), host, port, reuse_address=True, backlog=1024
    )
    servers, ports = [server], [server.sockets[0].getsockname()[1]]
    if h2c_port is not None:
        from profiler.testbed.h2c import H2cProtocol

        h2 = await loop.create_server(
            lambda: H2cProtocol(stats, delay, body), host, h2c_port, reuse_address=True
        )
        servers.append(h2)
        ports.append(h2.sockets[0].getsockname()[1])
    grpc_server = None
    if grpc_port is not None:
        from profiler.testbed import grpc_app

        grpc_server, bound = grpc_app.serve(host, grpc_port, stats, delay, body)
        ports.append(bound)
    if echo_port is not None:
        echo = await loop.create_server(EchoProtocol, host, echo_port, reuse_address=True)
        servers.append(echo)
        ports.append(echo.sockets[0].getsockname()[1])
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready " + " ".join(map(str, ports)), flush=True)
    await stop.wait()
    for s in servers:
        s.close()
    if grpc_server is not None:
        grpc_server.stop(0)


def main(argv: list[str] | None = None) -> int:
    from profiler.testbed.config import parse_duration, parse_size

    p = argparse.ArgumentParser(prog="python -m profiler.testbed.app", description=__doc__)
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--delay", default="0", help="service time per request, e.g. 1ms")
    p.add_argument("--size", default="128", help="response body size, e.g. 128, 4k")
    p.add_argument("--h2c-port", type=int, default=None, help="also serve HTTP/2 cleartext here")
    p.add_argument("--grpc-port", type=int, default=None, help="also serve gRPC here")
    p.add_argument("--echo-port", type=int, default=None, help="also echo raw TCP here")
    args = p.parse_args(argv)
    try:
        delay, size = parse_duration(args.delay), parse_size(args.size)
    except Exception as e:
        print(f"smp-app: {e}", file=sys.stderr)
        return 2
    set_comm("smp-app")
    try:
        asyncio.run(serve(args.host, args.port, delay, size, args.h2c_port, args.grpc_port,
                          args.echo_port))  # fmt: skip
    except OSError as e:
        print(f"smp-app: cannot listen on {args.host}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
