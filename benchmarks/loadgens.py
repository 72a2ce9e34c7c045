"""4. The built-in load generator vs wrk and hey, on the same target (the testbed's URL through
the server's Envoy, from the client pod): the highest rate each sustains, and the latency each
reports at one fixed rate (ours open loop; hey throttled per worker; wrk cannot hold a rate, so
it runs as it is with one connection). Generator CPU per request from the children's rusage.
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from typing import Any

from benchmarks.common import Profile, med_range, rotate, summary, table, testbed

CONNECTIONS = 16
FIXED_RATE = 1000.0  # req/s: every generator holds it here
FIXED_CONNECTIONS = 8


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _measure(fn: Callable[[], Any]) -> dict[str, Any]:
    cpu0 = _children_cpu()
    r = fn()
    cpu = _children_cpu() - cpu0
    p = r.percentiles_ms
    out = {
        "rate": r.rate_achieved,
        "requests": r.requests,
        "errors": r.error_count,
        "reached": r.target_reached,
        "p50_us": p.get(50.0, 0.0) * 1000,
        "p99_us": p.get(99.0, 0.0) * 1000,
        "cpu_us_per_req": cpu * 1e6 / max(r.requests, 1),
    }
    if r.service_histogram is not None and r.service_histogram.count:
        out["service_p50_us"] = r.service_histogram.percentile(50)
        out["service_p99_us"] = r.service_histogram.percentile(99)
    return out


def run(profile: Profile) -> dict[str, Any]:
    from profiler.loadgen import LoadSpec, run_load

    secs, rounds = profile.window_s, min(profile.rounds, 3)
    with testbed("bl") as tb:
        url, ns = tb.state.url, tb.state.client.netns

        def spec(gen: str, rate: float | None, conns: int = CONNECTIONS, **kw: Any) -> Any:
            return lambda: run_load(LoadSpec(gen, url, rate, secs, conns, netns=ns, **kw))

        _measure(spec("wrk", None))  # warm the pools
        maxes = rotate(
            rounds,
            [
                lambda: _measure(spec("wrk", None)),
                lambda: _measure(spec("hey", None)),
                lambda: _measure(spec("builtin", None, workers=2)),
            ],
        )
        # ours, open loop: the highest rate held within 1% of the asked
        top = summary([m["rate"] for m in maxes[2]])["median"] or 1000.0
        held, sweep = 0.0, []
        for frac in (0.3, 0.5, 0.7, 0.85, 1.0, 1.2):
            rate = round(top * frac, -2)
            m = _measure(spec("builtin", rate, warmup_s=0.3))
            sweep.append({"asked": rate, **m})
            if not m["reached"]:
                break
            held = m["rate"]
        fixed = rotate(
            rounds,
            [
                lambda: _measure(spec("builtin", FIXED_RATE, FIXED_CONNECTIONS, warmup_s=0.3)),
                lambda: _measure(spec("hey", FIXED_RATE, FIXED_CONNECTIONS)),
                lambda: _measure(spec("wrk", None, 1)),
            ],
        )
    return _report(profile, rounds, maxes, held, sweep, fixed)


def _s(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    return summary([r[key] for r in runs if key in r])


def _report(
    profile: Profile,
    rounds: int,
    maxes: list[list[dict[str, Any]]],
    held: float,
    sweep: list[dict[str, Any]],
    fixed: list[list[dict[str, Any]]],
) -> dict[str, Any]:
    names = ("wrk", "hey", "builtin")
    summ: dict[str, Any] = {
        "closed_loop_max": {},
        "fixed_rate": {},
        "builtin_open_loop_held": held,
        "builtin_open_loop_sweep": sweep,
        "fixed_rate_asked": FIXED_RATE,
    }
    rows_max: list[list[Any]] = []
    for name, runs in zip(names, maxes, strict=True):
        s = {k: _s(runs, k) for k in ("rate", "p50_us", "p99_us", "cpu_us_per_req")}
        summ["closed_loop_max"][name] = s
        rows_max.append(
            [
                name,
                med_range(s["rate"]),
                med_range(s["p50_us"]),
                med_range(s["p99_us"]),
                med_range(s["cpu_us_per_req"]),
            ]
        )
    rows_max.append(["builtin, open loop (highest rate held within 1%)", round(held), "", "", ""])
    rows_fixed = []
    labels = (
        "builtin (open loop)",
        "hey (-q per worker, closed loop)",
        "wrk (1 connection, as it is)",
    )
    for key, label, runs in zip(("builtin", "hey", "wrk"), labels, fixed, strict=True):
        s = {
            k: _s(runs, k)
            for k in (
                "rate",
                "p50_us",
                "p99_us",
                "service_p50_us",
                "service_p99_us",
                "cpu_us_per_req",
            )
        }
        summ["fixed_rate"][key] = s
        rows_fixed.append(
            [
                label,
                med_range(s["rate"]),
                med_range(s["p50_us"]),
                med_range(s["p99_us"]),
                med_range(s["service_p50_us"]),
                med_range(s["cpu_us_per_req"]),
            ]
        )
    return {
        "summary": summ,
        "tables": [
            table(
                f"Highest rate, closed loop, {CONNECTIONS} connections, {rounds} rotated "
                f"rounds of {profile.window_s:g} s (median [min..max])",
                ["generator", "req/s", "p50 (us)", "p99 (us)", "generator CPU us/req"],
                rows_max,
            ),
            table(
                f"Latency at {FIXED_RATE:.0f} req/s, {FIXED_CONNECTIONS} connections",
                [
                    "generator",
                    "req/s achieved",
                    "p50 (us)",
                    "p99 (us)",
                    "ours: from actual send p50 (us)",
                    "generator CPU us/req",
                ],
                rows_fixed,
            ),
        ],
    }
