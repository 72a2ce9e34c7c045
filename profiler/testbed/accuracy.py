"""The probe's legs next to Envoy's own timers for the same requests (matched by request id).

Used by the accuracy test and benchmark: a capture's spans file and the testbed sidecar's
access log in, per-leg medians and p99s of both out. ``first_byte_to_first_byte`` is
request_proxy + upstream, whose two ends are reads for Envoy and for us alike (see
docs/accuracy.md).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


@dataclass
class Measured:
    comparison: Comparison
    capture: dict[str, Any]  # the capture document of the window
    load: Any  # the LoadResult
    proc_cpu_s: float  # the sidecar's utime + stime over the window, from /proc


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads) in seconds: the kernel's own account."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    tb: Any, rate: float, seconds: float, tag: str, spans_file: Path, connections: int = 8
) -> Measured:
    """Capture the testbed's server sidecar and app while the built-in open-loop generator
    sends ``rate`` req/s for ``seconds`` from the client pod (request ids ``smp-<tag>-<n>``),
    then compare the window's spans with Envoy's access log."""
    from profiler.capture import CaptureConfig, start_capture
    from profiler.loadgen import LoadSpec, run_load

    server = tb.state.server
    session = start_capture(
        CaptureConfig(
            sidecar_pids=[server.envoy_pid],
            app_pids=[server.app_pid],
            duration_s=None,
            spans_file=spans_file,
        )
    )
    spec = LoadSpec(
        "builtin", tb.state.url, rate, seconds, connections, netns=tb.state.client.netns, run_id=tag
    )
    cpu0 = proc_cpu_s(server.envoy_pid)
    result = session.during(lambda: run_load(spec))
    cpu = proc_cpu_s(server.envoy_pid) - cpu0
    doc = session.stop()
    cmp = compare(spans_file, Path(tb.state.access_log), f"smp-{tag}-", result.requests)
    return Measured(cmp, doc, result, cpu)
