"""The benchmarks' shared pieces: A/B order, summaries, tables, the sweep, the analysis."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import common
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
