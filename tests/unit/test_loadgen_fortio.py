"""fortio JSON inside Meshery's wrapper: numbers pinned by hand from the real sample.

Fixture: tests/fixtures/loadgen/meshery-fortio-results.json (three Meshery results, each
with one fortio run in ``runner_results``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from profiler.errors import BadInputFile
from profiler.loadgen import fortio

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures/loadgen/meshery-fortio-results.json"


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


def test_socket_errors_are_failures_not_a_reached_target(results: list[fortio.LoadResult]) -> None:
    r = results[1]  # linkerd_1652379422611: RequestedQPS "10", RetCodes {"-1": 300}
    assert r.rate_asked == 10.0
    # ActualQPS 9.998 counts the 300 failed calls: not one response came back
    assert r.rate_achieved == 0.0 and r.success_rate == 0.0
    assert not r.target_reached
    assert r.errors == {"socket": 300} and r.status_counts == {} and r.requests == 0
    assert r.error_rate == 1.0 and r.attempts == 300
    # the 300 calls' latency is the errors', never the service's
    assert r.histogram is not None and r.histogram.count == 0
    assert r.error_histogram is not None and r.error_histogram.count == 300
    assert r.percentiles_ms == {} and r.min_ms is None and r.max_ms is None
    assert r.connections == 100
    assert any("linkerd_1652379422611" in n for n in r.notes)
    assert any("error rate 100.00%" in n for n in r.notes)


def test_stated_figures_are_kept_and_the_rest_is_named(results: list[fortio.LoadResult]) -> None:
    r = results[0]
    # Avg 0.3866328985641026 s as printed (the buckets' linear spread gives another mean)
    assert r.mean_ms == pytest.approx(386.6328985641026)
    assert r.histogram is not None and abs(r.histogram.mean / 1000 - r.mean_ms) > 0.5
    # fortio printed 50, 75, 90, 99, 99.9; p95 is computed from the buckets and said to be
    assert r.percentiles_ms[75] == pytest.approx(406.5789473684211)
    assert r.computed == ["p95"]
    assert 400.0 <= r.percentiles_ms[95] <= 450.0
    assert any("computed from its histogram: p95" in n for n in r.notes)


def test_error_responses_apart_with_errors_histogram() -> None:
    raw = json.loads(FIXTURE.read_text())[0]["runner_results"][0]
    # 10 of the 78 calls were 503s, all in the 0.40-0.45 s bucket
    raw["RetCodes"] = {"200": 68, "503": 10}
    raw["ErrorsDurationHistogram"] = {
        "Count": 10,
        "Min": 0.41,
        "Max": 0.44,
        "Avg": 0.42,
        "Data": [{"Start": 0.4, "End": 0.45, "Count": 10, "Percent": 100}],
    }
    (r,) = fortio.parse(raw)
    assert r.requests == 78 and r.successes == 68 and r.error_responses == 10
    assert r.error_rate == pytest.approx(10 / 78)
    assert r.histogram is not None and r.histogram.count == 68
    assert r.error_histogram is not None and r.error_histogram.count == 10
    assert r.errors_in_histogram == 0
    assert r.success_rate == pytest.approx(r.rate_achieved * 68 / 78)
    # the printed figures include the errors: the successes' are computed, and said to be
    assert "p50" in r.computed and "max" in r.computed


def test_error_responses_without_errors_histogram_are_flagged() -> None:
    raw = json.loads(FIXTURE.read_text())[0]["runner_results"][0]
    raw["RetCodes"] = {"200": 68, "503": 10}
    (r,) = fortio.parse(raw)
    assert r.errors_in_histogram == 10
    assert r.percentiles_ms[50] == pytest.approx(383.333, rel=1e-5)  # fortio's, all calls
    assert any("does not separate error latency" in n for n in r.notes)


def test_bare_fortio_object(results: list[fortio.LoadResult]) -> None:
    raw = json.loads(FIXTURE.read_text())[0]["runner_results"][0]
    (r,) = fortio.parse(raw)
    assert r.percentiles_ms[50] == pytest.approx(383.333, rel=1e-5)
    assert r.percentiles_ms == results[0].percentiles_ms


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


def test_grpc_statuses_count_and_non_ok_ones_are_errors() -> None:
    raw = json.loads(FIXTURE.read_text())[0]["runner_results"][0]
    raw["RunType"] = "GRPC Health"
    raw["RetCodes"] = {"SERVING": 70, "NOT_SERVING": 8}  # fortio keys gRPC runs by status name
    (r,) = fortio.parse(raw)
    assert r.protocol == "grpc" and r.grpc_status_counts == {"SERVING": 70, "NOT_SERVING": 8}
    assert r.requests == 78 and r.error_responses == 8 and r.successes == 70
    assert r.error_rate == pytest.approx(8 / 78) and r.errors_in_histogram == 8
    assert any("8 x NOT_SERVING" in n for n in r.notes)
