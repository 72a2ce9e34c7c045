"""The ``details`` extension: per step, everything SMP has no field for.

Per rate step (repetitions merged): the mesh and baseline load summaries from merged
histograms, bootstrap intervals, the A/B deltas with intervals and a Mann-Whitney test, the
sidecar legs and costs from the captures (CPU-ms per 1,000 requests, cores per 1,000 req/s,
memory, drops), the eBPF vs A/B comparison and the spread of the repetitions.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

from profiler import meshmark, stats
from profiler.errors import BadInputFile
from profiler.histogram import LatencyHistogram
from profiler.legs import MAIN, SPLIT
from profiler.loadgen.result import LoadResult
from profiler.model import RunBundle, StepRecord

PS = (50.0, 90.0, 95.0, 99.0, 99.9)
N_BOOT = 1000
LEVEL = 0.95
AGREE_TOLERANCE_MS = 0.1  # eBPF and A/B medians may differ this much and still "agree"
LEGS = (*MAIN, *SPLIT["request_proxy"], *SPLIT["response_proxy"], "sidecar_total")


def pkey(p: float) -> str:
    """50 -> "p50", 99.9 -> "p999" (the capture's spelling)."""
    return "p" + f"{p:g}".replace(".", "")


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


def arrays(h: LatencyHistogram) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Bucket values (the midpoints the histogram reports percentiles at) and counts, in us."""
    return h.midpoints() if hasattr(h, "midpoints") else h.buckets()


def merge_histograms(hs: Iterable[LatencyHistogram | None]) -> LatencyHistogram | None:
    """One histogram of all; None when any is missing (percentiles can't be merged)."""
    out = LatencyHistogram()
    for h in hs:
        if h is None:
            return None
        out.merge(h)
    return out if out.count else None


def _latency_ms(loads: list[LoadResult], merged: LatencyHistogram | None) -> dict[str, Any]:
    if merged is not None:
        s = stats.summarize(*arrays(merged), PS)
        out: dict[str, Any] = {pkey(p) + "_ms": _r(v / 1000.0) for p, v in s.percentiles.items()}
        out.update(
            min_ms=_r(merged.min / 1000.0),
            mean_ms=_r(merged.mean / 1000.0),
            max_ms=_r(merged.max / 1000.0),
            merged_from="histograms",
        )
        return out
    # No histogram (a generator that reports percentiles only): the repetition with the
    # median p50 is reported as it is, never an average of percentiles.
    ranked = sorted(loads, key=lambda r: r.percentiles_ms.get(50.0, float("inf")))
    pick = ranked[len(ranked) // 2]
    out = {pkey(p) + "_ms": _r(v) for p, v in sorted(pick.percentiles_ms.items())}
    out.update(
        min_ms=_r(pick.min_ms),
        mean_ms=_r(pick.mean_ms),
        max_ms=_r(pick.max_ms),
        merged_from="median repetition (no histogram to merge)",
    )
    return out


def _sum_dicts(ds: Iterable[dict[Any, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in ds:
        for k, v in d.items():
            out[str(k)] = out.get(str(k), 0) + int(v)
    return dict(sorted(out.items()))


def load_summary(recs: list[StepRecord]) -> dict[str, Any]:
    loads = [r.load for r in recs]
    merged = merge_histograms(r.histogram for r in loads)
    duration = sum(r.duration_s for r in loads)
    requests = sum(r.requests for r in loads)
    first = loads[0]
    return {
        "generator": first.generator,
        "generator_version": first.generator_version,
        "mode": first.mode,
        "target": first.target,
        "connections": first.connections,
        "rate_asked": first.rate_asked,
        "rate_achieved": _r(requests / duration if duration > 0 else 0.0, 3),
        "target_reached": all(r.target_reached for r in loads),
        "requests": requests,
        "duration_s": _r(duration, 3),
        "latency": _latency_ms(loads, merged),
        "status_counts": _sum_dicts(r.status_counts for r in loads),
        "errors": _sum_dicts(r.errors for r in loads),
        "bytes_received": sum(r.bytes_received or 0 for r in loads),
        "start_time": min(r.start_time for r in loads).isoformat(),
        "end_time": max(r.end_time for r in loads).isoformat(),
    }


def _ci_json(cis: dict[float, stats.Interval], scale: float = 1000.0) -> dict[str, Any]:
    return {pkey(p) + "_ms": [_r(i.low / scale), _r(i.high / scale)] for p, i in cis.items()} | {
        "level": LEVEL
    }


def _num(d: dict[str, Any], key: str) -> float:
    v = d.get(key, 0.0)
    if v is None:
        return 0.0
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise BadInputFile(f"malformed capture: {key} is {v!r}, not a number")
    return float(v)


def _rss(mem: Any) -> float:
    if isinstance(mem, dict):
        return _num(mem, "rss")
    return float(mem) if isinstance(mem, int | float) else 0.0


def sidecar_summary(recs: list[StepRecord]) -> dict[str, Any] | None:
    """Sidecar (and app) costs of one step from its captures; None when none was made."""
    caps = [(r, r.capture) for r in recs if r.capture is not None]
    if not caps:
        return None
    try:
        cpu_s = app_cpu_s = duration = requests_seen = 0.0
        rss = pss = app_rss = 0.0
        cgroup: float | None = None
        drops, complete, rx, tx, pids = 0, True, 0.0, 0.0, set()
        per_rep_mcores: list[float] = []
        legs: dict[str, list[LatencyHistogram]] = {}
        for _, cap in caps:
            d = _num(cap, "duration_s")
            duration += d
            drops += int(_num(cap, "drops"))
            complete = complete and bool(cap.get("complete", False))
            rep_cpu = rep_rss = rep_pss = 0.0
            for sc in cap.get("sidecars", []):
                pids.add(int(sc["pid"]))
                rep_cpu += _num(sc, "cpu_seconds")
                mem = sc.get("mem_mb") or {}
                rep_rss += _rss(mem)
                rep_pss += _num(mem, "pss") if isinstance(mem, dict) else 0.0
                if isinstance(mem, dict) and mem.get("cgroup_current") is not None:
                    cgroup = max(cgroup or 0.0, _num(mem, "cgroup_current"))
                requests_seen += _num(sc, "requests")
                rx += _num(sc, "bytes_rx")
                tx += _num(sc, "bytes_tx")
                for leg, v in (sc.get("legs") or {}).items():
                    if isinstance(v, dict) and v.get("histogram"):
                        legs.setdefault(leg, []).append(LatencyHistogram.from_json(v["histogram"]))
            rep_app_rss = 0.0
            for app in cap.get("apps", []):
                app_cpu_s += _num(app, "cpu_seconds")
                rep_app_rss += _rss(app.get("mem_mb"))
            cpu_s += rep_cpu
            rss, pss, app_rss = max(rss, rep_rss), max(pss, rep_pss), max(app_rss, rep_app_rss)
            per_rep_mcores.append(rep_cpu / d * 1000.0 if d > 0 else 0.0)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise BadInputFile(f"malformed capture: {type(e).__name__}: {e}") from None
    completed = sum(r.load.requests for r, _ in caps)
    rate = completed / duration if duration > 0 else 0.0
    leg_out: dict[str, Any] = {}
    for leg, hs in legs.items():
        merged = merge_histograms(hs)
        if merged is None:
            continue
        s = stats.summarize(*arrays(merged), PS)
        leg_out[leg] = {
            "count": s.count,
            "min_ms": _r(merged.min / 1000),
            "mean_ms": _r(merged.mean / 1000),
            "max_ms": _r(merged.max / 1000),
        } | {pkey(p) + "_ms": _r(v / 1000) for p, v in s.percentiles.items()}
    return {
        "count": len(pids),
        "pids": sorted(pids),
        "windows": len(caps),
        "duration_s": _r(duration, 3),
        "complete": complete,
        "drops": drops,
        "requests_seen": int(requests_seen),
        "requests_completed": completed,
        "cpu_seconds": _r(cpu_s, 6),
        "cpu_mcores": _r(cpu_s / duration * 1000.0 if duration > 0 else 0.0, 2),
        "cpu_ms_per_1k_requests": _r(stats.cpu_ms_per_1k_requests(cpu_s, completed), 3),
        "cores_per_1k_rps": _r(
            stats.cores_per_1k_rps(cpu_s, duration, rate) if duration > 0 else None, 5
        ),
        "mem_mb": {"rss": _r(rss, 2), "pss": _r(pss, 2), "cgroup_current": _r(cgroup, 2)},
        "bytes_rx": int(rx),
        "bytes_tx": int(tx),
        "bytes_per_s": _r((rx + tx) / duration if duration > 0 else 0.0, 1),
        "legs": leg_out,
        "app": {
            "cpu_seconds": _r(app_cpu_s, 6),
            "cpu_mcores": _r(app_cpu_s / duration * 1000.0 if duration > 0 else 0.0, 2),
            "mem_mb": _r(app_rss, 2),
        },
        "per_repetition_cpu_mcores": [_r(x, 2) for x in per_rep_mcores],
    }


def _rep_value(load: LoadResult, p: float) -> float | None:
    if load.histogram is not None and load.histogram.count:
        return load.histogram.percentile(p) / 1000.0
    return load.percentiles_ms.get(p)


def _spread_json(values: list[float | None], reps: list[int]) -> dict[str, Any] | None:
    pairs = [(v, r) for v, r in zip(values, reps, strict=True) if v is not None]
    if not pairs:
        return None
    s = stats.spread([v for v, _ in pairs])
    return {
        "n": s.n,
        "mean": _r(s.mean),
        "std": _r(s.std),
        "min": _r(s.min),
        "max": _r(s.max),
        "cv": _r(s.cv),
        "outlier_repetitions": [pairs[i][1] for i in s.outliers],
    }


def repetition_spread(recs: list[StepRecord]) -> dict[str, Any]:
    reps = [r.repetition for r in recs]
    return {
        "p50_ms": _spread_json([_rep_value(r.load, 50.0) for r in recs], reps),
        "p99_ms": _spread_json([_rep_value(r.load, 99.0) for r in recs], reps),
        "rate_achieved": _spread_json([r.load.rate_achieved for r in recs], reps),
    }


def _overhead(
    mesh: LatencyHistogram, base: LatencyHistogram, rng: np.random.Generator
) -> dict[str, Any]:
    ma, ba = arrays(mesh), arrays(base)
    deltas = stats.bootstrap_deltas(ma, ba, rng, stats.CI_PERCENTILES, N_BOOT, LEVEL)
    pm = stats.percentiles(*ma, stats.CI_PERCENTILES)
    pb = stats.percentiles(*ba, stats.CI_PERCENTILES)
    out: dict[str, Any] = {"method": "mesh minus baseline; independent bootstrap of both"}
    for p, ci in deltas.items():
        o = stats.overhead(pm[p], pb[p])
        out[pkey(p)] = {
            "delta_ms": _r(ci.estimate / 1000),
            "ci_ms": [_r(ci.low / 1000), _r(ci.high / 1000)],
            "relative": _r(o.relative),
        }
    mean = stats.overhead(mesh.mean, base.mean)
    out["mean"] = {"delta_ms": _r(mean.absolute / 1000), "relative": _r(mean.relative)}
    sig = stats.mann_whitney(ma, ba)
    out["significance"] = {
        "test": sig.test,
        "u": sig.statistic,
        "z": _r(sig.z),
        "p_value": sig.p_value,
        "effect": _r(sig.effect),
        "alpha": sig.alpha,
        "significant": sig.significant,
    }
    out["level"] = LEVEL
    return out


def step_details(bundle: RunBundle, step: int, rng: np.random.Generator) -> dict[str, Any]:
    mesh_recs = bundle.records_of(step, "mesh")
    base_recs = bundle.records_of(step, "baseline")
    if not mesh_recs:
        raise BadInputFile(f"run bundle: step {step} has no mesh record")
    mesh_h = merge_histograms(r.load.histogram for r in mesh_recs)
    base_h = merge_histograms(r.load.histogram for r in base_recs) if base_recs else None
    out: dict[str, Any] = {
        "index": step,
        "rate_asked": bundle.config.rates[step],
        "repetitions": len(mesh_recs),
        "mesh": load_summary(mesh_recs),
        "mesh_ci": _ci_json(
            stats.bootstrap_percentiles(*arrays(mesh_h), rng, stats.CI_PERCENTILES, N_BOOT, LEVEL)
        )
        if mesh_h
        else None,
        "baseline": load_summary(base_recs) if base_recs else None,
        "overhead": _overhead(mesh_h, base_h, rng) if mesh_h and base_h else None,
        "sidecar": sidecar_summary(mesh_recs),
        "repetition_spread": {"mesh": repetition_spread(mesh_recs)}
        | ({"baseline": repetition_spread(base_recs)} if base_recs else {}),
    }
    out["ebpf_vs_ab"] = _ebpf_vs_ab(bundle, mesh_recs, out, rng)
    return out


def _ebpf_vs_ab(
    bundle: RunBundle, recs: list[StepRecord], step: dict[str, Any], rng: np.random.Generator
) -> dict[str, Any] | None:
    """The one-run eBPF sidecar median next to the A/B median delta: do they agree?"""

    def merged(leg: str) -> LatencyHistogram | None:
        hs = []
        for r in recs:
            for sc in (r.capture or {}).get("sidecars", []):
                h = ((sc.get("legs") or {}).get(leg) or {}).get("histogram")
                if h and h.get("count"):
                    hs.append(LatencyHistogram.from_json(h))
        return merge_histograms(hs) if hs else None

    sidecar_total = merged("sidecar_total")
    # With the app traced too: sidecar_total + the loopback hop it causes, per request: the
    # one-run counterpart of mesh - baseline. Else the sidecar's own time only.
    added = merged("mesh_added")
    total, basis = (added, "mesh_added") if added is not None else (sidecar_total, "sidecar_total")
    ov = step.get("overhead")
    if total is None or ov is None:
        return None
    ci = stats.bootstrap_percentiles(*arrays(total), rng, (50.0,), N_BOOT, LEVEL)[50.0]
    ab = ov["p50"]
    base = {r.repetition: r.load for r in bundle.records_of(step["index"], "baseline")}
    per_rep = []
    for r in recs:  # paired by repetition: one disturbed window shows up here
        b = base.get(r.repetition)
        m50, b50 = _rep_value(r.load, 50.0), _rep_value(b, 50.0) if b else None
        if m50 is not None and b50 is not None:
            per_rep.append(_r(m50 - b50))
    lo, hi = ci.low / 1000, ci.high / 1000
    overlap = lo <= ab["ci_ms"][1] and ab["ci_ms"][0] <= hi
    close = abs(ci.estimate / 1000 - ab["delta_ms"]) <= AGREE_TOLERANCE_MS
    agree = bool(overlap or close)
    return {
        "ebpf_basis": basis,
        "ebpf_sidecar_total_p50_ms": _r(sidecar_total.percentile(50.0) / 1000)
        if sidecar_total is not None
        else None,
        "ebpf_p50_ms": _r(ci.estimate / 1000),
        "ebpf_ci_ms": [_r(lo), _r(hi)],
        "ab_delta_p50_ms": ab["delta_ms"],
        "ab_ci_ms": ab["ci_ms"],
        "ab_delta_p50_per_repetition_ms": per_rep,
        "tolerance_ms": AGREE_TOLERANCE_MS,
        "agree": agree,
        "why_not": None if agree else _why_not(ci.estimate / 1000, (lo, hi), ab, per_rep),
    }


def _why_not(
    ebpf: float, ebpf_ci: tuple[float, float], ab: dict[str, Any], per_rep: list[float | None]
) -> str:
    """One sentence on a disagreement: its size, and what the repetitions say of the A/B side."""
    gap = ab["delta_ms"] - ebpf
    reps = [r for r in per_rep if r is not None]
    spread = f"; A/B repetitions ranged {min(reps):.3f}..{max(reps):.3f} ms" if reps else ""
    side = "A/B is larger: the mesh costs more than the sidecar's legs hold" if gap > 0 else (
        "eBPF is larger: the baseline run was slower than the mesh run's non-sidecar part"
    )  # fmt: skip
    return (
        f"eBPF {ebpf:.3f} ms [{ebpf_ci[0]:.3f}, {ebpf_ci[1]:.3f}] vs A/B {ab['delta_ms']:.3f} ms "
        f"[{ab['ci_ms'][0]:.3f}, {ab['ci_ms'][1]:.3f}]: {abs(gap):.3f} ms apart ({side}){spread}"
    )


def step_costs(step: dict[str, Any]) -> meshmark.StepCosts:
    """The numbers of a details step that MeshMark scores."""
    lat = step["mesh"]["latency"]
    sc = step.get("sidecar") or {}
    legs = sc.get("legs") or {}
    total = legs.get("sidecar_total")
    ov = step.get("overhead")
    if total:
        s50, s99 = total.get("p50_ms"), total.get("p99_ms")
    elif ov:
        s50, s99 = max(0.0, ov["p50"]["delta_ms"]), max(0.0, ov["p99"]["delta_ms"])
    else:
        s50 = s99 = None
    app = sc.get("app") or {}
    has_app = bool(app.get("cpu_seconds"))
    return meshmark.StepCosts(
        rate=float(step["rate_asked"]),
        sidecar_cpu_s=sc.get("cpu_seconds") if has_app else None,
        app_cpu_s=app.get("cpu_seconds") if has_app else None,
        sidecar_rss_mb=(sc.get("mem_mb") or {}).get("rss") if app.get("mem_mb") else None,
        app_rss_mb=app.get("mem_mb") or None,
        latency_p50_ms=lat.get("p50_ms"),
        latency_p99_ms=lat.get("p99_ms"),
        sidecar_p50_ms=s50,
        sidecar_p99_ms=s99,
    )


def build_details(bundle: RunBundle) -> dict[str, Any]:
    rng = np.random.default_rng(bundle.seed)
    steps = [step_details(bundle, i, rng) for i in range(len(bundle.config.rates))]
    mark = meshmark.compute([step_costs(s) for s in steps])
    first = bundle.records[0].load if bundle.records else None
    return {
        "steps": steps,
        "meshmark": meshmark.to_json(mark),
        "generator": None
        if first is None
        else {"name": first.generator, "version": first.generator_version, "mode": first.mode},
        "bootstrap": {"resamples": N_BOOT, "level": LEVEL, "seed": bundle.seed},
        "notes": list(bundle.notes),
    }
