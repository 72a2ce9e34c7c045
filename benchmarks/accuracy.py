"""2. Accuracy: the probe's per-leg medians and p99s against Envoy's own timers (its access log,
joined by x-request-id), over a rate sweep from 100 req/s to near the maximum, with 1 and 2
Envoy workers and with mTLS between two sidecars; and the sidecar's CPU from ``sched_switch``
against the kernel's utime + stime in /proc. The method is the one of
``tests/integration/test_capture.py`` (docs/accuracy.md).
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks.common import Profile, table, testbed

VARIANTS: dict[str, dict[str, Any]] = {
    "1 worker": {},
    "2 workers": {"concurrency": 2},
    "mTLS": {"mtls": True, "client_sidecar": True},
}
CONNECTIONS = 16
NEAR_MAX = 0.6  # of the closed-loop maximum (above, generator + app saturate 2 cores)


def rates_for(max_rps: float, points: int) -> list[float]:
    """``points`` rates from 100 req/s to NEAR_MAX of the maximum (rounded, increasing)."""
    top = max(200.0, round(NEAR_MAX * max_rps, -2))
    if points <= 2:
        return [100.0, top]
    out = {100.0, top}
    for k in range(1, points - 1):
        out.add(round(100 + (top - 100) * k / (points - 1), -2))
    return sorted(out)


def _step(tb: Any, rate: float, seconds: float, tag: str, tmp: Path) -> dict[str, Any]:
    from profiler.testbed.accuracy import measure

    m = measure(tb, rate, seconds, tag, tmp / f"{tag}.csv", connections=CONNECTIONS)
    cmp = m.comparison
    return {
        "rate_asked": rate,
        "rate_achieved": round(m.load.rate_achieved, 1),
        "sent": m.load.requests,
        "envoy": cmp.envoy,
        "ours": cmp.ours,
        "matched": cmp.matched,
        "drops": m.capture["drops"],
        "cpu_ours_s": m.capture["sidecars"][0]["cpu_seconds"],
        "cpu_proc_s": round(m.proc_cpu_s, 3),
        "legs": {leg: asdict(c) for leg, c in cmp.legs.items()},
    }


def run(profile: Profile) -> dict[str, Any]:
    from profiler.loadgen import LoadSpec, run_load

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="smp-bench-acc-") as d:
        tmp = Path(d)
        for vi, (name, options) in enumerate(VARIANTS.items()):
            with testbed("ba", app_delay_s=0.001, **options) as tb:
                url, ns = tb.state.url, tb.state.client.netns
                top = run_load(LoadSpec("wrk", url, None, 2.0, CONNECTIONS, netns=ns))
                steps = [
                    _step(tb, rate, profile.step_s, f"b{vi}r{i}", tmp)
                    for i, rate in enumerate(rates_for(top.rate_achieved, profile.sweep_points))
                ]
                results[name] = {"max_rps": round(top.rate_achieved), "steps": steps}
    return _report(profile, results)


def _pair(leg: dict[str, float], q: str) -> str:
    return f"{leg[f'ours_{q}']:.0f} / {leg[f'envoy_{q}']:.0f}"


def _report(profile: Profile, results: dict[str, Any]) -> dict[str, Any]:
    rows, worst = [], {"first_byte_p50_diff_us": 0.0, "upstream_p50_diff_us": 0.0}
    cpu_err = []
    for name, res in results.items():
        for s in res["steps"]:
            if not s["legs"]:
                rows.append([name, s["rate_asked"], s["rate_achieved"], "0%", *["-"] * 7])
                continue
            legs = s["legs"]
            fb = legs["first_byte_to_first_byte"]
            d50 = fb["ours_p50"] - fb["envoy_p50"]
            d99 = fb["ours_p99"] - fb["envoy_p99"]
            up = legs["upstream"]["ours_p50"] - legs["upstream"]["envoy_p50"]
            worst["first_byte_p50_diff_us"] = max(worst["first_byte_p50_diff_us"], abs(d50))
            worst["upstream_p50_diff_us"] = max(worst["upstream_p50_diff_us"], abs(up))
            cpu = s["cpu_ours_s"] / s["cpu_proc_s"] - 1 if s["cpu_proc_s"] else None
            if cpu is not None:
                cpu_err.append(abs(cpu))
            rows.append(
                [
                    name,
                    s["rate_asked"],
                    s["rate_achieved"],
                    f"{100 * s['matched'] / max(s['envoy'], 1):.1f}%",
                    _pair(legs["request_proxy"], "p50"),
                    _pair(legs["upstream"], "p50"),
                    _pair(legs["response_proxy"], "p50"),
                    f"{d50:+.0f}",
                    f"{d99:+.0f}",
                    _pair(legs["response_proxy"], "p99"),
                    "-" if cpu is None else f"{100 * cpu:+.1f}%",
                ]
            )
    summ = {
        "variants": results,
        "worst": worst,
        "cpu_max_rel_error": round(max(cpu_err), 4) if cpu_err else None,
        "drops": sum(s["drops"] for r in results.values() for s in r["steps"]),
    }
    return {
        "summary": summ,
        "tables": [
            table(
                f"Ours vs Envoy's timers (us, ours / Envoy), {profile.step_s:g} s per rate, "
                "1 ms app; first-byte = request_proxy + upstream (read-anchored)",
                [
                    "variant",
                    "asked req/s",
                    "achieved",
                    "matched (of Envoy's log)",
                    "request_proxy p50",
                    "upstream p50",
                    "response_proxy p50",
                    "first-byte p50 diff",
                    "first-byte p99 diff",
                    "response_proxy p99",
                    "CPU ours vs /proc",
                ],
                rows,
            )
        ],
    }
