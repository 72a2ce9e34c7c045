"""3. Capacity: records per second the pipeline (kernel probe -> ring buffer -> Python engine)
handles with zero drops, and the rate at which drops begin, for several ring-buffer sizes and
three poll timeouts of the engine (``poll(500)`` as the daemon, ``poll(100)`` as a capture, and
``poll(10)``): wait up to that long, less once the ring is half full (the probe wakes the
reader then), then take every record in the ring as one batch.

The workload is ``rr.c``: a server process answering HTTP/1.1 requests over a socketpair as fast
as its client sends them (or at a paced rate), traced in ``app`` mode so that every request is
one ring-buffer record.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import Profile, build_c, poll_during, summary, table

SOURCE = Path(__file__).resolve().parent / "rr.c"
HEADER_BYTES = 8  # a ring-buffer record's header


def _record_bytes(engine: Any) -> int:
    """struct smp_span as loaded (8-byte aligned) plus the record header."""
    size = int(engine._probe.dtype.itemsize)
    return (size + 7) // 8 * 8 + HEADER_BYTES


def build(out_dir: Path) -> Path:
    """Compile rr.c (gcc -O2) into ``out_dir``."""
    return build_c(SOURCE, out_dir)


def _rr(exe: Path, seconds: float, rate: float, engine: Any, mode: str) -> dict[str, Any]:
    """One window of the workload, traced by ``engine`` (None: untraced)."""
    p = subprocess.Popen(
        [str(exe), f"{seconds:g}", f"{rate:g}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdin is not None and p.stdout is not None
    try:
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError("rr did not start")
        if engine is None:
            p.stdin.write("go\n")
            p.stdin.flush()
            out = p.stdout.readline().split()
            return {"requests": int(out[0]), "seconds": int(out[1]) / 1e9}
        engine.add_target(p.pid, "app")
        drops0 = engine.drops()

        def load() -> list[str]:
            assert p.stdin is not None and p.stdout is not None
            p.stdin.write("go\n")
            p.stdin.flush()
            return p.stdout.readline().split()

        out, cpu = poll_during(lambda: engine.poll(int(mode)), load)
        p.wait(timeout=10)
        engine.drain()
        t = engine.targets[p.pid]
        handled = t.requests + t.incomplete
        res = {
            "requests": int(out[0]),
            "seconds": int(out[1]) / 1e9,
            "handled": handled,
            "drops": engine.drops() - drops0,
            "consumer_cpu_s": cpu,
        }
        engine.remove_target(p.pid)
        return res
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()


def run(profile: Profile) -> dict[str, Any]:
    from profiler.capture.engine import Engine

    quick = profile.name == "quick"
    pages_list = [16, 256] if quick else [16, 256, 1024]
    modes = ["500", "100", "10"]  # poll timeouts, ms: the daemon's, a capture's, a short one
    rates = [2000, 10000, 40000] if quick else [1000, 2000, 5000, 10000, 20000, 40000]
    secs = profile.capacity_s
    tmp = Path(tempfile.mkdtemp(prefix="smp-bench-rr-"))
    try:
        exe = build(tmp)
        untraced: list[float] = []
        configs: list[dict[str, Any]] = []
        for pages in pages_list:
            engine = Engine(ringbuf_pages=pages, keep_spans=False)
            try:
                for mode in modes:
                    steps = []
                    for rate in rates:
                        steps.append({"rate": rate, **_rr(exe, secs, rate, engine, mode)})
                        if steps[-1]["drops"]:
                            break
                    # untraced right before traced, as fast as possible: the workload's slowdown
                    bare = _rr(exe, secs, 0, None, "")
                    untraced.append(_rate(bare))
                    top = {"rate": 0, **_rr(exe, secs, 0, engine, mode), "untraced": _rate(bare)}
                    configs.append(
                        {
                            "pages": pages,
                            "mode": mode,
                            "steps": steps,
                            "max": top,
                            "record_bytes": _record_bytes(engine),
                        }
                    )
            finally:
                engine.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _report(profile, untraced, configs)


def _rate(s: dict[str, Any]) -> float:
    return float(s["requests"]) / s["seconds"] if s["seconds"] else 0.0


def _report(
    profile: Profile, untraced: list[float], configs: list[dict[str, Any]]
) -> dict[str, Any]:
    rows, out = [], []
    for c in configs:
        clean = [_rate(s) for s in c["steps"] if not s["drops"]]
        dropped = [s for s in c["steps"] if s["drops"]]
        top = c["max"]
        top_rate = _rate(top)
        handled_rate = top["handled"] / top["seconds"] if top["seconds"] else 0.0
        per_rec_us = top["consumer_cpu_s"] * 1e6 / max(top["handled"], 1)
        if not dropped and not top["drops"]:
            begins = None  # no drops even as fast as the workload goes
        elif dropped:
            begins = _rate(dropped[0])
        else:
            begins = top_rate
        entry = {
            "ringbuf_pages": c["pages"],
            "ring_records": c["pages"] * 4096 // c["record_bytes"],
            "consume": f"poll({c['mode']}): up to {c['mode']} ms (less at half full), "
            "all records as one batch",
            "zero_drop_rate": max(clean) if clean else 0.0,
            "drops_begin_rate": begins,
            "max_offered_rate": top_rate,
            "max_handled_rate": handled_rate,
            "max_drop_fraction": top["drops"] / max(top["requests"], 1),
            "untraced_rate": top["untraced"],
            "traced_vs_untraced": top_rate / top["untraced"] if top["untraced"] else None,
            "consumer_us_per_record": per_rec_us,
            "steps": c["steps"],
        }
        out.append(entry)
        rows.append(
            [
                entry["ringbuf_pages"],
                entry["ring_records"],
                entry["consume"],
                round(entry["zero_drop_rate"]),
                "none" if begins is None else round(begins),
                round(top["untraced"]),
                round(top_rate),
                round(handled_rate),
                f"{100 * entry['max_drop_fraction']:.1f}%",
                round(per_rec_us, 1),
            ]
        )
    best = max((e["zero_drop_rate"] for e in out), default=0.0)
    untraced_s = summary(untraced)
    summ: dict[str, Any] = {
        "workload_untraced_rps": untraced_s,
        "best_zero_drop_rate": best,
        "configs": out,
    }
    return {
        "summary": summ,
        "tables": [
            table(
                f"Pipeline capacity (rr over a socketpair, one record per request, "
                f"{profile.capacity_s:g} s steps; untraced, just before each traced run)",
                [
                    "ring pages",
                    "records held",
                    "consumer",
                    "highest rate with 0 drops",
                    "drops begin at",
                    "as fast as possible: untraced",
                    "traced",
                    "handled",
                    "dropped",
                    "consumer us/record",
                ],
                rows,
            )
        ],
    }
