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
from profiler.loadgen.result import LoadResult, LoadSpec, rate_reached

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


def histogram(h: dict[str, Any]) -> LatencyHistogram:
    """fortio's buckets (seconds) as microseconds, each bucket's count spread evenly over it."""
    out = LatencyHistogram()
    for b in h.get("Data") or []:
        n = int(b["Count"])
        lo, hi = float(b["Start"]) * 1e6, float(b["End"]) * 1e6
        if n <= 0:
            continue
        if n > _SPREAD_MAX:
            out.record(round((lo + hi) / 2), n)
        else:
            out.record_many(np.rint(lo + (np.arange(n) + 0.5) * (hi - lo) / n))
    return out


def _one(d: dict[str, Any], label: str | None) -> LoadResult:
    try:
        dh = d["DurationHistogram"]
        duration_s = int(d["ActualDuration"]) / 1e9
        asked_raw = str(d.get("RequestedQPS", "max")).strip()
        asked = None if asked_raw.lower() in ("max", "0", "-1", "") else float(asked_raw)
        codes = {int(k): int(v) for k, v in (d.get("RetCodes") or {}).items()}
        status = {k: v for k, v in codes.items() if k >= 0}
        errors = {"socket": codes[-1]} if codes.get(-1) else {}
        pct = {
            float(p["Percentile"]): float(p["Value"]) * 1000 for p in dh.get("Percentiles") or []
        }
        count = int(dh["Count"])
        start = _start(d["StartTime"])
        achieved = float(d["ActualQPS"])
        sizes = d.get("Sizes") or {}
        hist = histogram(dh)
        if hist.count != count:
            raise ValueError(f"bucket counts add up to {hist.count}, not Count {count}")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise BadInputFile(f"malformed fortio result: {type(e).__name__}: {e}") from None
    notes = ["fortio: closed loop; histogram rebuilt from its buckets (linear within each)"]
    if label:
        notes.append(f"Meshery result '{label}'")
    if errors:
        notes.append(f"{errors['socket']} socket errors (RetCodes -1) are in the histogram")

    def ms(key: str) -> float | None:
        return float(dh[key]) * 1000 if count else None

    return LoadResult(
        generator="fortio",
        generator_version=str(d.get("Version")) if d.get("Version") else None,
        mode="closed-loop",
        target=str(d.get("URL", "")),
        connections=int(d.get("NumThreads", 0)),
        rate_asked=asked,
        rate_achieved=achieved,
        duration_s=duration_s,
        requests=sum(status.values()),
        histogram=hist,
        percentiles_ms=pct,
        min_ms=ms("Min"),
        mean_ms=ms("Avg"),
        max_ms=ms("Max"),
        status_counts=status,
        errors=errors,
        start_time=start,
        end_time=start + timedelta(seconds=duration_s),
        bytes_received=int(sizes["Sum"]) if "Sum" in sizes else None,
        target_reached=rate_reached(asked, achieved),
        workers=int(d.get("NumThreads", 1)),
        notes=notes,
    )
