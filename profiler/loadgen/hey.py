"""hey (closed loop, optionally throttled): run it with ``-o csv`` and parse either output.

The CSV has one row per successful response (seconds, 4 decimals: 0.1 ms resolution) with
its status code, so the histogram is hey's own samples; failed requests do not appear in it.
The text summary has the error distribution and percentiles but no samples.
"""

from __future__ import annotations

import csv
import io
import math
import re
import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

from profiler.errors import BadInputFile
from profiler.histogram import LatencyHistogram
from profiler.loadgen.common import find_binary, launch_prefix, run_tool
from profiler.loadgen.result import ERROR_STATUS, LoadResult, LoadSpec, percentiles_from_histogram

CSV_HEADER = "response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read"


def binary() -> str:
    return find_binary("hey", "apt-get install hey")


def version() -> str | None:
    """hey has no --version; ask the Debian package when there is one."""
    try:
        p = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "hey"], capture_output=True, text=True
        )
    except OSError:
        return None
    return p.stdout.strip() or None if p.returncode == 0 else None


def command(spec: LoadSpec, duration_s: float, csv_out: bool = True) -> list[str]:
    cmd = [
        *launch_prefix(spec.netns, spec.cgroup),
        binary(),
        "-z",
        f"{duration_s:g}s",
        "-c",
        str(spec.connections),
        "-t",
        str(max(1, math.ceil(spec.timeout_s))),
    ]
    if spec.rate is not None:
        cmd += ["-q", f"{spec.rate / spec.connections:g}"]  # hey's -q is per worker
    if csv_out:
        cmd += ["-o", "csv"]
    for k, v in (spec.extra_headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    return [*cmd, spec.target]


def run(spec: LoadSpec) -> LoadResult:
    if spec.warmup_s > 0:
        run_tool("hey", command(spec, spec.warmup_s), spec.warmup_s + spec.timeout_s)
    start = datetime.now(UTC)
    out = run_tool("hey", command(spec, spec.duration_s), spec.duration_s + spec.timeout_s)
    r = parse(out, duration_s=spec.duration_s)
    r.target, r.connections, r.generator_version = spec.target, spec.connections, version()
    r.rate_asked = spec.rate
    r.start_time, r.end_time = start, start + timedelta(seconds=spec.duration_s)
    return r.judge()


def parse(text: str, duration_s: float | None = None) -> LoadResult:
    """A LoadResult from hey's ``-o csv`` output or its text summary."""
    if text.lstrip().startswith(CSV_HEADER):
        return _from_csv(text, duration_s)
    if "Summary:" in text and "Requests/sec:" in text:
        return _from_summary(text)
    raise BadInputFile("not hey output: neither its CSV header nor its 'Summary:'")


def _result(duration_s: float, requests: int, **kw: Any) -> LoadResult:
    now = datetime.now(UTC)
    achieved = requests / duration_s if duration_s > 0 else 0.0
    return LoadResult(
        generator="hey",
        generator_version=None,
        mode="closed-loop",
        target="",
        connections=0,
        rate_asked=None,
        rate_achieved=achieved,
        duration_s=duration_s,
        requests=requests,
        start_time=now - timedelta(seconds=duration_s),
        end_time=now,
        bytes_received=None,
        target_reached=True,
        **kw,
    )


def _from_csv(text: str, duration_s: float | None) -> LoadResult:
    h, err = LatencyHistogram(), LatencyHistogram()
    status: dict[int, int] = {}
    end = 0.0
    try:
        rows = list(csv.DictReader(io.StringIO(text.strip())))
        for row in rows:
            rt = float(row["response-time"])
            code = int(row["status-code"])
            (err if code >= ERROR_STATUS else h).record(round(rt * 1e6))
            status[code] = status.get(code, 0) + 1
            end = max(end, float(row["offset"]) + rt)
    except (KeyError, ValueError, TypeError) as e:
        raise BadInputFile(f"hey CSV: malformed row ({type(e).__name__}: {e})") from None
    dur = duration_s if duration_s is not None else end
    return _result(
        dur,
        h.count + err.count,
        histogram=h,
        percentiles_ms=percentiles_from_histogram(h),
        min_ms=h.min / 1000 if h.count else None,
        mean_ms=h.mean / 1000 if h.count else None,
        max_ms=h.max / 1000 if h.count else None,
        status_counts=status,
        errors={},
        error_histogram=err,
        notes=[
            "hey CSV: 0.1 ms resolution; requests that got no response (socket errors, "
            "timeouts) are not listed by hey, so not counted"
        ],
    ).judge()


def _secs(text: str, label: str) -> float | None:
    m = re.search(rf"{label}:\s+([\d.]+|NaN) secs", text)
    return float(m.group(1)) if m and m.group(1) != "NaN" else None


def error_kind(message: str) -> str:
    m = message.lower()
    if "timeout" in m or "deadline exceeded" in m:
        return "timeout"
    if "connection refused" in m or "dial tcp" in m:
        return "connect"
    if "reset by peer" in m or "broken pipe" in m:
        return "reset"
    if "eof" in m:
        return "read"
    return "socket"


def _from_summary(text: str) -> LoadResult:
    total = _secs(text, "Total")
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if total is None or rps is None:
        raise BadInputFile("hey summary: no 'Total' or 'Requests/sec' line")
    status = {
        int(c): int(n) for c, n in re.findall(r"^\s+\[(\d{3})\]\s+(\d+) responses", text, re.M)
    }
    errors: dict[str, int] = {}
    part = text.split("Error distribution:", 1)
    if len(part) == 2:
        for n, msg in re.findall(r"^\s+\[(\d+)\]\s+(.+)$", part[1], re.M):
            kind = error_kind(msg)
            errors[kind] = errors.get(kind, 0) + int(n)
    pct = {
        float(p): float(v) * 1000
        for p, v in re.findall(r"^\s+([\d.]+)% in ([\d.]+) secs", text, re.M)
    }
    data = re.search(r"Total data:\s+(\d+) bytes", text)
    requests = sum(status.values())
    ms = {
        k: (None if v is None or not requests else v * 1000)
        for k, v in (
            ("min_ms", _secs(text, "Fastest")),
            ("mean_ms", _secs(text, "Average")),
            ("max_ms", _secs(text, "Slowest")),
        )
    }
    r = _result(
        total,
        requests,
        histogram=None,
        percentiles_ms=pct,
        status_counts=status,
        errors=errors,
        notes=["hey summary: no samples, only its printed percentiles (0.1 ms resolution)"],
        **ms,
    )
    r.bytes_received = int(data.group(1)) if data else None
    r.errors_in_histogram = r.error_responses  # hey's figures time every response alike
    return r.judge()
