"""fortio JSON inside Meshery's wrapper: numbers pinned by hand from the real sample.

Fixture: ../shared/fixtures/loadgen/meshery-fortio-results.json (three Meshery results, each
with one fortio run in ``runner_results``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from profiler.errors import BadInputFile
from profiler.loadgen import fortio

FIXTURE = (
    Path(__file__).resolve().parents[3] / "shared/fixtures/loadgen/meshery-fortio-results.json"
)


@pytest.fixture(scope="module")
def results() -> list[fortio.LoadResult]:
    return fortio.parse(FIXTURE)


def test_three_meshery_results(results: list[fortio.LoadResult]) -> None:
    assert len(results) == 3
    assert all(r.generator == "fortio" and r.mode == "closed-loop" for r in results)


def test_first_run_numbers_from_the_file(results: list[fortio.LoadResult]) -> None:
    r = results[0]  # "No mesh_1650983199033", https://www.facebook.com
    # RequestedQPS "max"; ActualQPS 2.5838099794764338; ActualDuration 30187978458 ns
    assert r.rate_asked is None and r.target_reached
    assert r.rate_achieved == pytest.approx(2.58381, rel=1e-5)
    assert r.duration_s == pytest.approx(30.187978458)
    # DurationHistogram in seconds: p50 0.38333.., p99 0.50217102424, Min 0.3349775
    assert r.percentiles_ms[50] == pytest.approx(383.333, rel=1e-5)
    assert r.percentiles_ms[99] == pytest.approx(502.171, rel=1e-5)
    assert r.percentiles_ms[99.9] == pytest.approx(509.099, rel=1e-5)
    assert r.min_ms == pytest.approx(334.9775)
    assert r.max_ms == pytest.approx(509.868292)
    assert r.status_counts == {200: 78} and r.requests == 78 and r.errors == {}
    assert r.connections == 1 and r.target == "https://www.facebook.com"
    # StartTime 2022-04-26T19:56:40.358118+05:30 is 14:26:40 UTC
    assert r.start_time.isoformat() == "2022-04-26T14:26:40.358118+00:00"
    # the histogram is rebuilt from the 5 buckets: same count, p50 within the 0.35-0.40 s one
    assert r.histogram is not None and r.histogram.count == 78
    assert 350_000 <= r.histogram.percentile(50) <= 400_000


def test_socket_errors_and_numeric_qps(results: list[fortio.LoadResult]) -> None:
    r = results[1]  # linkerd_1652379422611: RequestedQPS "10", RetCodes {"-1": 300}
    assert r.rate_asked == 10.0
    assert r.rate_achieved == pytest.approx(9.998042, rel=1e-6)
    assert r.target_reached
    assert r.errors == {"socket": 300} and r.status_counts == {} and r.requests == 0
    assert r.connections == 100
    assert r.percentiles_ms[90] == pytest.approx(4.357143, rel=1e-5)  # 0.004357142857 s
    assert any("linkerd_1652379422611" in n for n in r.notes)


def test_bare_fortio_object(results: list[fortio.LoadResult]) -> None:
    raw = json.loads(FIXTURE.read_text())[2]["runner_results"][0]
    (r,) = fortio.parse(raw)
    assert r.percentiles_ms[50] == pytest.approx(6.238095, rel=1e-5)
    assert r.percentiles_ms == results[2].percentiles_ms


def test_truncated_file(tmp_path: Path) -> None:
    bad = tmp_path / "cut.json"
    bad.write_text(FIXTURE.read_text()[:5000])
    with pytest.raises(BadInputFile) as e:
        fortio.parse(bad)
    assert "\n" not in str(e.value) and "not JSON" in str(e.value)


def test_wrong_kind_of_file() -> None:
    other = FIXTURE.parent / "nighthawk-output.json"
    with pytest.raises(BadInputFile, match="not fortio output"):
        fortio.parse(other)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadInputFile, match="cannot read"):
        fortio.parse(tmp_path / "nope.json")


def test_bucket_counts_must_add_up() -> None:
    raw = json.loads(FIXTURE.read_text())[0]["runner_results"][0]
    raw["DurationHistogram"]["Count"] = 79
    with pytest.raises(BadInputFile, match="malformed fortio result"):
        fortio.parse(raw)
