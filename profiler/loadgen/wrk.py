"""wrk (closed loop): run it with a Lua ``done()`` that prints the exact latency distribution.

wrk keeps every latency at microsecond resolution; ``latency(i)`` in ``done()`` returns the
i-th distinct value and its count, so the histogram here is wrk's own data, not a
re-interpolation of four printed percentiles. Plain ``wrk --latency`` text parses too (then
only the printed percentiles are known).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import tempfile
from datetime import UTC, datetime, timedelta
from typing import Any

from profiler.errors import BadInputFile, UsageError
from profiler.histogram import LatencyHistogram
from profiler.loadgen.common import find_binary, launch_prefix, run_tool
from profiler.loadgen.result import (
    ERROR_STATUS,
    LoadResult,
    LoadSpec,
    percentiles_from_histogram,
    rate_reached,
)

MARKER = "SMP-WRK-JSON "

LUA = r"""
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) codes = {} end
function response(status, headers, body) codes[status] = (codes[status] or 0) + 1 end
function done(summary, latency, requests)
  local e = summary.errors
  local out = {}
  table.insert(out, string.format(
    '{"duration_us":%d,"requests":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d},"min":%d,"max":%d,"mean":%.3f,"latency":[',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.min, latency.max, latency.mean))
  for i = 1, #latency do
    local v, c = latency(i)
    table.insert(out, string.format('%s[%d,%d]', i > 1 and ',' or '', v, c))
  end
  table.insert(out, '],"codes":{')
  local merged, first = {}, true
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("codes")) do merged[k] = (merged[k] or 0) + v end
  end
  for k, v in pairs(merged) do
    table.insert(out, string.format('%s"%d":%d', first and '' or ',', k, v))
    first = false
  end
  table.insert(out, '}}')
  io.write("SMP-WRK-JSON " .. table.concat(out) .. "\n")
end
"""


def binary() -> str:
    return find_binary("wrk", "apt-get install wrk")


def version() -> str | None:
    out = subprocess.run([binary(), "-v"], capture_output=True, text=True).stdout
    m = re.search(r"wrk (\S+)", out)
    return m.group(1) if m else None


def command(spec: LoadSpec, script: str, duration_s: float) -> list[str]:
    if spec.rate is not None:
        raise UsageError(
            "wrk cannot hold a rate (it is closed loop): ask for the maximum rate"
            " or use the builtin generator"
        )
    threads = max(1, min(spec.connections, os.cpu_count() or 1))
    cmd = [
        *launch_prefix(spec.netns, spec.cgroup),
        binary(),
        f"-t{threads}",
        f"-c{spec.connections}",
        f"-d{max(1, math.ceil(duration_s))}s",
        f"--timeout={max(1, math.ceil(spec.timeout_s))}s",
        "--latency",
        "-s",
        script,
    ]
    for k, v in (spec.extra_headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    return [*cmd, spec.target]


def run(spec: LoadSpec) -> LoadResult:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="smp-wrk-") as f:
        f.write(LUA)
        f.flush()
        if spec.warmup_s > 0:
            run_tool("wrk", command(spec, f.name, spec.warmup_s), spec.warmup_s + spec.timeout_s)
        start = datetime.now(UTC)
        out = run_tool(
            "wrk", command(spec, f.name, spec.duration_s), spec.duration_s + spec.timeout_s
        )
    r = parse(out)
    r.target, r.connections, r.generator_version = spec.target, spec.connections, version()
    r.start_time = start
    r.end_time = start + timedelta(seconds=r.duration_s)
    return r


def parse(text: str) -> LoadResult:
    """A LoadResult from wrk's stdout: our Lua JSON line if present, else the text summary."""
    for line in text.splitlines():
        if line.startswith(MARKER):
            try:
                return _from_json(json.loads(line[len(MARKER) :]), text)
            except (ValueError, KeyError, TypeError) as e:
                raise BadInputFile(f"wrk output: malformed {MARKER.strip()} line ({e})") from None
    return _from_text(text)


def _target(text: str) -> str:
    m = re.search(r"Running .* test @ (\S+)", text)
    return m.group(1) if m else ""


def _base(text: str, duration_s: float, requests: int, **kw: Any) -> LoadResult:
    now = datetime.now(UTC)
    m = re.search(r"(\d+) threads and (\d+) connections", text)
    achieved = requests / duration_s if duration_s > 0 else 0.0
    return LoadResult(
        generator="wrk",
        generator_version=None,
        mode="closed-loop",
        target=_target(text),
        connections=int(m.group(2)) if m else 0,
        rate_asked=None,
        rate_achieved=achieved,
        duration_s=duration_s,
        requests=requests,
        start_time=now - timedelta(seconds=duration_s),
        end_time=now,
        target_reached=rate_reached(None, achieved),
        workers=int(m.group(1)) if m else 1,
        **kw,
    )


def _from_json(d: dict[str, Any], text: str) -> LoadResult:
    h = LatencyHistogram()
    for v, c in d["latency"]:
        h.record(int(v), int(c))
    e = {k: int(v) for k, v in d["errors"].items()}
    codes = {int(k): int(v) for k, v in d["codes"].items()}
    errors = {k: v for k, v in e.items() if v and k != "status"}
    bad = sum(n for c, n in codes.items() if c >= ERROR_STATUS)
    return _base(
        text,
        d["duration_us"] / 1e6,
        int(d["requests"]),
        histogram=h,
        percentiles_ms=percentiles_from_histogram(h),
        min_ms=d["min"] / 1000 if h.count else None,
        mean_ms=d["mean"] / 1000 if h.count else None,
        max_ms=d["max"] / 1000 if h.count else None,
        status_counts=codes,
        errors=errors,
        bytes_received=int(d["bytes"]),
        notes=[
            "wrk adds synthetic samples for responses slower than its mean interval"
            " (stats_correct), so the histogram may count more than the requests"
        ]
        if h.count > int(d["requests"])
        else [],
        errors_in_histogram=bad,  # wrk times every response alike
    ).judge()


_UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}
_SIZE = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNIT_MS[unit]


def _from_text(text: str) -> LoadResult:
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m), ([\d.]+)([KMGT]?B) read", text)
    if m is None:
        raise BadInputFile("not wrk output: no 'N requests in T, X read' line")
    requests = int(m.group(1))
    duration_s = _ms(m.group(2), m.group(3)) / 1000
    pct = {
        float(p): _ms(v, u)
        for p, v, u in re.findall(r"^\s+([\d.]+)%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    }
    lat = re.search(r"Latency\s+([\d.]+)(us|ms|s|m)\s+\S+\s+([\d.]+)(us|ms|s|m)", text)
    errors: dict[str, int] = {}
    se = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if se:
        for kind, n in zip(("connect", "read", "write", "timeout"), se.groups(), strict=True):
            if int(n):
                errors[kind] = int(n)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    notes = ["wrk text output: status codes and the histogram are not known"]
    bad = int(non2xx.group(1)) if non2xx else 0
    return _base(
        text,
        duration_s,
        requests,
        histogram=None,
        percentiles_ms=pct,
        min_ms=None,
        mean_ms=_ms(lat.group(1), lat.group(2)) if lat else None,
        max_ms=_ms(lat.group(3), lat.group(4)) if lat else None,
        status_counts={},
        errors=errors,
        bytes_received=int(float(m.group(4)) * _SIZE[m.group(5)]),
        notes=notes,
        error_responses_uncoded=bad,
        errors_in_histogram=bad,
    ).judge()
