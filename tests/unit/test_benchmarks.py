"""The benchmarks' shared pieces: A/B order, summaries, tables, the sweep, the analysis."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import common, overhead
from benchmarks.accuracy import rates_for


def test_alternate_swaps_the_order_every_round() -> None:
    calls: list[str] = []
    a, b = common.alternate(
        4, lambda: calls.append("A") or len(calls), lambda: calls.append("B") or len(calls)
    )
    assert "".join(calls) == "ABBAABBA"
    assert a == [1, 4, 5, 8] and b == [2, 3, 6, 7]


def test_rotate_starts_each_round_with_the_next_variant() -> None:
    calls: list[str] = []
    out = common.rotate(3, [lambda n=n: calls.append(n) or n for n in "xyz"])
    assert "".join(calls) == "xyzyzxzxy"
    assert out == [["x"] * 3, ["y"] * 3, ["z"] * 3]


def test_summary_median_and_spread() -> None:
    s = common.summary([1.0, 3.0, 2.0, 10.0])
    assert s == {"n": 4, "median": 2.5, "min": 1.0, "max": 10.0, "spread": 3.6}


def test_summary_when_empty_or_median_zero() -> None:
    assert common.summary([])["median"] is None
    assert common.summary([-1.0, 0.0, 1.0])["spread"] is None


def test_paired_ratios_and_deltas_need_the_same_rounds() -> None:
    assert common.paired_ratios([2.0, 0.0, 4.0], [1.0, 5.0, 4.0]) == [0.5, 1.0]
    assert common.paired_deltas([1.0, 2.0], [3.0, 1.0]) == [2.0, -1.0]
    with pytest.raises(ValueError):
        common.paired_ratios([1.0], [1.0, 2.0])


def test_markdown_table_and_result_files(tmp_path: Path) -> None:
    t = common.table("T", ["a", "b"], [["x", 1234.5], ["y", None]])
    text = common.markdown([t])
    assert "| a | b |" in text and "| x | 1,234 |" in text and "| y | - |" in text
    doc = {
        "started": "2026-12-02T01:00:00+00:00",
        "profile": "quick",
        "seconds": 3.0,
        "machine": common.machine(),
        "benchmarks": {"x": {"seconds": 1, "tables": [t]}, "y": {"seconds": 1, "error": "boom"}},
    }
    paths = common.write_results(doc, tmp_path)
    assert [p.name for p in paths] == ["20261202T010000.json", "latest.json", "latest.md"]
    assert json.loads(paths[1].read_text())["benchmarks"]["x"]["tables"][0]["title"] == "T"
    md = paths[2].read_text()
    assert "## x" in md and "failed: boom" in md and "kernel" in md


def test_rates_for_runs_from_100_to_near_the_maximum() -> None:
    assert rates_for(5000, 2) == [100.0, 3000.0]
    r = rates_for(5000, 4)
    assert r[0] == 100.0 and r[-1] == 3000.0 and len(r) == 4 and r == sorted(r)
    assert rates_for(50, 3) == [100.0, 200.0]


# -- the overhead benchmark's arithmetic (issue 11's goals) ----------------------------------
def test_goal_verdicts_on_both_sides_of_the_target() -> None:
    ratio, tax = overhead.GOALS["throughput_ratio"], overhead.GOALS["tax_sockpair"]
    assert ratio.met(0.97) and not ratio.met(0.969) and ratio.verdict(0.5) == "NOT met"
    assert tax.met(150.0) and not tax.met(151.0) and tax.verdict(-3.0) == "met"
    assert ratio.met(None) is None and ratio.verdict(float("nan")) == "n/a"
    assert ratio.text() == ">= 0.97" and tax.text() == "<= +150 ns"
    assert overhead.GOALS["cpu_us_per_req"].text() == "<= 5 us"


def test_paired_ratio_and_delta_per_round() -> None:
    # round 2 lost its off window and round 3 its on window: both left out, no shift
    off, on = [100.0, None, 50.0, 80.0], [90.0, 70.0, None, 88.0]
    assert overhead.paired(off, on, "ratio") == [0.9, 1.1]
    assert overhead.paired(off, on, "delta") == [-10.0, 8.0]
    assert overhead.paired([0.0], [5.0], "ratio") == []
    with pytest.raises(ValueError):
        overhead.paired([1.0], [1.0, 2.0], "ratio")


def test_node_cpu_added_is_per_request_and_counts_the_profiler() -> None:
    # off: 1 s of Envoy over 10,000 requests = 100 us/req; on: 1.1 s of Envoy + 0.2 s of the
    # profiler over 10,000 = 130 us/req: +30 us (not +0.3 s, not +20 us without the profiler)
    off = {"envoy_requests": 10_000, "envoy_cpu_s": 1.0, "prof_cpu_s": 0.0}
    on = {"envoy_requests": 10_000, "envoy_cpu_s": 1.1, "prof_cpu_s": 0.2, "total": 0.5}
    assert overhead.node_cpu_added(off, on) == pytest.approx(30.0)
    assert overhead.node_cpu_added(off, on, "total") == pytest.approx(60.0)
    # per request of each window: twice the requests at twice the CPU adds nothing
    on2 = {"envoy_requests": 20_000, "envoy_cpu_s": 2.0, "prof_cpu_s": 0.0}
    assert overhead.node_cpu_added(off, on2) == pytest.approx(0.0)


def test_completeness_is_spans_over_envoys_log() -> None:
    assert overhead.completeness({"sat": {"counted": 995, "envoy_requests": 1000}}) == 0.995
    assert overhead.completeness({"sat": {"counted": None, "envoy_requests": 1000}}) is None
    assert overhead.completeness({"sat": {"counted": 5, "envoy_requests": 0}}) is None


def test_parse_tax_and_its_syscall_count() -> None:
    text = (
        "getppid 400000 70.5 71.0 72.0 70.5 71.0\n"
        "read 300000 175.0 176.0 175.0 176.0 180.0\n"
        "sockpair 60000 740.0 750.0 740.0 750.0 760.0\n"
        "tcp 30000 2500.0 2600.0 2500.0 2600.0 2700.0\n"
    )
    t = overhead.parse_tax(text)
    assert t["read"] == {
        "iters": 300000,
        "best": 175.0,
        "median": 176.0,
        "runs": [175.0, 176.0, 180.0],
    }
    # a socket pair is two syscalls; the warm-up is iters / 10 + 1
    assert overhead.tax_syscalls(t["sockpair"], "sockpair") == 2 * (6001 + 3 * 60000)
    assert overhead.tax_syscalls(t["tcp"], "tcp") == 2 * (3001 + 3 * 30000)
    assert overhead.tax_syscalls(t["getppid"], "getppid") == 40001 + 3 * 400000
    with pytest.raises(ValueError, match="sockpair"):
        overhead.parse_tax(text.rsplit("sockpair", 1)[0])
    with pytest.raises(ValueError, match="tcp"):
        overhead.parse_tax(text.rsplit("tcp", 1)[0])


def test_parse_wrk_summary() -> None:
    text = """Running 4s test @ http://10.0.0.2:8080/
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   745.12us  200.00us   5.00ms   90.00%
  86012 requests in 4.00s, 20.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  21503.01
Transfer/sec:      5.00MB
"""
    assert overhead.parse_wrk(text) == {"rps": 21503.01, "requests": 86012.0, "errors": 7.0}
    with pytest.raises(ValueError):
        overhead.parse_wrk("wrk: connection refused")


def test_count_lines_skips_a_line_being_written(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_bytes(b'{"a":1}\n{"a":2}\n{"a"')
    n, off = overhead.count_lines(log, 0)
    assert (n, off) == (2, 16)
    with log.open("ab") as f:
        f.write(b':3}\n{"a":4}\n')
    assert overhead.count_lines(log, off) == (2, log.stat().st_size)


def test_both_paths_need_the_switch_and_the_sock_tracepoints() -> None:
    assert overhead.choose_paths(False, True, "")[0] == ["syscalls"]
    paths, why = overhead.choose_paths(True, False, "sock raw tracepoints refused: EINVAL")
    assert paths == ["syscalls"] and "EINVAL" in why
    assert overhead.choose_paths(True, True, "ok") == (["sock", "syscalls"], "")
    assert overhead.variants(["sock", "syscalls"]) == [
        "off",
        "capture/sock",
        "daemon/sock",
        "capture/syscalls",
        "daemon/syscalls",
    ]


def test_judge_says_when_the_rounds_straddle_the_target() -> None:
    g = overhead.GOALS["p50_added"]  # <= +10 us
    assert overhead.judge(g, 4.0, {"min": 1.0, "max": 8.0}) == "met"
    assert overhead.judge(g, 4.0, {"min": -50.0, "max": 300.0}) == "met (rounds on both sides)"
    assert overhead.judge(g, 40.0, {"min": 20.0, "max": 60.0}) == "NOT met"
    assert overhead.judge(g, None, None) == "n/a"
    assert overhead.signed({"median": -3.0, "min": -6.1, "max": 2.0}) == "-3 [-6.1..+2]"


def test_paste_replaces_only_the_marked_blocks() -> None:
    from benchmarks.paste import paste

    doc = {
        "profile": "full",
        "started": "2026-12-06T18:00:00+00:00",
        "machine": {"load_avg": [1.5, 1, 1], "load_avg_end": [2.5, 1, 1], "nice": -10},
        "benchmarks": {
            "overhead": {"seconds": 300, "tables": [common.table("T", ["a"], [[1.5]])]},
            "capacity": {"seconds": 1, "error": "boom"},
        },
    }
    text = (
        "intro\n<!-- bench:overhead -->\nold table\n<!-- /bench:overhead -->\nmiddle\n"
        "<!-- bench:loadgens -->\nkept\n<!-- /bench:loadgens -->\nend\n"
    )
    new, done = paste(text, doc)
    assert done == ["overhead"]
    assert "old table" not in new and "#### T" in new and "| 1.5 |" in new
    assert "load average 1.5 at start, 2.5 at end; nice -10; 300 s" in new
    assert new.startswith("intro\n") and "middle\n" in new and "kept\n" in new
    assert new.endswith("<!-- /bench:loadgens -->\nend\n")


def test_floor_pairs_each_variant_with_its_own_rounds_off_window() -> None:
    from benchmarks.floor import render

    out = {
        "off": [{"rps": 100.0}, {"rps": 200.0}],
        "least": [{"rps": 90.0, "bpf_ns": 0.0}, {"rps": 200.0, "bpf_ns": 0.0}],
    }
    text = render(out, 5.0, stats=False)
    # 90/100 and 200/200 (pairs crossed would give 0.45 and 2.0)
    assert "| least | 145 | 0.950 [0.900..1.000] | - (--stats) |" in text


def test_floor_dose_response_recovers_a_known_slope_from_paired_rounds() -> None:
    """Throughput falls 2% per us of burned BPF per request, off swings 1,000..2,000 between
    rounds: the fit must see the slope through the swing (pairing within the round), take
    the dose from the calls burned (not the ns a call), and per request of the window."""
    from benchmarks.floor import dose_response, render

    offs = [1000.0, 2000.0, 1500.0]
    out: dict[str, list[dict[str, float]]] = {"off": [{"rps": o} for o in offs]}
    out["least"] = [{"rps": o * 0.95, "bpf_ns": 0.0} for o in offs]
    for name, ns in (("burn500", 500), ("burn2000", 2000)):
        rows = []
        for o in offs:
            us = 4 * ns / 1e3  # four burned calls a request
            rps = o * (0.95 - 0.02 * us)
            rows.append({"rps": rps, "bpf_ns": 0.0, "burn_ns": ns, "burned_calls": 4 * rps * 5})
        out[name] = rows
    line = dose_response(out, 5.0)
    assert "over 9 windows" in line
    assert "= 0.950 -0.0200 x" in line, line
    assert "reaches 0.97 at -1.00 us" in line, line  # below the goal at no dose at all
    row = next(ln for ln in render(out, 5.0, stats=False).splitlines() if "| burn2000 |" in ln)
    assert row.endswith("| 8,000 |"), row  # ns a request: 4 calls of 2,000


def test_floor_latency_and_tax_are_differences_from_the_same_rounds_off() -> None:
    from benchmarks.floor import render

    def w(rps: float, p50: float, p99: float, tcp: float) -> dict[str, object]:
        return {
            "rps": rps,
            "bpf_ns": 0.0,
            "p50_us": p50,
            "p99_us": p99,
            "tax": {"sockpair": 500.0, "tcp": tcp},
        }

    out = {
        "off": [w(100.0, 700.0, 2000.0, 1700.0), w(200.0, 900.0, 3000.0, 1900.0)],
        "timing": [w(95.0, 710.0, 2500.0, 1850.0), w(190.0, 960.0, 2900.0, 1950.0)],
    }
    text = render(out, 5.0, stats=False)
    row = next(line for line in text.splitlines() if line.startswith("| timing |"))
    # p50 +10 and +60 (crossed: +260, -190), p99 +500 and -100 (a negative is kept, signed),
    # TCP pair +150 and +50 ns
    assert "| +35 [+10..+60] | +200 [-100..+500] |" in row
    assert "| +0.0 [+0.0..+0.0] | +100.0 [+50.0..+150.0] |" in row
    assert "p50 800 [700..900]" in text
