"""The capture document (capture.json) and its per-request spans file.

The document is the contract ``report``, ``run`` and the SMP mapping build on; see
docs/capture.md. Milliseconds wherever a key ends in ``_ms``.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from profiler.errors import BadInputFile
from profiler.histogram import LatencyHistogram
from profiler.legs import INSTANTS, MAIN, SPLIT, proxy_instants, proxy_legs_ns
from profiler.probes.sidecar import request_ids
from profiler.units import PERCENTILES, pkey

KIND = "smp-profiler.capture"
FORMAT_VERSION = 1
_PROXY_COLUMNS = (*MAIN, *SPLIT["request_proxy"], *SPLIT["response_proxy"])
SPAN_COLUMNS = (
    "role",
    "pid",
    "tid",
    "request_id",
    *(f"{i}_ns" for i in INSTANTS),
    *(f"{leg}_us" for leg in _PROXY_COLUMNS),
    "app_us",
    "flags",
    "ds_fd",
    "us_fd",
    "status",  # HTTP/1.1: the response's status code; 0 unknown (HTTP/2, TLS downstream)
)


UNPARSED_WARN_SHARE = 0.05  # unparsed bytes above this share of a target's socket bytes warn


def unparsed_doc(
    stats: Mapping[str, int], conns: Iterable[tuple[int, str, int, int]], conns_seen: int
) -> dict[str, Any]:
    """Bytes on the target's connections that no span explains (a protocol the probe does
    not parse, HTTP/2 frames it lost its place in, local replies): never silent. ``share``
    is of all its socket bytes; ``connections`` lists the largest, per connection."""
    total = int(stats.get("rx_bytes", 0)) + int(stats.get("tx_bytes", 0))
    unparsed = int(stats.get("unparsed_bytes", 0))
    return {
        "bytes": unparsed,
        "share": round(unparsed / total, 6) if total else 0.0,
        "connections_total": max(int(stats.get("unparsed_conns", 0)), conns_seen),
        "connections": [
            {"fd": fd, "role": role, "bytes_rx": rx, "bytes_tx": tx} for fd, role, rx, tx in conns
        ],
        "unattributed_calls": int(stats.get("unattributed", 0)),
        "http2_desyncs": int(stats.get("h2_desyncs", 0)),
        "http2_resets": int(stats.get("h2_resets", 0)),
        "http2_blocks_lost": int(stats.get("h2_blocks_lost", 0)),
        "statuses_lost": int(stats.get("statuses_lost", 0)),
        "stale_answers": int(stats.get("stale_answers", 0)),
    }


def stream_times(rows: list[np.ndarray], h2_flag: int) -> dict[str, Any]:
    """HTTP/2 downstream streams (gRPC calls): from the request's first bytes read to the
    first DATA frame of the response written (a gRPC reply's first message) and to the end
    of the stream, in ms (count, p50, p90, p99); the streams are the spans kept."""
    out: dict[str, Any] = {}
    s = np.concatenate(rows) if rows else None
    if s is None or not len(s):
        return out
    s = s[(s["flags"] & h2_flag) != 0]
    beg = s["ds_rx_beg"].astype(np.int64)
    for name, end in (("first_data", s["ds_tx_data"]), ("end_of_stream", s["ds_tx_end"])):
        e = end.astype(np.int64)
        ok = (e > 0) & (e >= beg)
        ms = (e[ok] - beg[ok]) / 1e6
        if len(ms):
            p50, p90, p99 = np.percentile(ms, [50, 90, 99]).tolist()
            out[name] = {"count": len(ms), "p50_ms": round(p50, 6), "p90_ms": round(p90, 6),
                         "p99_ms": round(p99, 6)}  # fmt: skip
    return out


def warnings(*groups: Iterable[Mapping[str, Any]]) -> list[str]:
    """One line per target whose unparsed bytes exceed UNPARSED_WARN_SHARE of its traffic."""
    out = []
    for entries in groups:
        for e in entries:
            u = e.get("unparsed") or {}
            share = float(u.get("share") or 0.0)
            if share > UNPARSED_WARN_SHARE:
                out.append(
                    f"pid {e.get('pid')} ({e.get('comm') or '?'}): {u.get('bytes', 0)} bytes "
                    f"({100 * share:.0f}% of its socket bytes) on "
                    f"{u.get('connections_total', 0)} connection(s) were not parsed as "
                    f"HTTP/1.1 or HTTP/2: their requests are not in the "
                    f"{e.get('requests', 0)} counted"
                )
            lost = int(u.get("statuses_lost") or 0)
            if lost:
                out.append(
                    f"pid {e.get('pid')} ({e.get('comm') or '?'}): {lost} responses' status "
                    "codes were not counted (the probe's status table was full): its statuses "
                    "are short of its responses"
                )
            req = int(e.get("requests") or 0)
            unstamped = e.get("write_stamp_missing") or {}
            late = max((int(n) for n in unstamped.values()), default=0)
            if req and late > UNPARSED_WARN_SHARE * req:
                out.append(
                    f"pid {e.get('pid')} ({e.get('comm') or '?'}): of {req} requests, "
                    + ", ".join(f"{int(n)} {leg}" for leg, n in unstamped.items() if n)
                    + " legs end at their write call, not at its first packet (TCP held the "
                    "bytes back, the thread changed CPU, or no write-stamp hook)"
                )
            bad, good = int(e.get("incomplete_spans") or 0), req
            if bad > UNPARSED_WARN_SHARE * (bad + good):
                out.append(
                    f"pid {e.get('pid')} ({e.get('comm') or '?'}): {bad} of {bad + good} "
                    "spans were incomplete (instants out of order) and are not counted: "
                    "e.g. HTTP/2 inside TLS on the downstream side cannot be followed per "
                    "stream"
                )
    return out


def leg_stats(hist: LatencyHistogram) -> dict[str, Any]:
    """count/min/mean/percentiles in ms, by the one rule every result uses: percentiles from
    the histogram (bucket midpoints, as bundles and the cluster report read them), min, mean
    and max exact (the histogram keeps them); the histogram goes along for merging."""
    out: dict[str, Any] = {"count": int(hist.count)}
    if hist.count:
        ps = hist.percentiles(list(PERCENTILES))
        stats: tuple[float | None, ...] = (hist.min, hist.mean, *ps.values(), hist.max)
    else:
        stats = (None,) * (3 + len(PERCENTILES))
    keys = ("min_ms", "mean_ms", *(f"{pkey(p)}_ms" for p in PERCENTILES), "max_ms")
    for key, value in zip(keys, stats, strict=True):
        out[key] = None if value is None else round(float(value) / 1000.0, 6)
    out["histogram"] = hist.to_json()
    return out


def write_spans(path: Path, chunks: Iterable[tuple[str, np.ndarray]]) -> int:
    """One CSV row per request (role, ids, instants in ns, legs in us; see SPAN_COLUMNS).
    An unknown arrival stamp is written as its read's instant (queue 0), as the legs count
    it; the capture document counts them (``arrival_missing``).

    Formatted a batch at a time by one ``%`` over the whole batch (C, no per-row Python):
    the capture writes up to a million rows when it stops. Legs are ns / 1000 to three
    decimals (exact); ids are made of id characters only (``request_ids``), so nothing
    needs CSV quoting."""
    n = 0
    with path.open("w", newline="") as f:
        f.write(",".join(SPAN_COLUMNS) + "\r\n")
        for role, s in chunks:
            if not len(s):
                continue
            f.write(_span_rows(role, s))
            n += len(s)
    return n


def _span_rows(role: str, s: np.ndarray) -> str:
    """``s``'s rows of the spans file, CSV text (csv.writer's dialect: CRLF line ends)."""
    _, at = proxy_instants(s)
    ints = [s["tgid"].astype(np.int64), s["tid"].astype(np.int64)]
    if role == "sidecar":
        legs_ns = proxy_legs_ns(at)
        instants = [at[i] for i in INSTANTS]
        legs = [legs_ns[k] / 1e3 for k in _PROXY_COLUMNS]
        fmt = ["%d"] * len(INSTANTS) + ["%.3f"] * len(_PROXY_COLUMNS) + [""]
    else:
        instants = [at["ds_rx_beg"], at["ds_tx_end"]]
        legs = [(at["ds_tx_end"] - at["ds_rx_beg"]) / 1e3]
        fmt = ["%d" if k in ("ds_rx_beg", "ds_tx_end") else "" for k in INSTANTS]
        fmt += [""] * len(_PROXY_COLUMNS) + ["%.3f"]
    tail = [s[k].astype(np.int64) for k in ("flags", "ds_fd", "us_fd", "status")]
    row = ",".join([role.replace("%", "%%"), "%d", "%d", "%s", *fmt, "%d", "%d", "%d", "%d"])
    columns: list[Any] = [*ints, request_ids(s), *instants, *legs, *tail]
    values = [c.tolist() if isinstance(c, np.ndarray) else c for c in columns]
    flat = tuple(itertools.chain.from_iterable(zip(*values, strict=True)))
    return ((row + "\r\n") * len(s)) % flat


def read_spans(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def load(path: Path) -> dict[str, Any]:
    """Read a capture file; anything else is one clear BadInputFile line."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInputFile(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadInputFile(f"{path}: cannot read: {e}") from None
    except json.JSONDecodeError as e:
        raise BadInputFile(f"{path}: not JSON (truncated?): {e.msg} at line {e.lineno}") from None
    if not is_capture(doc):
        raise BadInputFile(f"{path}: not an smp-profiler capture")
    return dict(doc)


def is_capture(doc: object) -> bool:
    return (
        isinstance(doc, Mapping)
        and doc.get("kind") == KIND
        and isinstance(doc.get("sidecars"), list)
    )
