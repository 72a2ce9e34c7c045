"""LoadResult: JSON round trip, UTC times, the 1% rule, malformed input."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from profiler.errors import BadInputFile
from profiler.histogram import LatencyHistogram
from profiler.loadgen.result import LoadResult, percentiles_from_histogram, rate_reached


def _result() -> LoadResult:
    h = LatencyHistogram()
    for us in (900, 1000, 1100, 250_000):
        h.record(us)
    return LoadResult(
        generator="builtin",
        generator_version="0.1.0",
        mode="open-loop",
        target="http://127.0.0.1:8080/",
        connections=4,
        rate_asked=1000.0,
        rate_achieved=995.0,
        duration_s=2.0,
        requests=4,
        histogram=h,
        percentiles_ms=percentiles_from_histogram(h),
        min_ms=0.9,
        mean_ms=h.mean / 1000,
        max_ms=250.0,
        status_counts={200: 4},
        errors={"timeout": 1},
        start_time=datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC),
        end_time=datetime(2026, 1, 1, 12, 0, 2, tzinfo=UTC),
        bytes_received=1234,
        target_reached=rate_reached(1000.0, 995.0),
        request_ids=["smp-x-0", "smp-x-1"],
    )


def test_round_trip() -> None:
    r = _result()
    text = json.dumps(r.to_json())
    back = LoadResult.from_json(json.loads(text))
    assert back == r
    assert back.percentiles_ms[99.9] == pytest.approx(250.0, rel=0.004)
    assert '"99.9"' in text and '"200"' in text


def test_rate_reached_is_within_one_percent() -> None:
    assert rate_reached(1000, 990.0)
    assert not rate_reached(1000, 989.9)
    assert rate_reached(None, 3.0)


@pytest.mark.parametrize("bad", [{}, [], {"generator": "x", "rate_achieved": 1}])
def test_malformed(bad: object) -> None:
    with pytest.raises(BadInputFile):
        LoadResult.from_json(bad)
