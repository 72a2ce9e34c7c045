"""1. Self-overhead on the testbed's Envoy sidecar: the profiler attached (the daemon's engine:
in-kernel spans, histograms in user space, no spans kept) vs not attached, alternated.

(a) maximum throughput, closed loop (wrk from the client pod); (b) p50/p99 at a fixed open-loop
rate of half the maximum (built-in generator); (c) the profiler's own CPU per request traced:
user space = CPU time of the thread that polls the ring buffer; kernel = run_time_ns of the
probe's BPF programs (``kernel.bpf_stats_enabled`` on during the (b) windows only). The kernel
part runs inside the traced syscalls and is charged to the traced processes (Envoy), not to the
profiler's process: it shows up as Envoy's own extra CPU too, which is reported beside it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from benchmarks.common import (
    Profile,
    alternate,
    med_range,
    paired_deltas,
    paired_ratios,
    poll_during,
    rss_bytes,
    summary,
    table,
    testbed,
)
from profiler.testbed.accuracy import proc_cpu_s

CONNECTIONS = 16  # wrk's closed-loop connections
OPEN_CONNECTIONS = 8  # the built-in generator's, at the fixed rate
# Half the wrk maximum overloads this 2-core machine once the Python generator and app share it
# (p50 ~10 ms off, all queueing): the fixed rate is a quarter of the maximum (docs/overhead.md).
FIXED_FRACTION = 0.25
# the anchors and goals
GOAL_THROUGHPUT_LOSS = 0.03
GOAL_P50_ADDED_US = 10.0
GOAL_CORES_PER_KRPS = 0.01
COROOT_CORES_PER_KRPS = 0.02  # 0.2 cores at 10k req/s
DEEPFLOW_NS_PER_CALL = (277, 889)
DEEPFLOW_THROUGHPUT_LOSS = (0.045, 0.07)


@contextlib.contextmanager
def attached(envoy_pid: int) -> Iterator[Any]:
    """The daemon's engine on the sidecar, with the RSS it added to this process."""
    from profiler.capture.engine import Engine

    rss0 = rss_bytes()
    engine = Engine(ringbuf_pages=256, keep_spans=False)
    try:
        engine.add_target(envoy_pid, "sidecar", {"pod": "server"})
        engine.rss_added = rss_bytes() - rss0  # type: ignore[attr-defined]
        yield engine
    finally:
        engine.close()


def _window(tb: Any, load: Any, profiler_on: bool, stats: bool) -> dict[str, Any]:
    """One measured window. On: the engine consumed as the daemon does, ``poll(100)`` in a
    loop (every 100 ms, every record in the ring as one batch)."""
    from profiler.probes import loader

    envoy = tb.state.server.envoy_pid
    if not profiler_on:
        cpu0 = proc_cpu_s(envoy)
        r = load()
        return {"load": r, "envoy_cpu_s": proc_cpu_s(envoy) - cpu0}
    with attached(envoy) as engine:
        bpf = engine._probe._bpf
        with loader.bpf_stats_enabled() if stats else contextlib.nullcontext(False) as on:
            p0 = loader.prog_stats(bpf) if on else {}
            cpu0 = proc_cpu_s(envoy)
            r, poll_cpu = poll_during(lambda: engine.poll(100), load)
            envoy_cpu = proc_cpu_s(envoy) - cpu0
            p1 = loader.prog_stats(bpf) if on else {}
        engine.drain()
        progs = {k: (p1[k][0] - p0[k][0], p1[k][1] - p0[k][1]) for k in p1}
        return {
            "load": r,
            "envoy_cpu_s": envoy_cpu,
            "poll_cpu_s": poll_cpu,
            "traced": engine.targets[envoy].requests,
            "incomplete": engine.targets[envoy].incomplete,
            "drops": engine.drops(),
            "rss_added": engine.rss_added,
            "rss_total": rss_bytes(),
            "progs": progs,
        }


def run(profile: Profile) -> dict[str, Any]:
    from profiler.loadgen import LoadSpec, run_load

    with testbed("bo") as tb:
        st = tb.state

        def wrk() -> Any:
            return run_load(
                LoadSpec("wrk", st.url, None, profile.window_s, CONNECTIONS, netns=st.client.netns)
            )

        run_load(LoadSpec("wrk", st.url, None, 1.0, CONNECTIONS, netns=st.client.netns))  # warm
        off_a, on_a = alternate(
            profile.rounds,
            lambda: _window(tb, wrk, False, False),
            lambda: _window(tb, wrk, True, False),
        )
        max_off = [w["load"].rate_achieved for w in off_a]
        max_on = [w["load"].rate_achieved for w in on_a]
        rate = round(FIXED_FRACTION * sorted(max_off)[len(max_off) // 2], -1)

        def fixed() -> Any:
            return run_load(
                LoadSpec(
                    "builtin",
                    st.url,
                    rate,
                    profile.window_s,
                    OPEN_CONNECTIONS,
                    warmup_s=0.3,
                    netns=st.client.netns,
                )
            )

        off_b, on_b = alternate(
            profile.rounds,
            lambda: _window(tb, fixed, False, False),
            lambda: _window(tb, fixed, True, True),
        )
    return _report(profile, rate, off_a, on_a, max_off, max_on, off_b, on_b)


def _pct(w: dict[str, Any], p: float) -> float:
    return float(w["load"].percentiles_ms[p]) * 1000.0  # us


def _cost(w: dict[str, Any]) -> dict[str, float]:
    n = max(w["traced"], 1)
    kern_ns = sum(ns for _, ns in w["progs"].values())
    runs = sum(c for c, _ in w["progs"].values())
    return {
        "user_us": w["poll_cpu_s"] * 1e6 / n,
        "kernel_us": kern_ns / 1e3 / n,
        "total_us": w["poll_cpu_s"] * 1e6 / n + kern_ns / 1e3 / n,
        "bpf_runs_per_req": runs / n,
        "ns_per_bpf_run": kern_ns / runs if runs else 0.0,
    }


def _report(
    profile: Profile,
    rate: float,
    off_a: list[dict[str, Any]],
    on_a: list[dict[str, Any]],
    max_off: list[float],
    max_on: list[float],
    off_b: list[dict[str, Any]],
    on_b: list[dict[str, Any]],
) -> dict[str, Any]:
    thr = summary(paired_ratios(max_off, max_on))
    p50_off, p50_on = [_pct(w, 50.0) for w in off_b], [_pct(w, 50.0) for w in on_b]
    p99_off, p99_on = [_pct(w, 99.0) for w in off_b], [_pct(w, 99.0) for w in on_b]
    d50, d99 = summary(paired_deltas(p50_off, p50_on)), summary(paired_deltas(p99_off, p99_on))
    costs = [_cost(w) for w in on_b]
    cost_sat = [
        {"user_us": w["poll_cpu_s"] * 1e6 / max(w["traced"], 1)} for w in on_a
    ]  # no kernel stats during the saturation windows (they would slow them)
    user, kern = summary([c["user_us"] for c in costs]), summary([c["kernel_us"] for c in costs])
    total = summary([c["total_us"] for c in costs])
    envoy_us_off = [w["envoy_cpu_s"] * 1e6 / max(w["load"].requests, 1) for w in off_b]
    envoy_us_on = [w["envoy_cpu_s"] * 1e6 / max(w["load"].requests, 1) for w in on_b]
    env_delta = summary(paired_deltas(envoy_us_off, envoy_us_on))
    traced_ok = all(w["traced"] >= 0.99 * w["load"].requests for w in on_a + on_b)
    progs: dict[str, list[int]] = {}
    for w in on_b:
        for name, (cnt, ns) in w["progs"].items():
            acc = progs.setdefault(name, [0, 0])
            acc[0] += cnt
            acc[1] += ns
    n_req = max(sum(w["traced"] for w in on_b), 1)
    top = sorted(progs.items(), key=lambda kv: -kv[1][1])[:8]
    cores_per_krps = total["median"] / 1000.0 if total["median"] is not None else None
    summ = {
        "rounds": profile.rounds,
        "window_s": profile.window_s,
        "max_rps_off": summary(max_off),
        "max_rps_on": summary(max_on),
        "throughput_ratio": thr,
        "throughput_loss": None if thr["median"] is None else round(1 - thr["median"], 4),
        "fixed_rate": rate,
        "p50_us_off": summary(p50_off),
        "p50_us_on": summary(p50_on),
        "p50_added_us": d50,
        "p99_us_off": summary(p99_off),
        "p99_us_on": summary(p99_on),
        "p99_added_us": d99,
        "profiler_user_us_per_req": user,
        "profiler_user_us_per_req_at_saturation": summary([c["user_us"] for c in cost_sat]),
        "bpf_kernel_us_per_req": kern,
        "profiler_total_us_per_req": total,
        "cores_per_1000_rps": cores_per_krps,
        "bpf_runs_per_req": summary([c["bpf_runs_per_req"] for c in costs]),
        "ns_per_bpf_run": summary([c["ns_per_bpf_run"] for c in costs]),
        "envoy_cpu_us_per_req_off": summary(envoy_us_off),
        "envoy_cpu_us_per_req_on": summary(envoy_us_on),
        "envoy_cpu_us_per_req_added": env_delta,
        "rss_added_mb": round(max(w["rss_added"] for w in on_a + on_b) / 2**20, 1),
        "rss_total_mb": round(max(w["rss_total"] for w in on_a + on_b) / 2**20, 1),
        "drops": sum(w["drops"] for w in on_a + on_b),
        "every_request_traced": traced_ok,
        "traced_per_request_saturation": summary(
            [w["traced"] / max(w["load"].requests, 1) for w in on_a]
        ),
        "traced_per_request_fixed": summary(
            [w["traced"] / max(w["load"].requests, 1) for w in on_b]
        ),
        "incomplete_spans": sum(w["incomplete"] for w in on_a + on_b),
        "top_programs": {
            k: {"runs_per_req": c / n_req, "ns_per_req": ns / n_req} for k, (c, ns) in top
        },
        "goals": {
            "throughput_loss_lt_3pct": thr["median"] is not None
            and 1 - thr["median"] < GOAL_THROUGHPUT_LOSS,
            "p50_added_lt_10us": d50["median"] is not None and d50["median"] < GOAL_P50_ADDED_US,
            "cores_per_krps_lt_0_01": cores_per_krps is not None
            and cores_per_krps < GOAL_CORES_PER_KRPS,
        },
    }
    rows = [
        [
            "max throughput (wrk, req/s)",
            med_range(summ["max_rps_off"]),
            med_range(summ["max_rps_on"]),
            f"ratio {med_range(thr)}",
            "loss < 3%",
        ],
        [
            f"p50 at {rate:.0f} req/s open loop (us)",
            med_range(summ["p50_us_off"]),
            med_range(summ["p50_us_on"]),
            f"+{med_range(d50)}",
            "< +10 us",
        ],
        [
            f"p99 at {rate:.0f} req/s open loop (us)",
            med_range(summ["p99_us_off"]),
            med_range(summ["p99_us_on"]),
            f"+{med_range(d99)}",
            "",
        ],
        [
            "Envoy CPU per request (us, /proc)",
            med_range(summ["envoy_cpu_us_per_req_off"]),
            med_range(summ["envoy_cpu_us_per_req_on"]),
            f"+{med_range(env_delta)}",
            "",
        ],
    ]
    cost_rows = [
        [
            "user space (the thread running poll(100), as the daemon)",
            med_range(user),
            "",
        ],
        [
            "kernel (BPF programs, bpf_stats)",
            med_range(kern),
            f"{med_range(summ['bpf_runs_per_req'])} runs/req, "
            f"{med_range(summ['ns_per_bpf_run'])} ns/run",
        ],
        [
            "total",
            med_range(total),
            f"{cores_per_krps:.4f} cores per 1,000 req/s (goal < 0.01; Coroot 0.02)"
            if cores_per_krps is not None
            else "",
        ],
        [
            "RSS added to the process by the engine (MB)",
            summ["rss_added_mb"],
            f"process total {summ['rss_total_mb']} MB",
        ],
    ]
    prog_rows = [
        [k, round(v["runs_per_req"], 2), round(v["ns_per_req"], 0)]
        for k, v in summ["top_programs"].items()
    ]
    return {
        "summary": summ,
        "tables": [
            table(
                f"Self-overhead, profiler off vs on, {profile.rounds} alternated rounds of "
                f"{profile.window_s:g} s (median [min..max])",
                ["measure", "off", "on", "on vs off (paired)", "goal"],
                rows,
            ),
            table(
                f"Profiler CPU per request traced at {rate:.0f} req/s (us)",
                ["part", "us per request", "notes"],
                cost_rows,
            ),
            table(
                "Where the kernel time goes (BPF programs, per request traced)",
                ["program", "runs", "ns"],
                prog_rows,
            ),
        ],
    }
