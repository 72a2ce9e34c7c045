"""LatencyHistogram: exactness below 256 us, <= 0.4% relative error above, merge, JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from profiler.errors import BadInputFile
from profiler.histogram import N_BUCKETS, LatencyHistogram, bucket_index


def test_buckets_cover_every_value_once() -> None:
    v = np.arange(0, 300_000)
    idx = bucket_index(v)
    assert (np.diff(idx) >= 0).all()
    assert idx[-1] < N_BUCKETS
    h = LatencyHistogram()
    h.record_many(v)
    upper, counts = h.buckets()
    assert counts.sum() == v.size
    assert (np.diff(upper) > 0).all()


def test_small_values_are_exact() -> None:
    h = LatencyHistogram()
    for us in (3, 7, 7, 200, 255):
        h.record(us)
    assert h.percentile(50) == 7
    assert h.percentile(100) == 255
    assert h.min == 3 and h.max == 255
    assert h.mean == pytest.approx((3 + 7 + 7 + 200 + 255) / 5)


def test_relative_error_under_half_percent() -> None:
    rng = np.random.default_rng(1)
    v = rng.lognormal(mean=8, sigma=1.5, size=200_000).astype(np.int64) + 1
    h = LatencyHistogram()
    h.record_many(v)
    s = np.sort(v)
    for p in (1, 10, 50, 90, 99, 99.9):
        # the value of rank ceil(p% of n); numpy's inverted_cdf is off by one at 99.9 (float)
        exact = float(s[round(p * v.size / 100) - 1])
        assert h.percentile(p) == pytest.approx(exact, rel=0.004), p


def test_percentiles_single_sample() -> None:
    h = LatencyHistogram()
    h.record(12_345)
    assert h.percentile(0) == h.percentile(50) == h.percentile(100) == 12_345


def test_empty_histogram_is_nan() -> None:
    h = LatencyHistogram()
    assert h.count == 0
    assert np.isnan(h.percentile(99)) and np.isnan(h.mean) and np.isnan(h.min)


def test_merge_equals_recording_everything_in_one() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.integers(100, 5000, 1000), rng.integers(10_000, 900_000, 10)
    ha, hb, hall = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    ha.record_many(a)
    hb.record_many(b)
    hall.record_many(np.concatenate([a, b]))
    ha.merge(hb)
    assert ha == hall
    # the merged p99.5 sees the slow worker; the mean of the two workers' p99.5 does not
    assert ha.percentile(99.5) > 10_000


def test_record_with_count_and_errors() -> None:
    h = LatencyHistogram()
    h.record(1000, count=9)
    h.record(50_000)
    assert h.count == 10
    assert h.percentile(90) == pytest.approx(1000, rel=0.004)
    assert h.percentile(91) == pytest.approx(50_000, rel=0.004)
    with pytest.raises(ValueError):
        h.record(-1)
    with pytest.raises(ValueError):
        h.percentile(101)


def test_huge_values_clamp_to_top_bucket() -> None:
    h = LatencyHistogram()
    h.record(10**15)
    assert h.count == 1 and h.max == 10**15
    assert h.percentile(100) <= 10**15


def test_json_round_trip_is_compact() -> None:
    h = LatencyHistogram()
    h.record_many(np.arange(1000, 2000))
    d = json.loads(json.dumps(h.to_json()))
    assert len(d["index"]) < 300
    assert LatencyHistogram.from_json(d) == h


@pytest.mark.parametrize(
    "bad",
    [
        {"scheme": "x", "unit": "us"},
        [],
        {"scheme": "log-linear-7", "unit": "us", "index": [1], "counts": [1, 2]},
        {"scheme": "log-linear-7", "unit": "us", "index": [99999], "counts": [1]},
        {
            "scheme": "log-linear-7",
            "unit": "us",
            "index": [1],
            "counts": [1],
            "count": 5,
            "sum": 1,
            "min": 1,
            "max": 1,
        },
    ],
)
def test_from_json_rejects_malformed(bad: object) -> None:
    with pytest.raises(BadInputFile):
        LatencyHistogram.from_json(bad)


def test_scalar_record_uses_the_same_buckets_as_arrays() -> None:
    from profiler.histogram import MAX_TRACKABLE_US, _scalar_index, bucket_index

    values = [0, 1, 255, 256, 257, 511, 512, 1000, 12345, 10**6, 2**37, MAX_TRACKABLE_US]
    values += [MAX_TRACKABLE_US + 5, *range(0, 70000, 7)]
    assert [_scalar_index(v) for v in values] == [int(bucket_index(v)) for v in values]


def test_table_index_agrees_with_the_arithmetic_everywhere() -> None:
    """Values below 65.5 ms take their bucket from a table: the same as the arithmetic for
    every one of them, across the table's edge, and above it (an off-by-one in the table or
    in its edge would move a bucket)."""
    from profiler.histogram import _TABLE_US, _computed_index, _scalar_index

    v = np.arange(0, 2 * _TABLE_US + 5, dtype=np.int64)
    assert (bucket_index(v) == _computed_index(v)).all()
    for x in (_TABLE_US - 1, _TABLE_US, _TABLE_US + 1):
        assert int(bucket_index(x)) == _scalar_index(x)
    assert bucket_index([[3, _TABLE_US + 7]]).shape == (1, 2)
