"""5. Analysis speed: correlating and summarising 1 million synthetic spans in user space.

Half the spans are a sidecar's, half its app's, for the same requests, with realistic legs
(log-normal: request_proxy ~60 us, app ~1 ms, loopback ~80 us, response_proxy ~50 us) and
request ids. They arrive as the ring buffer delivers them: one bytes object per record
(struct smp_span, the probe's own dtype), joined and decoded per batch of 4,096 by numpy, then
through the engine's batch handler (``Engine._on_batch``: legs into histograms, the app/sidecar
join by request id, rows kept as a capture keeps them), then the capture document's summaries
(``leg_stats`` of every leg's histogram). Runs in a child process so that peak memory
(``ru_maxrss``) is its own.
"""

from __future__ import annotations

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

    dtype: Any = None

    def __init__(self, on_batch: Any, **_: Any) -> None:
        self.on_batch = on_batch

    def add_target(self, pid: int, mode: str) -> None:
        pass

    def remove_target(self, pid: int) -> None:
        pass


BATCH = 4096


def _records(dtype: Any, n: int, fields: dict[str, Any], ids: list[bytes]) -> list[bytes]:
    """n records of struct smp_span as the ring buffer hands them over: one bytes each."""
    import numpy as np

    a = np.zeros(n, dtype=dtype)
    for k, v in fields.items():
        a[k] = v
    rid = np.array(ids, dtype="S48")
    a["rid"] = rid.view("S1").reshape(n, 48)
    a["rid_len"] = [len(i) for i in ids]
    raw = a.tobytes()
    size = dtype.itemsize
    return [raw[i * size : (i + 1) * size] for i in range(n)]


def child(n_spans: int) -> dict[str, Any]:
    """Runs in the child: the measurements as a dict."""
    import numpy as np

    from profiler.capture import document
    from profiler.capture import engine as engine_mod
    from profiler.capture.engine import Engine
    from profiler.probes.sidecar import F_MATCH_RID, KIND_PROXY, KIND_SERVER, SidecarProbe

    probe = SidecarProbe(lambda _batch: None, ringbuf_pages=1)  # for its dtype only
    dtype = probe.dtype
    probe.close()
    n_req = n_spans // 2
    d = _synthetic(n_req)
    ids = [f"smp-bench-{i}".encode() for i in range(n_req)]
    common = {"rid_hash": d["hash"], "flags": F_MATCH_RID, "req_bytes": 200, "resp_bytes": 128}
    app = _records(
        dtype,
        n_req,
        {
            **common,
            "kind": KIND_SERVER,
            "tgid": APP,
            "tid": APP + 1,
            "ds_rx_beg": d["app_beg"],
            "ds_tx_end": d["app_end"],
            "ds_fd": 5,
            "us_fd": -1,
        },
        ids,
    )
    side = _records(
        dtype,
        n_req,
        {
            **common,
            "kind": KIND_PROXY,
            "tgid": SIDECAR,
            "tid": SIDECAR + 1,
            "ds_rx_beg": d["start"],
            "us_tx_beg": d["us_tx"] - 5000,
            "us_tx_end": d["us_tx"],
            "us_rx_beg": d["us_rx"],
            "ds_tx_end": d["ds_tx"],
            "ds_fd": 40,
            "us_fd": 41,
        },
        ids,
    )
    real_probe = engine_mod.SidecarProbe
    vars(engine_mod)["SidecarProbe"] = _NoProbe
    try:
        engine = Engine(keep_spans=True, max_spans=n_req)
    finally:  # the stand-in must not outlive this engine (tests run child() in-process)
        vars(engine_mod)["SidecarProbe"] = real_probe
    engine.add_target(SIDECAR, "sidecar")
    engine.add_target(APP, "app")
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    on_batch = engine._on_batch
    for i in range(0, n_req, BATCH):  # app records of a batch first, then the sidecar's
        for raw in (app[i : i + BATCH], side[i : i + BATCH]):
            on_batch(np.frombuffer(b"".join(raw), dtype=dtype))
    ingest = time.perf_counter() - t0
    held = rss_bytes() - rss0  # the rows, histograms and join tables the engine now holds
    t1 = time.perf_counter()
    sidecar = engine.targets[SIDECAR]
    app_t = engine.targets[APP]
    # what a capture does at its end: every leg's summary from its histogram (one rule)
    legs = {name: document.leg_stats(h) for t in (sidecar, app_t) for name, h in t.legs.items()}
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


def _child(n: int) -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    argv = [sys.executable, "-m", "benchmarks.analysis", str(n)]
    p = subprocess.run(argv, capture_output=True, text=True, cwd=root, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"analysis child failed: {p.stderr.strip().splitlines()[-1:]}")
    r: dict[str, Any] = json.loads(p.stdout)
    return r


def run(profile: Profile) -> dict[str, Any]:
    r = _child(profile.analysis_spans)
    rows = [
        ["spans (sidecar + app, same requests)", r["spans"]],
        ["app/sidecar pairs joined by request id", r["joined"]],
        ["ingest: records as bytes -> numpy batches -> Engine._on_batch (s)", r["ingest_s"]],
        ["per span (us)", r["us_per_span"]],
        ["summarise: leg_stats (s)", r["summarise_s"]],
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
    print(json.dumps(child(int(sys.argv[1]))))
