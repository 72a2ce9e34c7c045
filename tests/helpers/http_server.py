"""A tiny asyncio HTTP/1.1 keep-alive server for load generator tests (a real socket server).

    python tests/helpers/http_server.py [--host 127.0.0.1] [--port 0] [--stall-after N]
        [--stall-ms 200] [--body-bytes 3]

Prints the port it listens on, then serves until killed. ``--stall-after N`` blocks the
whole server (every connection) once, for ``--stall-ms``, when request N arrives;
``--stall-at-ms T`` does it at the first request T ms after the first request;
``--idle-close-ms T`` closes a keep-alive connection idle for T ms.
Every response echoes the request's ``x-request-id``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--stall-after", type=int, default=0)
    ap.add_argument("--stall-at-ms", type=float, default=0.0)
    ap.add_argument("--stall-ms", type=float, default=200.0)
    ap.add_argument("--body-bytes", type=int, default=3)
    ap.add_argument("--idle-close-ms", type=float, default=0.0)
    a = ap.parse_args()
    body = (b"ok\n" * (a.body_bytes // 3 + 1))[: a.body_bytes]
    seen = 0
    first: float | None = None
    stalled = False

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal seen, first, stalled
        try:
            while True:
                if a.idle_close_ms > 0:
                    try:
                        async with asyncio.timeout(a.idle_close_ms / 1000.0):
                            head = await reader.readuntil(b"\r\n\r\n")
                    except TimeoutError:
                        break  # close an idle keep-alive connection, as servers do
                else:
                    head = await reader.readuntil(b"\r\n\r\n")
                seen += 1
                now = time.monotonic()
                first = now if first is None else first
                due = seen == a.stall_after or (
                    a.stall_at_ms > 0 and now - first >= a.stall_at_ms / 1000.0
                )
                if due and not stalled:
                    stalled = True
                    time.sleep(a.stall_ms / 1000.0)  # stall the whole server, on purpose
                rid = b""
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"x-request-id:"):
                        rid = line.split(b":", 1)[1].strip()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nx-request-id: "
                    + rid
                    + b"\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(handle, a.host, a.port, backlog=1024)
        print(server.sockets[0].getsockname()[1], flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    sys.exit(main())
