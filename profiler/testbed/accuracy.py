"""The probe's legs next to Envoy's own timers for the same requests (matched by request id).

Used by the accuracy test and benchmark: a capture's spans file and the testbed sidecar's
access log in, per-leg medians and p99s of both out. ``first_byte_to_first_byte`` is
request_proxy + upstream, whose two ends are reads for Envoy and for us alike (see
docs/accuracy.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from profiler.capture.document import read_spans
from profiler.testbed.accesslog import AccessLogEntry, read_access_log

LEGS = ("request_proxy", "upstream", "response_proxy")


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
