"""profiler.stats: percentiles of merged histograms, bootstrap intervals, significance."""

from __future__ import annotations

import numpy as np
import pytest

from profiler import stats


def _rng(seed: int = 7) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_percentiles_single_sample() -> None:
    p = stats.percentiles([1234.0], [1])
    assert set(p) == set(stats.DEFAULT_PERCENTILES)
    assert all(v == 1234.0 for v in p.values())
    s = stats.summarize([1234.0], [1])
    assert (s.count, s.min, s.mean, s.max) == (1, 1234.0, 1234.0, 1234.0)


def test_percentiles_of_raw_samples_match_nearest_rank() -> None:
    x = np.arange(1, 101, dtype=float)  # 1..100
    p = stats.percentiles(x, np.ones_like(x), [50, 90, 99, 100, 0])
    assert p == {50.0: 50.0, 90.0: 90.0, 99.0: 99.0, 100.0: 100.0, 0.0: 1.0}


def test_percentiles_ignore_empty_buckets_and_order() -> None:
    p = stats.percentiles([30.0, 10.0, 20.0, 99.0], [1, 8, 1, 0], [50, 90, 100])
    assert p == {50.0: 10.0, 90.0: 20.0, 100.0: 30.0}


def test_empty_input_raises() -> None:
    with pytest.raises(ValueError, match="no samples"):
        stats.percentiles([], [])
    with pytest.raises(ValueError, match="no samples"):
        stats.percentiles([1.0, 2.0], [0, 0])
    with pytest.raises(ValueError):
        stats.merge([])
    with pytest.raises(ValueError):
        stats.spread([])


@pytest.mark.parametrize(
    ("values", "counts"),
    [([1.0, 2.0], [1]), ([-1.0], [1]), ([1.0], [-1]), ([1.0], [0.5]), ([float("nan")], [1])],
)
def test_impossible_input_raises(values: list[float], counts: list[float]) -> None:
    with pytest.raises(ValueError):
        stats.percentiles(values, counts)


def test_percentile_out_of_range_raises() -> None:
    with pytest.raises(ValueError, match="outside"):
        stats.percentiles([1.0], [1], [101])


def test_merge_is_not_averaging_percentiles() -> None:
    # Worker A: 99 fast requests; worker B: 1 slow request. The merged p99 is fast;
    # averaging the workers' p99s would give (1 + 500) / 2.
    fast = ([1.0], [99])
    slow = ([500.0], [1])
    v, c = stats.merge([fast, slow])
    assert stats.percentiles(v, c, [99, 100]) == {99.0: 1.0, 100.0: 500.0}
    assert int(c.sum()) == 100
    # Same bucket from two sources is summed.
    v2, c2 = stats.merge([([5.0, 7.0], [2, 3]), ([5.0], [4])])
    assert v2.tolist() == [5.0, 7.0] and c2.tolist() == [6, 3]


def test_bootstrap_interval_contains_estimate_and_true_value() -> None:
    rng = _rng()
    samples = rng.lognormal(mean=7.0, sigma=0.3, size=20_000)  # microseconds
    edges = np.round(samples)
    v, c = np.unique(edges, return_counts=True)
    cis = stats.bootstrap_percentiles(v, c, _rng(1), n_boot=400)
    true_p50 = float(np.exp(7.0))
    for p, ci in cis.items():
        assert ci.low <= ci.estimate <= ci.high, p
    assert cis[50.0].contains(true_p50) or abs(cis[50.0].estimate - true_p50) / true_p50 < 0.01
    # The tail is less certain than the median.
    assert (cis[99.0].high - cis[99.0].low) > (cis[50.0].high - cis[50.0].low)


def test_bootstrap_is_reproducible_with_the_same_seed() -> None:
    v, c = [1.0, 2.0, 3.0, 10.0], [50, 30, 15, 5]
    a = stats.bootstrap_percentiles(v, c, _rng(3), n_boot=100)
    b = stats.bootstrap_percentiles(v, c, _rng(3), n_boot=100)
    assert a == b


def test_bootstrap_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        stats.bootstrap_percentiles([1.0], [1], _rng(), n_boot=1)
    with pytest.raises(ValueError):
        stats.bootstrap_percentiles([1.0], [1], _rng(), level=1.0)


def test_bootstrap_deltas_find_a_known_shift() -> None:
    rng = _rng(11)
    base = rng.normal(1000.0, 50.0, 5000).round()
    mesh = base + 300.0  # the sidecar adds exactly 300 us to every request
    bv, bc = np.unique(base, return_counts=True)
    mv, mc = np.unique(mesh, return_counts=True)
    d = stats.bootstrap_deltas((mv, mc), (bv, bc), _rng(2), n_boot=300)
    assert d[50.0].estimate == pytest.approx(300.0, abs=1.0)
    assert d[50.0].low < 300.0 + 1.0 and d[50.0].high > 300.0 - 1.0
    assert d[50.0].low > 250.0


def test_mann_whitney_detects_shift_and_not_noise() -> None:
    rng = _rng(5)
    a = rng.normal(1000.0, 50.0, 2000).round()
    b = rng.normal(1000.0, 50.0, 2000).round()
    same = stats.mann_whitney(np.unique(a, return_counts=True), np.unique(b, return_counts=True))
    assert not same.significant
    assert 0.4 < same.effect < 0.6
    shifted = stats.mann_whitney(
        np.unique(a + 30.0, return_counts=True), np.unique(b, return_counts=True)
    )
    assert shifted.significant and shifted.p_value < 1e-6
    assert shifted.effect > 0.6 and shifted.z > 0


def test_mann_whitney_identical_constant_samples() -> None:
    r = stats.mann_whitney(([5.0], [10]), ([5.0], [10]))
    assert r.p_value == 1.0 and r.effect == 0.5 and not r.significant


def test_spread_flags_outliers_without_dropping() -> None:
    s = stats.spread([10.0, 10.2, 9.9, 10.1, 30.0])
    assert s.n == 5 and s.outliers == (4,)
    assert s.max == 30.0  # still counted
    assert stats.spread([1.0, 1.0, 1.0]).outliers == ()
    one = stats.spread([4.0])
    assert (one.n, one.std, one.outliers) == (1, 0.0, ())


def test_overhead_when_baseline_is_zero() -> None:
    o = stats.overhead(2.5, 0.0)
    assert o.absolute == 2.5 and o.relative is None
    assert stats.overhead(0.0, 0.0).relative is None


def test_overhead_relative_and_negative_input() -> None:
    o = stats.overhead(1.5, 1.0)
    assert o.absolute == 0.5 and o.relative == pytest.approx(0.5)
    with pytest.raises(ValueError):
        stats.overhead(-1.0, 1.0)


def test_cpu_per_request_and_cores_per_rate() -> None:
    # 0.5 CPU-seconds over 10 s for 5,000 requests at 500 req/s:
    assert stats.cpu_ms_per_1k_requests(0.5, 5000) == pytest.approx(100.0)
    assert stats.cores_per_1k_rps(0.5, 10.0, 500.0) == pytest.approx(0.1)
    assert stats.cpu_ms_per_1k_requests(0.5, 0) is None
    assert stats.cores_per_1k_rps(0.5, 10.0, 0.0) is None
    with pytest.raises(ValueError):
        stats.cores_per_1k_rps(0.5, 0.0, 10.0)
