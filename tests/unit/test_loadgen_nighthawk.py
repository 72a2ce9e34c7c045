"""Nighthawk JSON: numbers pinned by hand from the real sample.

Fixture: tests/fixtures/loadgen/nighthawk-output.json (Nighthawk's own output test file:
worker_0, worker_1 and global, a latency statistic ``foo_latency`` with 4 samples).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from profiler.errors import BadInputFile
from profiler.loadgen import nighthawk

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures/loadgen/nighthawk-output.json"


@pytest.fixture
def data() -> dict[str, Any]:
    d: dict[str, Any] = json.loads(FIXTURE.read_text())
    return d


def test_global_latency_numbers_from_the_file() -> None:
    r = nighthawk.parse(FIXTURE)
    # global foo_latency: count "4", mean "0.000195004s", min "0.000180007s", max "0.000210007s"
    assert r.requests == 4
    assert r.mean_ms == pytest.approx(0.195004)
    assert r.min_ms == pytest.approx(0.180007)
    assert r.max_ms == pytest.approx(0.210007)
    # every listed percentile as Nighthawk printed it: 0.5 -> "0.000190007s", 0.775 -> 210
    assert r.percentiles_ms[50] == pytest.approx(0.190007)
    assert r.percentiles_ms[77.5] == pytest.approx(0.210007)
    assert r.percentiles_ms[10] == pytest.approx(0.180007)
    # 0.9 is not listed: computed from the rebuilt histogram (whole us), and said to be
    assert r.percentiles_ms[90] == pytest.approx(0.210, abs=1e-9)
    assert r.computed == ["p90", "p95", "p99", "p99.9"]
    assert any("computed from its histogram: p90" in n for n in r.notes)
    # cumulative counts 1,2,3,4 at 180, 190, 200, 210 us
    assert r.histogram is not None and r.histogram.count == 4
    assert r.histogram.percentile(50) == 190 and r.histogram.percentile(75) == 200
    # execution_duration "1s"; version 0.3.0; two workers besides global
    assert r.duration_s == 1.0 and r.rate_achieved == 4.0
    assert r.generator_version == "0.3.0" and r.workers == 2
    assert r.mode == "open-loop"
    assert r.start_time.isoformat() == "2009-02-13T23:31:31.567000+00:00"
    assert any("foo_latency" in n for n in r.notes)


def test_named_statistic(data: dict[str, Any]) -> None:
    with pytest.raises(BadInputFile, match="no statistic 'nope'"):
        nighthawk.parse(data, statistic="nope")
    assert nighthawk.parse(data, statistic="foo_latency").requests == 4


def test_main_statistic_counters_and_blocking(data: dict[str, Any]) -> None:
    g = data["results"][2]
    stat = copy.deepcopy(next(s for s in g["statistics"] if s["id"] == "foo_latency"))
    stat["id"] = nighthawk.MAIN_STATISTIC
    g["statistics"].append(stat)
    g["statistics"].append({"id": "sequencer.blocking", "count": "2", "percentiles": []})
    g["counters"] += [
        {"name": "benchmark.http_2xx", "value": "3"},
        {"name": "benchmark.http_5xx", "value": "1"},
        {"name": "benchmark.pool_overflow", "value": "7"},
    ]
    data["options"]["requests_per_second"] = 4
    r = nighthawk.parse(data)
    assert r.status_counts == {200: 3, 500: 1}
    assert r.errors == {"pool_overflow": 7}
    assert r.mode == "closed-loop"
    # 1 of 4 responses a 5xx and 7 pool overflows: 3 successful req/s of the 4 asked
    assert r.rate_asked == 4.0 and not r.target_reached
    assert r.error_rate == pytest.approx(8 / 11) and r.success_rate == pytest.approx(3.0)
    assert r.errors_in_histogram == 1  # no latency_2xx statistic: the 5xx is in the figures
    assert not any("absent" in n for n in r.notes)


def test_truncated_file(tmp_path: Path) -> None:
    bad = tmp_path / "cut.json"
    bad.write_text(FIXTURE.read_text()[:3000])
    with pytest.raises(BadInputFile, match="not JSON"):
        nighthawk.parse(bad)


def test_wrong_kind_of_file() -> None:
    other = FIXTURE.parent / "meshery-fortio-results.json"
    with pytest.raises(BadInputFile, match="not nighthawk output"):
        nighthawk.parse(other)


def test_bad_duration_string(data: dict[str, Any]) -> None:
    data["results"][2]["statistics"][3]["percentiles"][0]["duration"] = "12 ms"
    with pytest.raises(BadInputFile, match="malformed nighthawk result"):
        nighthawk.parse(data)
