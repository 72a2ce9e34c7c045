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

from profiler import meshmark, stats
from profiler.errors import BadInputFile
from profiler.histogram import LatencyHistogram
from profiler.legs import MAIN, SPLIT
from profiler.loadgen.result import LoadResult
from profiler.model import RunBundle, StepRecord
from profiler.units import PERCENTILES, pkey

PS = PERCENTILES
N_BOOT = 1000
LEVEL = 0.95
AGREE_TOLERANCE_MS = 0.1  # eBPF and A/B medians may differ this much and still "agree"
LEGS = (*MAIN, *SPLIT["request_proxy"], *SPLIT["response_proxy"], "sidecar_total")


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


def merge_histograms(hs: Iterable[LatencyHistogram | None]) -> LatencyHistogram | None:
    """One histogram of all; None when any is missing (percentiles can't be merged)."""
    out = LatencyHistogram()
    for h in hs:
        if h is None:
            return None
        out.merge(h)
    return out if out.count else None


def _latency_ms(loads: list[LoadResult], merged: LatencyHistogram | None) -> dict[str, Any]:
    """The successes' latency of a step. One repetition: the figures its source states (an
    import's Min, Max, Avg and listed percentiles), the rest computed from its histogram and
    named in ``computed``. Several: percentiles of the merged histograms; min, max and the
    (request-weighted) mean exactly from each repetition's own."""
    stated = [r for r in loads if r.successes and r.min_ms is not None]
    if len(loads) == 1 and stated:
        r = loads[0]
        out: dict[str, Any] = {pkey(p) + "_ms": _r(v) for p, v in sorted(r.percentiles_ms.items())}
        computed = [c.replace(".", "") for c in r.computed]
        for p in PS:  # what neither the source nor its percentiles give
            if pkey(p) + "_ms" not in out and merged is not None:
                out[pkey(p) + "_ms"] = _r(merged.percentile(p) / 1000.0)
                computed.append(pkey(p))
        out.update(
            min_ms=_r(r.min_ms),
            mean_ms=_r(r.mean_ms),
            max_ms=_r(r.max_ms),
            merged_from=f"one repetition: the figures {r.generator} states",
            computed=sorted(set(computed)),
        )
        return out
    if merged is not None:
        s = stats.summarize(*merged.midpoints(), PS)
        out = {pkey(p) + "_ms": _r(v / 1000.0) for p, v in s.percentiles.items()}
        n = sum(r.successes for r in stated)
        out.update(
            min_ms=_r(min(r.min_ms for r in stated if r.min_ms is not None))
            if stated
            else _r(merged.min / 1000.0),
            mean_ms=_r(sum((r.mean_ms or 0.0) * r.successes for r in stated) / n)
            if n
            else _r(merged.mean / 1000.0),
            max_ms=_r(max(r.max_ms for r in stated if r.max_ms is not None))
            if stated
            else _r(merged.max / 1000.0),
            merged_from="histograms",
            computed=[],
        )
        return out
    if not any(r.percentiles_ms for r in loads):
        return {"merged_from": "no successful response: no latency", "computed": []}
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
        computed=[],
    )
    return out


def error_summary(loads: list[LoadResult]) -> dict[str, Any]:
    """Errors of a step: the rate, what they were, and the error responses' own latency."""
    attempts = sum(r.attempts for r in loads)
    failed = sum(r.error_responses + r.error_count for r in loads)
    eh = merge_histograms(r.error_histogram for r in loads if r.error_histogram is not None)
    out: dict[str, Any] = {
        "rate": _r(failed / attempts if attempts else 0.0, 6),
        "failed": failed,
        "attempts": attempts,
        "error_responses": sum(r.error_responses for r in loads),
        "no_response": sum(r.error_count for r in loads),
        "in_latency_histogram": sum(r.errors_in_histogram for r in loads),
        "latency": None,
    }
    if eh is not None and eh.count:
        s = stats.summarize(*eh.midpoints(), (50.0, 99.0))
        out["latency"] = {
            "count": eh.count,
            "p50_ms": _r(s.percentiles[50.0] / 1000),
            "p99_ms": _r(s.percentiles[99.0] / 1000),
            "max_ms": _r(eh.max / 1000),
        }
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
    ok = sum(r.success_rate * r.duration_s for r in loads)
    failures = error_summary(loads)
    return {
        "generator": first.generator,
        "generator_version": first.generator_version,
        "mode": first.mode,
        "target": first.target,
        "connections": first.connections,
        "rate_asked": first.rate_asked,
        # successful responses per second (SMP actual_qps); every response: response_rate
        "rate_achieved": _r(ok / duration if duration > 0 else 0.0, 3),
        "response_rate": _r(
            sum(r.rate_achieved * r.duration_s for r in loads) / duration if duration > 0 else 0.0,
            3,
        ),
        "target_reached": all(r.target_reached for r in loads),
        "requests": requests,
        "successes": sum(r.successes for r in loads),
        "error_rate": failures["rate"],
        "failures": failures,
        "duration_s": _r(duration, 3),
        "latency": _latency_ms(loads, merged),
        "status_counts": _sum_dicts(r.status_counts for r in loads),
        "grpc_status_counts": _sum_dicts(r.grpc_status_counts for r in loads),
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
        for r, cap in caps:
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
            w = min(d, r.load.duration_s) if r.load.duration_s > 0 else d
            per_rep_mcores.append(rep_cpu / w * 1000.0 if w > 0 else 0.0)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise BadInputFile(f"malformed capture: {type(e).__name__}: {e}") from None
    completed = sum(r.load.requests for r, _ in caps)
    # The capture starts before the load and stops after it (the generator's start-up and
    # result collection): rates and mcores are over the load's own window, which the capture
    # covers; the sidecar idles in the rest.
    load_window = sum(r.load.duration_s for r, _ in caps)
    window = min(load_window, duration) if load_window > 0 else duration
    rate = completed / window if window > 0 else 0.0
    error = None
    ok = sum(r.load.successes for r, _ in caps)
    if ok == 0:  # every response an error: a proxy may answer them itself (no span)
        pass
    elif requests_seen == 0:
        error = (
            f"the sidecar (PID {', '.join(str(p) for p in sorted(pids))}) proxied none of the "
            f"{ok} successful requests of the step: it is not on the path to the target"
        )
    elif requests_seen < 0.5 * ok:
        error = (
            f"the sidecar proxied {int(requests_seen)} of the {ok} successful requests of the "
            "step: it is not (only) on the path to the target"
        )
    leg_out: dict[str, Any] = {}
    for leg, hs in legs.items():
        merged = merge_histograms(hs)
        if merged is None:
            continue
        # the one percentile rule of captures and bundles: the histogram's own
        leg_out[leg] = {
            "count": merged.count,
            "min_ms": _r(merged.min / 1000),
            "mean_ms": _r(merged.mean / 1000),
            "max_ms": _r(merged.max / 1000),
        } | {pkey(p) + "_ms": _r(merged.percentile(p) / 1000) for p in PS}
    return {
        "error": error,  # set: these figures are not the sidecar's cost (SMP leaves them out)
        "count": len(pids),
        "pids": sorted(pids),
        "windows": len(caps),
        "duration_s": _r(duration, 3),  # captured
        "load_window_s": _r(window, 3),  # the load's, inside the captured windows
        "complete": complete,
        "drops": drops,
        "requests_seen": int(requests_seen),  # spans: what the sidecar proxied
        "requests_completed": completed,  # what the load generator got back
        "rps": _r(requests_seen / window if window > 0 else 0.0, 3),
        "cpu_seconds": _r(cpu_s, 6),
        "cpu_mcores": _r(cpu_s / window * 1000.0 if window > 0 else 0.0, 2),
        "cpu_ms_per_1k_requests": _r(stats.cpu_ms_per_1k_requests(cpu_s, completed), 3),
        "cores_per_1k_rps": _r(
            stats.cores_per_1k_rps(cpu_s, window, rate) if window > 0 else None, 5
        ),
        "mem_unit": "MiB",
        "mem_mb": {"rss": _r(rss, 2), "pss": _r(pss, 2), "cgroup_current": _r(cgroup, 2)},
        "bytes_rx": int(rx),
        "bytes_tx": int(tx),
        "bytes_per_s": _r((rx + tx) / window if window > 0 else 0.0, 1),
        "legs": leg_out,
        "app": {
            "cpu_seconds": _r(app_cpu_s, 6),
            "cpu_mcores": _r(app_cpu_s / window * 1000.0 if window > 0 else 0.0, 2),
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
    ma, ba = mesh.midpoints(), base.midpoints()
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
            stats.bootstrap_percentiles(
                *mesh_h.midpoints(), rng, stats.CI_PERCENTILES, N_BOOT, LEVEL
            )
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
    ci = stats.bootstrap_percentiles(*total.midpoints(), rng, (50.0,), N_BOOT, LEVEL)[50.0]
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
        "difference_ms": _r(ci.estimate / 1000 - ab["delta_ms"]),  # eBPF minus A/B
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
    if sc.get("error"):
        sc = {}
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
        "notes": list(dict.fromkeys([*bundle.notes, *anomalies(bundle, steps)])),
    }


def anomalies(bundle: RunBundle, steps: list[dict[str, Any]]) -> list[str]:
    """One note per thing a reader must know before trusting a figure of the details."""
    out: list[str] = []
    if not bundle.config.sidecar_pids and bundle.mesh.sidecar_count == 0 and bundle.mesh.proxy:
        out.append("no sidecar was captured: latency only (eBPF figures and costs absent)")
    if bundle.mesh.mesh_type == "INVALID_MESH" and bundle.mesh.evidence:
        out.append(f"mesh type unknown (SMP INVALID_MESH): {bundle.mesh.evidence}")
    for st in steps:
        rate = "max" if not st["rate_asked"] else f"{st['rate_asked']:g}"
        at = f"step {st['index']} ({rate} req/s)"
        for role in ("mesh", "baseline"):
            ld = st.get(role)
            if not ld:
                continue
            f = ld["failures"]
            if f["failed"]:
                out.append(
                    f"{at} {role}: error rate {f['rate']:.2%} ({f['failed']} of {f['attempts']}: "
                    f"{f['error_responses']} error responses, {f['no_response']} without response)"
                    + (
                        ""
                        if not f["in_latency_histogram"]
                        else f"; {f['in_latency_histogram']} error responses are in the "
                        f"latency figures ({ld['generator']} cannot separate them)"
                    )
                )
            if not ld["target_reached"]:
                out.append(
                    f"{at} {role}: asked rate not reached: {ld['rate_achieved']:g} successful req/s"
                )
            if ld["latency"].get("computed"):
                out.append(
                    f"{at} {role}: not stated by {ld['generator']}, computed from its histogram: "
                    + ", ".join(ld["latency"]["computed"])
                )
        sc = st.get("sidecar")
        if sc:
            if sc["error"]:
                out.append(f"{at}: {sc['error']}; its CPU, memory and rate are left out of SMP")
            if sc["drops"]:
                out.append(f"{at}: the probes dropped {sc['drops']} events: eBPF counts are low")
            if not sc["complete"]:
                out.append(f"{at}: a capture is incomplete (see run.records[].capture)")
        ab = st.get("ebpf_vs_ab")
        if ab and not ab["agree"]:
            out.append(
                f"{at}: eBPF and A/B disagree: eBPF {ab['ebpf_basis']} p50 "
                f"{ab['ebpf_p50_ms']:.3f} ms vs A/B {ab['ab_delta_p50_ms']:+.3f} ms "
                f"(difference {ab['difference_ms']:+.3f} ms, tolerance {ab['tolerance_ms']} ms)"
            )
    return out
