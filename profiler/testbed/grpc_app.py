"""The app's gRPC port: a real grpcio server (HTTP/2, prior knowledge) with two methods.

No generated code: the methods are registered with a generic handler and carry raw bytes.

- ``/smp.Testbed/Unary``: waits ``delay``, answers one message of ``size`` bytes.
- ``/smp.Testbed/Stream``: server streaming; ``messages`` replies (metadata
  ``x-smp-messages``, default 3), the first after ``delay``, then one every ``delay``.

Metadata ``x-smp-grpc-status: N`` (1..16) makes the call end with that status instead of
OK (after the delay, for error tests). The request's ``x-request-id`` is echoed in the
initial metadata. Calls are counted with the app's others (``Stats.requests``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any, Protocol

SERVICE = "smp.Testbed"
UNARY = f"/{SERVICE}/Unary"
STREAM = f"/{SERVICE}/Stream"
STATUS_KEY = "x-smp-grpc-status"
MESSAGES_KEY = "x-smp-messages"


class _Stats(Protocol):
    requests: int
    bytes_sent: int


def _identity(b: bytes) -> bytes:
    return b


def _meta(context: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in context.invocation_metadata()}


def _status(code: int) -> Any:
    import grpc

    for s in grpc.StatusCode:
        if s.value[0] == code:
            return s
    return grpc.StatusCode.UNKNOWN


class _Handlers:
    def __init__(self, stats: _Stats, delay: float, body: bytes) -> None:
        self.stats, self.delay, self.body = stats, delay, body

    def _begin(self, context: Any) -> tuple[dict[str, str], int]:
        meta = _meta(context)
        self.stats.requests += 1
        if "x-request-id" in meta:
            context.send_initial_metadata((("x-request-id", meta["x-request-id"]),))
        try:
            code = int(meta.get(STATUS_KEY, "0"))
        except ValueError:
            code = 2
        return meta, code if 0 <= code <= 16 else 2

    def unary(self, request: bytes, context: Any) -> bytes:
        _, code = self._begin(context)
        if self.delay > 0:
            time.sleep(self.delay)
        if code:
            context.abort(_status(code), "asked for by x-smp-grpc-status")
        self.stats.bytes_sent += len(self.body)
        return self.body

    def stream(self, request: bytes, context: Any) -> Iterator[bytes]:
        meta, code = self._begin(context)
        try:
            n = max(0, min(int(meta.get(MESSAGES_KEY, "3")), 1000))
        except ValueError:
            n = 3
        for _ in range(n):
            if self.delay > 0:
                time.sleep(self.delay)
            self.stats.bytes_sent += len(self.body)
            yield self.body
        if code:
            context.abort(_status(code), "asked for by x-smp-grpc-status")


def serve(host: str, port: int, stats: _Stats, delay: float, body: bytes) -> tuple[Any, int]:
    """Start the server (its own threads); (server, bound port)."""
    import grpc

    h = _Handlers(stats, delay, body)
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(
                h.unary, request_deserializer=_identity, response_serializer=_identity
            ),
            "Stream": grpc.unary_stream_rpc_method_handler(
                h.stream, request_deserializer=_identity, response_serializer=_identity
            ),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise OSError(f"cannot listen on {host}:{port} (gRPC)")
    server.start()
    return server, bound
