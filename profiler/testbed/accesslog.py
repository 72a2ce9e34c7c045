"""Envoy's JSON access log (format in envoy.ACCESS_LOG_FORMAT) as typed entries."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from profiler.errors import BadInputFile


@dataclass(frozen=True)
class AccessLogEntry:
    """One request as Envoy saw it; durations in microseconds (None when Envoy had none)."""

    request_id: str | None
    request_proxy_us: int | None  # DS_RX_BEG -> US_TX_END
    upstream_us: int | None  # US_TX_END -> US_RX_BEG
    response_proxy_us: int | None  # US_RX_BEG -> DS_TX_END
    total_us: int | None  # DS_RX_BEG -> DS_TX_END
    response_code: int
    start_time: str
    method: str | None
    path: str | None
    direction: str | None = None
    protocol: str | None = None
    response_flags: str | None = None
    bytes_received: int | None = None
    bytes_sent: int | None = None
    upstream_host: str | None = None
    downstream_remote: str | None = None
    grpc_status: int | None = None  # %GRPC_STATUS_NUMBER% (gRPC calls only)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _int(v: Any) -> int | None:
    if v is None or v == "-" or v == "":
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _str(v: Any) -> str | None:
    return None if v is None or v == "-" or v == "" else str(v)


def parse_line(line: str) -> AccessLogEntry:
    """One JSON line -> entry. ValueError when it is not one of ours."""
    obj = json.loads(line)
    if not isinstance(obj, dict) or "total_us" not in obj:
        raise ValueError("not an smp-profiler Envoy access log line")
    return AccessLogEntry(
        request_id=_str(obj.get("request_id")),
        request_proxy_us=_int(obj.get("request_proxy_us")),
        upstream_us=_int(obj.get("upstream_us")),
        response_proxy_us=_int(obj.get("response_proxy_us")),
        total_us=_int(obj.get("total_us")),
        response_code=_int(obj.get("response_code")) or 0,
        start_time=str(obj.get("start_time") or ""),
        method=_str(obj.get("method")),
        path=_str(obj.get("path")),
        direction=_str(obj.get("direction")),
        protocol=_str(obj.get("protocol")),
        response_flags=_str(obj.get("response_flags")),
        bytes_received=_int(obj.get("bytes_received")),
        bytes_sent=_int(obj.get("bytes_sent")),
        upstream_host=_str(obj.get("upstream_host")),
        downstream_remote=_str(obj.get("downstream_remote")),
        grpc_status=_int(obj.get("grpc_status")),
    )


def read_access_log(path: Path | str) -> list[AccessLogEntry]:
    """Every complete line of the log (a last line still being written is skipped).

    A missing file is an empty log (Envoy had nothing to write); a line that is not JSON
    of this format raises BadInputFile naming the line.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    except OSError as e:
        raise BadInputFile(f"cannot read access log {p}: {e.strerror}") from None
    lines = text.split("\n")
    if lines and lines[-1] != "":
        lines = lines[:-1]  # partial last line, still being flushed
    entries = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entries.append(parse_line(line))
        except ValueError as e:
            raise BadInputFile(f"{p}:{n}: not an Envoy access log line ({e})") from None
    return entries
