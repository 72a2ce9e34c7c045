"""5. Analysis speed: correlating and summarising 1 million synthetic spans in user space.

Half the spans are a sidecar's, half its app's, for the same requests, with realistic legs
(log-normal: request_proxy ~60 us, app ~1 ms, loopback ~80 us, response_proxy ~50 us) and
request ids. They go through the engine's own span handler (``Engine._on_span``: legs into
histograms, the app/sidecar join by request id, rows kept as a capture keeps them), then the
capture document's summaries (``proxy_leg_values`` + ``leg_stats``). Runs in a child process
so that peak memory (``ru_maxrss``) is its own; building the Span objects is part of the
ingest time, as decoding them is in a capture.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Profile, rss_bytes, table

SIDECAR, APP = 1001, 1002


def _synthetic(n_req: int, seed: int = 8) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)

    def lognormal(median_us: float, sigma: float) -> Any:
        return (rng.lognormal(np.log(median_us * 1000), sigma, n_req)).astype(np.int64)

    start = np.cumsum(rng.exponential(200_000, n_req).astype(np.int64)) + 10**12
    rp, app = lognormal(60, 0.5), lognormal(1000, 0.3)
    loop, resp = lognormal(80, 0.4), lognormal(50, 0.5)
    us_tx = start + rp
    app_beg = us_tx + loop // 2
    app_end = app_beg + app
    us_rx = app_end + loop - loop // 2
    ds_tx = us_rx + resp
    hashes = rng.integers(1, 2**63, n_req, dtype=np.int64)
    return {
        "start": start,
        "us_tx": us_tx,
        "us_rx": us_rx,
        "ds_tx": ds_tx,
        "app_beg": app_beg,
        "app_end": app_end,
        "hash": hashes,
    }


class _NoProbe:
    """Stands in for the kernel side: the engine's real code, fed by this benchmark."""

    def __init__(self, on_span: Any, **_: Any) -> None:
        self.on_span = on_span

    def add_target(self, pid: int, mode: str) -> None:
        pass

    def remove_target(self, pid: int) -> None:
        pass


def _scalar_record(self: Any, us: int, count: int = 1) -> None:
    """What-if: LatencyHistogram.record with the bucket index computed in pure Python
    (bit_length) instead of numpy on a 0-d array; same buckets (checked by the unit test)."""
    us, count = int(us), int(count)
    if us < 0 or count < 0:
        raise ValueError("negative latency or count")
    if count == 0:
        return
    self._counts[scalar_bucket_index(us)] += count
    self._note(us, us, us * count, count)


def scalar_bucket_index(us: int) -> int:
    from profiler.histogram import _EXACT, _SUB, MAX_TRACKABLE_US, SUB_BITS

    v = min(us, MAX_TRACKABLE_US)
    if v < _EXACT:
        return v
    e = v.bit_length() - (SUB_BITS + 1)
    return _EXACT + (e - 1) * _SUB + ((v >> e) - _SUB)


def child(n_spans: int, what_if: bool = False) -> dict[str, Any]:
    """Runs in the child: the measurements as a dict. ``what_if``: with the scalar record."""
    if what_if:
        from profiler.histogram import LatencyHistogram

        LatencyHistogram.record = _scalar_record  # type: ignore[method-assign]
    from profiler.capture import document
    from profiler.capture import engine as engine_mod
    from profiler.capture.engine import Engine
    from profiler.probes.sidecar import F_MATCH_RID, KIND_PROXY, KIND_SERVER, Span

    n_req = n_spans // 2
    d = _synthetic(n_req)
    cols = {k: v.tolist() for k, v in d.items()}
    vars(engine_mod)["SidecarProbe"] = _NoProbe
    engine = Engine(aggregate=True, keep_spans=True, max_spans=n_req)
    engine.add_target(SIDECAR, "sidecar")
    engine.add_target(APP, "app")
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    start, us_tx, us_rx, ds_tx = cols["start"], cols["us_tx"], cols["us_rx"], cols["ds_tx"]
    app_beg, app_end, hashes = cols["app_beg"], cols["app_end"], cols["hash"]
    on_span = engine._on_span
    # every field by name, zero for any this test does not set (the struct may grow)
    zero = {f.name: 0 for f in dataclasses.fields(Span)}
    for i in range(n_req):
        rid = f"smp-bench-{i}"
        h = hashes[i]
        on_span(
            Span(
                **{
                    **zero,
                    "kind": KIND_SERVER,
                    "tgid": APP,
                    "tid": APP + 1,
                    "ds_rx_beg": app_beg[i],
                    "ds_tx_end": app_end[i],
                    "rid": rid,
                    "rid_hash": h,
                    "flags": F_MATCH_RID,
                    "ds_fd": 5,
                    "us_fd": -1,
                    "req_bytes": 200,
                    "resp_bytes": 128,
                }
            )
        )
        on_span(
            Span(
                **{
                    **zero,
                    "kind": KIND_PROXY,
                    "tgid": SIDECAR,
                    "tid": SIDECAR + 1,
                    "ds_rx_beg": start[i],
                    "us_tx_beg": us_tx[i] - 5000,
                    "us_tx_end": us_tx[i],
                    "us_rx_beg": us_rx[i],
                    "ds_tx_end": ds_tx[i],
                    "rid": rid,
                    "rid_hash": h,
                    "flags": F_MATCH_RID,
                    "ds_fd": 40,
                    "us_fd": 41,
                    "req_bytes": 200,
                    "resp_bytes": 128,
                }
            )
        )
    ingest = time.perf_counter() - t0
    held = rss_bytes() - rss0  # the rows, histograms and join tables the engine now holds
    t1 = time.perf_counter()
    side = engine.targets[SIDECAR]
    values = document.proxy_leg_values(side.rows)
    legs = {name: document.leg_stats(values.get(name), h) for name, h in side.legs.items()}
    app_t = engine.targets[APP]
    legs.update({name: document.leg_stats(None, h) for name, h in app_t.legs.items()})
    summarise = time.perf_counter() - t1
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "spans": 2 * n_req,
        "requests": n_req,
        "joined": int(app_t.legs["loopback"].count),
        "ingest_s": round(ingest, 3),
        "summarise_s": round(summarise, 3),
        "total_s": round(ingest + summarise, 3),
        "spans_per_s": round(2 * n_req / ingest),
        "us_per_span": round(ingest * 1e6 / (2 * n_req), 2),
        "rss_before_mb": round(rss0 / 2**20, 1),
        "peak_rss_mb": round(peak / 2**20, 1),
        "held_mb": round(held / 2**20, 1),
        "bytes_per_span_kept": round(held / (2 * n_req)),
        "p50_ms": {k: v["p50_ms"] for k, v in legs.items()},
        "p99_ms": {k: v["p99_ms"] for k, v in legs.items()},
    }


def _child(n: int, what_if: bool) -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    argv = [sys.executable, "-m", "benchmarks.analysis", str(n), *(["what-if"] if what_if else [])]
    p = subprocess.run(argv, capture_output=True, text=True, cwd=root, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"analysis child failed: {p.stderr.strip().splitlines()[-1:]}")
    r: dict[str, Any] = json.loads(p.stdout)
    return r


def run(profile: Profile) -> dict[str, Any]:
    r = _child(profile.analysis_spans, False)
    w = _child(profile.analysis_spans, True)
    if w["p50_ms"] != r["p50_ms"] or w["p99_ms"] != r["p99_ms"]:
        raise RuntimeError("the what-if histogram record gave other percentiles")
    r["what_if_scalar_record"] = {k: w[k] for k in ("ingest_s", "us_per_span", "total_s")}
    rows = [
        ["spans (sidecar + app, same requests)", r["spans"]],
        ["app/sidecar pairs joined by request id", r["joined"]],
        ["ingest: build Span + Engine._on_span (s)", r["ingest_s"]],
        ["per span (us)", r["us_per_span"]],
        ["what-if: ingest with a pure-Python histogram bucket index (s)", w["ingest_s"]],
        ["what-if: per span (us)", w["us_per_span"]],
        ["summarise: proxy_leg_values + leg_stats (s)", r["summarise_s"]],
        ["total (s)", r["total_s"]],
        ["RSS before ingest, synthetic input included (MB)", r["rss_before_mb"]],
        ["held by the engine after ingest (MB)", r["held_mb"]],
        ["peak RSS of the process (MB)", r["peak_rss_mb"]],
        ["bytes per span kept", r["bytes_per_span_kept"]],
    ]
    return {
        "summary": r,
        "tables": [table("Analysis speed (one child process, one core)", ["", "value"], rows)],
    }


if __name__ == "__main__":
    print(json.dumps(child(int(sys.argv[1]), what_if=sys.argv[2:] == ["what-if"])))
