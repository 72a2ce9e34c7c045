"""The app's HTTP/2 cleartext (prior knowledge) port, gRPC-style traffic, with the ``h2`` package.

Same behaviour as the HTTP/1.1 port: ``delay`` per request, ``body`` as the response, the
request's x-request-id echoed, ``/__stats`` not counted; the counters are shared. A request
header ``x-smp-status: NNN`` (100..599) makes the response that status (for tests that count
statuses).
"""

from __future__ import annotations

import asyncio
import json
from typing import Protocol

STATUS_KEY = "x-smp-status"


class _Stats(Protocol):
    requests: int
    connections: int
    bytes_sent: int


class H2cProtocol(asyncio.Protocol):
    def __init__(self, stats: _Stats, delay: float, body: bytes) -> None:
        from h2.config import H2Configuration
        from h2.connection import H2Connection

        self.stats, self.delay, self.body = stats, delay, body
        self.conn = H2Connection(config=H2Configuration(client_side=False, header_encoding="utf-8"))
        self.transport: asyncio.Transport | None = None
        self.headers: dict[int, dict[str, str]] = {}
        self.pending: dict[int, bytes] = {}  # response bytes waiting for flow-control window

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.stats.connections += 1
        self.conn.initiate_connection()
        transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        import h2.events
        import h2.exceptions

        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush()
            if self.transport is not None:
                self.transport.close()
            return
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                self.headers[ev.stream_id] = {str(k): str(v) for k, v in ev.headers or []}
            elif isinstance(ev, h2.events.DataReceived):
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                self._request(ev.stream_id)
            elif isinstance(ev, h2.events.WindowUpdated):
                for sid in list(self.pending):
                    self._send_data(sid)
            elif isinstance(ev, h2.events.StreamReset):
                self.pending.pop(ev.stream_id, None)
        self._flush()

    def _request(self, stream_id: int) -> None:
        headers = self.headers.pop(stream_id, None)
        if headers is None:
            return
        if headers.get(":path") == "/__stats":
            doc = {k: getattr(self.stats, k) for k in ("requests", "connections", "bytes_sent")}
            self._respond(stream_id, headers, (json.dumps(doc) + "\n").encode())
            return
        self.stats.requests += 1
        self.stats.bytes_sent += len(self.body)
        if self.delay > 0:
            loop = asyncio.get_running_loop()
            loop.call_later(self.delay, self._respond, stream_id, headers, self.body)
        else:
            self._respond(stream_id, headers, self.body)

    def _respond(self, stream_id: int, req: dict[str, str], body: bytes) -> None:
        if self.transport is None:
            return
        status = req.get(STATUS_KEY, "200")
        if not (status.isdigit() and 100 <= int(status) <= 599):
            status = "200"
        out: list[tuple[str, str]] = [(":status", status), ("content-length", str(len(body)))]
        if "x-request-id" in req:
            out.append(("x-request-id", req["x-request-id"]))
        try:
            self.conn.send_headers(stream_id, out, end_stream=not body)
            if body:
                self.pending[stream_id] = body
                self._send_data(stream_id)
        except Exception:  # h2 refuses: the stream was reset meanwhile
            self.pending.pop(stream_id, None)
        self._flush()

    def _send_data(self, stream_id: int) -> None:
        """Send as much of the pending body as the flow-control windows allow."""
        body = self.pending.pop(stream_id, b"")
        try:
            while body:
                n = min(len(body), self.conn.max_outbound_frame_size,
                        self.conn.local_flow_control_window(stream_id))  # fmt: skip
                if n <= 0:
                    self.pending[stream_id] = body  # resumed on WindowUpdated
                    return
                self.conn.send_data(stream_id, body[:n], end_stream=n == len(body))
                body = body[n:]
        except Exception:
            self.pending.pop(stream_id, None)

    def _flush(self) -> None:
        if self.transport is not None:
            data = self.conn.data_to_send()
            if data:
                self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
