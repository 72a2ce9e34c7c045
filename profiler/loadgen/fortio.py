"""fortio JSON (``fortio load -json FILE``), bare or inside Meshery's result wrapper.

Quirks (SMP.md): histogram values are in **seconds**; ``ActualDuration`` is integer
nanoseconds; ``RequestedQPS`` is a string, "max" or a number; ``RetCodes`` maps a status
(string) to a count, ``-1`` meaning a socket error. fortio threads wait for each response
(closed loop), and its default histogram resolution is 1 ms (``-r``).
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from profiler.errors import BadInputFile
from profiler.histogram import LatencyHistogram
from profiler.loadgen.common import find_binary, launch_prefix, load_json, run_tool
from profiler.loadgen.result import (
    ERROR_STATUS,
    GRPC_OK,
    STANDARD_PERCENTILES,
    LoadResult,
    LoadSpec,
    percentiles_from_histogram,
)
from profiler.units import pname

_SPREAD_MAX = 1_000_000  # spread at most this many samples of a bucket; more go at its middle


def binary() -> str:
    return find_binary("fortio", "see https://fortio.org")


def command(spec: LoadSpec, json_path: str) -> list[str]:
    cmd = [
        *launch_prefix(spec.netns, spec.cgroup),
        binary(),
        "load",
        "-json",
        json_path,
        "-qps",
        "0" if spec.rate is None else f"{spec.rate:g}",
        "-c",
        str(spec.connections),
        "-t",
        f"{spec.duration_s:g}s",
        "-timeout",
        f"{spec.timeout_s:g}s",
        "-r",
        "0.00001",  # 10 us buckets instead of the default 1 ms
    ]
    for k, v in (spec.extra_headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    return [*cmd, spec.target]


def run(spec: LoadSpec) -> LoadResult:
    binary()  # CapabilityMissing before anything else
    with tempfile.TemporaryDirectory(prefix="smp-fortio-") as tmp:
        out = str(Path(tmp, "result.json"))
        if spec.warmup_s > 0:
            warm = dataclasses.replace(spec, duration_s=spec.warmup_s)
            run_tool("fortio", command(warm, out), spec.warmup_s + spec.timeout_s)
        run_tool("fortio", command(spec, out), spec.duration_s + spec.timeout_s)
        return parse(out)[0]


def parse(source: str | Path | dict[str, Any] | list[Any]) -> list[LoadResult]:
    """Every fortio run in a fortio JSON file, a list of them, or Meshery's results."""
    data = load_json(source, "fortio")
    runs = list(_runs(data))
    if not runs:
        raise BadInputFile("not fortio output: no object with a 'DurationHistogram'")
    return [_one(d, label) for d, label in runs]


def _runs(data: Any, label: str | None = None) -> Any:
    if isinstance(data, list):
        for item in data:
            yield from _runs(item, label)
    elif isinstance(data, dict):
        if "DurationHistogram" in data:
            yield data, label
        elif "runner_results" in data:  # Meshery's wrapper
            yield from _runs(data["runner_results"], str(data.get("name") or "") or label)
        elif isinstance(data.get("results"), list):  # a Meshery page of results
            yield from _runs(data["results"], label)


def _start(s: str) -> datetime:
    # fortio writes nanoseconds; datetime takes microseconds
    s = re.sub(r"(\.\d{6})\d+", r"\1", s.strip()).replace("Z", "+00:00")
    return datetime.fromisoformat(s).astimezone(UTC)


def histogram(h: dict[str, Any], minus: dict[str, Any] | None = None) -> LatencyHistogram:
    """fortio's buckets (seconds) as microseconds, each bucket's count spread evenly over it;
    ``minus``: a histogram of the same buckets whose counts are taken out (fortio's
    ErrorsDurationHistogram out of its DurationHistogram leaves the successes)."""
    take = {
        (float(b["Start"]), float(b["End"])): int(b["Count"])
        for b in (minus or {}).get("Data") or []
    }
    out = LatencyHistogram()
    for b in h.get("Data") or []:
        start, end = float(b["Start"]), float(b["End"])
        n = int(b["Count"]) - take.pop((start, end), 0)
        lo, hi = start * 1e6, end * 1e6
        if n <= 0:
            continue
        if n > _SPREAD_MAX:
            out.record(round((lo + hi) / 2), n)
        else:
            out.record_many(np.rint(lo + (np.arange(n) + 0.5) * (hi - lo) / n))
    if any(take.values()):
        raise ValueError("ErrorsDurationHistogram has buckets DurationHistogram lacks")
    return out


def _stated(dh: dict[str, Any], hist: LatencyHistogram) -> tuple[dict[str, Any], list[str]]:
    """The statistics fortio printed (ms), and the standard percentiles it did not, computed
    from its buckets (named in the second value)."""
    pct = {float(p["Percentile"]): float(p["Value"]) * 1000 for p in dh.get("Percentiles") or []}
    computed = []
    for p in STANDARD_PERCENTILES:
        if p not in pct and hist.count:
            pct[p] = hist.percentile(p) / 1000.0
            computed.append(pname(p))
    out = {
        "percentiles_ms": dict(sorted(pct.items())),
        "min_ms": float(dh["Min"]) * 1000,
        "mean_ms": float(dh["Avg"]) * 1000,
        "max_ms": float(dh["Max"]) * 1000,
    }
    return out, computed


def _computed(hist: LatencyHistogram) -> tuple[dict[str, Any], list[str]]:
    """Everything from the histogram (what fortio printed describes other samples)."""
    if not hist.count:
        return {"percentiles_ms": {}, "min_ms": None, "mean_ms": None, "max_ms": None}, []
    out = {
        "percentiles_ms": percentiles_from_histogram(hist),
        "min_ms": hist.min / 1000.0,
        "mean_ms": hist.mean / 1000.0,
        "max_ms": hist.max / 1000.0,
    }
    return out, ["min", "mean", "max", *(pname(p) for p in STANDARD_PERCENTILES)]


def _one(d: dict[str, Any], label: str | None) -> LoadResult:
    try:
        dh = d["DurationHistogram"]
        eh = d.get("ErrorsDurationHistogram")
        duration_s = int(d["ActualDuration"]) / 1e9
        asked_raw = str(d.get("RequestedQPS", "max")).strip()
        asked = None if asked_raw.lower() in ("max", "0", "-1", "") else float(asked_raw)
        raw_codes = dict(d.get("RetCodes") or {})
        # HTTP runs key RetCodes by status (-1: socket error); gRPC runs by status name
        grpc = {str(k): int(v) for k, v in raw_codes.items() if not str(k).lstrip("-").isdigit()}
        codes = {int(k): int(v) for k, v in raw_codes.items() if str(k).lstrip("-").isdigit()}
        status = {k: v for k, v in codes.items() if k >= 0}
        errors = {"socket": codes[-1]} if codes.get(-1) else {}
        responses = sum(status.values()) + sum(grpc.values())
        count = int(dh["Count"])
        start = _start(d["StartTime"])
        sizes = d.get("Sizes") or {}
        full = histogram(dh)
        if full.count != count:
            raise ValueError(f"bucket counts add up to {full.count}, not Count {count}")
        calls = sum(codes.values()) + sum(grpc.values()) or count
        # ActualQPS counts every call, socket errors too: the responses' share of it
        achieved = float(d["ActualQPS"]) * responses / calls if calls else 0.0
        failed = errors.get("socket", 0) + sum(n for c, n in status.items() if c >= ERROR_STATUS)
        failed += sum(n for st, n in grpc.items() if st not in GRPC_OK)
        notes = ["fortio: closed loop; histogram rebuilt from its buckets (linear within each)"]
        if label:
            notes.append(f"Meshery result '{label}'")
        err_hist: LatencyHistogram | None = None
        mixed = 0
        if not failed:  # every call a success: fortio's own figures are the successes'
            hist = full
            stats, computed = _stated(dh, hist)
        elif failed >= count:  # every call failed: no success latency at all
            hist, err_hist = LatencyHistogram(), full
            stats, computed = _computed(hist)
            notes.append("every call failed: fortio's latency figures are the errors' own")
        elif eh and int(eh.get("Count", 0)):  # errors apart: the successes' from the buckets
            err_hist = histogram(eh)
            hist = histogram(dh, minus=eh)
            stats, computed = _computed(hist)
            notes.append(
                "fortio's printed figures include the errors: the successes' are computed from "
                "DurationHistogram minus ErrorsDurationHistogram"
            )
        else:  # mixed, and the file cannot tell them apart
            hist = full
            stats, computed = _stated(dh, hist)
            mixed = failed
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise BadInputFile(f"malformed fortio result: {type(e).__name__}: {e}") from None
    if computed:
        notes.append(f"not stated by fortio, computed from its histogram: {', '.join(computed)}")
    return LoadResult(
        generator="fortio",
        generator_version=str(d.get("Version")) if d.get("Version") else None,
        mode="closed-loop",
        target=str(d.get("URL", "")),
        connections=int(d.get("NumThreads", 0)),
        rate_asked=asked,
        rate_achieved=achieved,
        duration_s=duration_s,
        requests=responses,
        histogram=hist,
        status_counts=status,
        errors=errors,
        start_time=start,
        end_time=start + timedelta(seconds=duration_s),
        bytes_received=int(sizes["Sum"]) if "Sum" in sizes else None,
        target_reached=False,
        workers=int(d.get("NumThreads", 1)),
        notes=notes,
        error_histogram=err_hist,
        errors_in_histogram=mixed,
        computed=computed,
        protocol="grpc" if grpc or "grpc" in str(d.get("RunType", "")).lower() else "http",
        grpc_status_counts=grpc,
        **stats,
    ).judge()
