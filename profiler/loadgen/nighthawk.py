"""Nighthawk JSON (``nighthawk_client --output-format json``).

Quirks (SMP.md): proto JSON, 64-bit integers as strings, durations as strings like
"0.000190007s", percentiles as fractions 0..1 with cumulative counts; one result per worker
plus ``global`` (already merged by Nighthawk: used as is). A non-empty
``sequencer.blocking`` statistic means the run fell back to closed loop.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from profiler.errors import BadInputFile
from profiler.histogram import LatencyHistogram
from profiler.loadgen.common import find_binary, launch_prefix, load_json, run_tool
from profiler.loadgen.result import (
    ERROR_STATUS,
    STANDARD_PERCENTILES,
    LoadResult,
    LoadSpec,
    rate_reached,
)
from profiler.units import pname

MAIN_STATISTIC = "benchmark_http_client.request_to_response"
BLOCKING = "sequencer.blocking"
_ERROR_COUNTERS = {
    "benchmark.pool_overflow": "pool_overflow",
    "benchmark.pool_connection_failure": "connect",
    "upstream_cx_connect_fail": "connect",
    "benchmark.stream_resets": "reset",
    "upstream_rq_timeout": "timeout",
    "upstream_cx_destroy_remote_with_active_rq": "reset",
}


def binary() -> str:
    return find_binary("nighthawk_client", "see envoyproxy/nighthawk")


def command(spec: LoadSpec) -> list[str]:
    cmd = [
        *launch_prefix(spec.netns, spec.cgroup),
        binary(),
        "--output-format",
        "json",
        "--duration",
        str(max(1, round(spec.duration_s))),
        "--connections",
        str(spec.connections),
        "--timeout",
        str(max(1, round(spec.timeout_s))),
    ]
    if spec.rate is not None:
        cmd += ["--rps", str(max(1, round(spec.rate)))]
    for k, v in (spec.extra_headers or {}).items():
        cmd += ["--request-header", f"{k}:{v}"]
    return [*cmd, spec.target]


def run(spec: LoadSpec) -> LoadResult:
    cmd = command(spec)  # CapabilityMissing before anything else
    out = run_tool("nighthawk", cmd, spec.duration_s + spec.timeout_s)
    r = parse(load_json_text(out))
    r.target, r.connections = spec.target, spec.connections
    r.rate_asked = spec.rate
    return r.judge()


def load_json_text(text: str) -> dict[str, Any]:
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadInputFile(f"nighthawk printed no JSON ({e.msg})") from None
    if not isinstance(d, dict):
        raise BadInputFile("nighthawk output is not a JSON object")
    return d


def seconds(value: Any) -> float:
    """A proto JSON duration ("0.000190007s") in seconds."""
    m = re.fullmatch(r"(-?\d+(?:\.\d+)?)s", str(value).strip())
    if m is None:
        raise ValueError(f"not a duration: {value!r}")
    return float(m.group(1))


def _stat(result: dict[str, Any], sid: str) -> dict[str, Any] | None:
    for s in result.get("statistics") or []:
        if s.get("id") == sid:
            return dict(s)
    return None


def _latency_stat(result: dict[str, Any], wanted: str | None) -> tuple[dict[str, Any], str]:
    sid = wanted or MAIN_STATISTIC
    s = _stat(result, sid)
    if s is not None:
        return s, sid
    if wanted is None:  # fall back to the one latency statistic with samples
        for s in result.get("statistics") or []:
            if int(s.get("count", 0)) > 0 and "duration" in str(s.get("percentiles")):
                return dict(s), str(s.get("id"))
    ids = [str(s.get("id")) for s in result.get("statistics") or []]
    raise BadInputFile(f"nighthawk result has no statistic '{sid}' (it has: {', '.join(ids)})")


def histogram(stat: dict[str, Any]) -> LatencyHistogram:
    """Nighthawk's percentile list (cumulative counts) back into a histogram, in us."""
    h = LatencyHistogram()
    seen = 0
    for p in stat.get("percentiles") or []:
        c = int(p["count"])
        if c > seen:
            h.record(round(seconds(p["duration"]) * 1e6), c - seen)
            seen = c
    return h


def _stated(stat: dict[str, Any], h: LatencyHistogram) -> tuple[dict[str, Any], list[str]]:
    """Nighthawk's own figures (ms): min, mean, max and every listed percentile; the standard
    percentiles it does not list are computed from its histogram (named in the second value)."""
    count = int(stat.get("count", 0))
    if not count:
        return {"percentiles_ms": {}, "min_ms": None, "mean_ms": None, "max_ms": None}, []
    pct: dict[float, float] = {}
    for p in stat.get("percentiles") or []:
        frac = float(p["percentile"])
        if 0 < frac < 1 and "duration" in p:  # 0 and 1 are min and max
            pct[round(frac * 100, 6)] = seconds(p["duration"]) * 1000
    computed = []
    for want in STANDARD_PERCENTILES:
        if want not in pct and h.count:
            pct[want] = h.percentile(want) / 1000.0
            computed.append(pname(want))
    return {
        "percentiles_ms": dict(sorted(pct.items())),
        "min_ms": seconds(stat["min"]) * 1000,
        "mean_ms": seconds(stat["mean"]) * 1000,
        "max_ms": seconds(stat["max"]) * 1000,
    }, computed


def parse(source: str | Path | dict[str, Any], statistic: str | None = None) -> LoadResult:
    """The ``global`` result of a Nighthawk JSON output (``statistic``: the latency to use)."""
    data = load_json(source, "nighthawk")
    if not isinstance(data, dict) or not isinstance(data.get("results"), list):
        raise BadInputFile("not nighthawk output: no 'results' list")
    try:
        return _parse(data, statistic)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise BadInputFile(f"malformed nighthawk result: {type(e).__name__}: {e}") from None


def _parse(data: dict[str, Any], statistic: str | None) -> LoadResult:
    results = {str(r.get("name")): r for r in data["results"]}
    workers = [r for n, r in results.items() if n != "global"]
    g = results.get("global") or (workers[0] if len(workers) == 1 else None)
    if g is None:
        raise BadInputFile("nighthawk output has no 'global' result")
    stat, sid = _latency_stat(g, statistic)
    counters = {str(c["name"]): int(c["value"]) for c in g.get("counters") or []}
    status = {
        int(k[-3]) * 100: v
        for k, v in counters.items()
        if re.fullmatch(r"benchmark\.http_[1-5]xx", k) and v
    }
    bad = sum(v for k, v in status.items() if k >= ERROR_STATUS)
    err_hist: LatencyHistogram | None = None
    mixed = 0
    ok = _stat(g, "benchmark_http_client.latency_2xx")
    if bad and statistic is None and ok is not None and not status.get(300):
        # Nighthawk times each status class apart: the successes' own statistic
        stat, sid = ok, "benchmark_http_client.latency_2xx"
        err_hist = LatencyHistogram()
        for cls in ("4xx", "5xx"):
            e = _stat(g, f"benchmark_http_client.latency_{cls}")
            if e is not None:
                err_hist.merge(histogram(e))
    elif bad:
        mixed = bad
    count = int(stat.get("count", 0))
    h = histogram(stat)
    figures, computed = _stated(stat, h)
    errors: dict[str, int] = {}
    for name, kind in _ERROR_COUNTERS.items():
        if counters.get(name):
            errors[kind] = errors.get(kind, 0) + counters[name]
    duration = seconds(g.get("execution_duration") or data["options"].get("duration", "0s"))
    opts = data.get("options") or {}
    rps = opts.get("requests_per_second")
    asked = float(rps) if rps not in (None, 0, "0") else None
    completed = sum(status.values()) if status else count
    achieved = completed / duration if duration > 0 else 0.0
    blocking = _stat(g, BLOCKING)
    closed = blocking is not None and int(blocking.get("count", 0)) > 0
    notes = []
    if sid != MAIN_STATISTIC:
        notes.append(f"latency from statistic '{sid}' ('{MAIN_STATISTIC}' is absent)")
    if closed:
        notes.append("sequencer.blocking is non-empty: Nighthawk fell back to closed loop")
    if status:
        notes.append("Nighthawk counts status classes: 2xx is filed under 200, 5xx under 500")
    if computed:
        notes.append(f"not stated by Nighthawk, computed from its histogram: {', '.join(computed)}")
    start_raw = g.get("execution_start") or data.get("timestamp")
    start = (
        datetime.fromisoformat(str(start_raw).replace("Z", "+00:00")).astimezone(UTC)
        if start_raw
        else datetime.now(UTC)
    )
    v = (data.get("version") or {}).get("version") or {}
    version = (
        f"{v.get('major_number', 0)}.{v.get('minor_number', 0)}.{v.get('patch', 0)}" if v else None
    )
    return LoadResult(
        generator="nighthawk",
        generator_version=version,
        mode="closed-loop" if closed else "open-loop",
        target=str(opts.get("uri", "")),
        connections=int(opts.get("connections", 0)),
        rate_asked=asked,
        rate_achieved=achieved,
        duration_s=duration,
        requests=completed,
        histogram=h,
        status_counts=status,
        errors=errors,
        start_time=start,
        end_time=start + timedelta(seconds=duration),
        bytes_received=counters.get("upstream_cx_rx_bytes_total"),
        target_reached=rate_reached(asked, achieved),
        workers=max(1, len(workers)),
        notes=notes,
        error_histogram=err_hist,
        errors_in_histogram=mixed,
        computed=computed,
        **figures,
    ).judge()
