"""Statistics for load steps and captures: pure numpy, no I/O, no clock reads.

Latency data comes in as histogram buckets ``(values, counts)``: ``values`` are bucket upper
bounds (any unit; the caller keeps it consistent), ``counts`` how many samples fell in each.
Raw samples are the special case ``counts = 1``. Percentiles are always computed from (merged)
buckets, never by averaging percentiles.

Conventions:

- A percentile ``p`` is the value of the first bucket whose cumulative count reaches
  ``ceil(p/100 * n)`` (at least 1): HdrHistogram's "highest equivalent value", so it never
  understates a latency.
- Bootstrap: counts are resampled with a multinomial draw over the buckets (equivalent to
  resampling the samples with replacement), with a seeded ``np.random.Generator`` passed in.
  Intervals are percentile intervals of the bootstrap distribution.
- Mesh vs baseline significance: the Mann-Whitney U test computed exactly on bucket data (ties
  are whole buckets), with the normal approximation and tie correction; two-sided p-value.
- Repetition outliers: modified z-score ``0.6745 * |x - median| / MAD > 3.5`` (Iglewicz and
  Hoaglin); flagged, never dropped.

Impossible input (negative counts or values, empty data, mismatched shapes) raises ValueError.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from profiler.units import PERCENTILES

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Buckets = tuple[npt.ArrayLike, npt.ArrayLike]

DEFAULT_PERCENTILES = PERCENTILES
CI_PERCENTILES = (50.0, 90.0, 99.0)


@dataclass(frozen=True)
class Summary:
    """What a histogram says: count, min, mean, max and percentiles keyed by p (0-100)."""

    count: int
    min: float
    mean: float
    max: float
    percentiles: dict[float, float]


@dataclass(frozen=True)
class Interval:
    """An estimate with its confidence interval at ``level`` (e.g. 0.95)."""

    estimate: float
    low: float
    high: float
    level: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class Significance:
    """Mann-Whitney U test of mesh against baseline.

    ``effect`` is the common-language effect size: P(mesh > baseline) + P(tie) / 2.
    """

    test: str
    statistic: float
    z: float
    p_value: float
    effect: float
    alpha: float

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha


@dataclass(frozen=True)
class Spread:
    """How repetitions of one measurement vary; outliers are indexes into the input."""

    n: int
    mean: float
    std: float
    min: float
    max: float
    cv: float | None
    outliers: tuple[int, ...]


@dataclass(frozen=True)
class Overhead:
    """mesh - baseline; ``relative`` is None when the baseline is zero."""

    absolute: float
    relative: float | None


def _as_buckets(values: npt.ArrayLike, counts: npt.ArrayLike) -> tuple[FloatArray, IntArray]:
    v = np.asarray(values, dtype=np.float64).ravel()
    c_raw = np.asarray(counts).ravel()
    if v.shape != c_raw.shape:
        raise ValueError(f"{v.size} bucket values but {c_raw.size} counts")
    if v.size and not np.all(np.isfinite(v)):
        raise ValueError("bucket values must be finite")
    if v.size and v.min() < 0:
        raise ValueError("bucket values must not be negative")
    if c_raw.size and (c_raw.min() < 0 or not np.all(np.equal(np.mod(c_raw, 1), 0))):
        raise ValueError("bucket counts must be non-negative integers")
    c = c_raw.astype(np.int64)
    keep = c > 0
    v, c = v[keep], c[keep]
    order = np.argsort(v, kind="stable")
    v, c = v[order], c[order]
    # Buckets with the same value are one bucket.
    uniq, inverse = np.unique(v, return_inverse=True)
    summed = np.zeros(uniq.size, dtype=np.int64)
    np.add.at(summed, inverse, c)
    return uniq, summed


def _nonempty(values: npt.ArrayLike, counts: npt.ArrayLike) -> tuple[FloatArray, IntArray]:
    v, c = _as_buckets(values, counts)
    if c.size == 0:
        raise ValueError("no samples")
    return v, c


def _check_p(ps: Sequence[float]) -> None:
    for p in ps:
        if not 0.0 <= p <= 100.0:
            raise ValueError(f"percentile {p} is outside 0..100")


def merge(buckets: Sequence[Buckets]) -> tuple[FloatArray, IntArray]:
    """Merge several histograms into one (the only right way to combine percentiles)."""
    if not buckets:
        raise ValueError("nothing to merge")
    vs, cs = zip(*(_as_buckets(v, c) for v, c in buckets), strict=True)
    return _as_buckets(np.concatenate(vs), np.concatenate(cs))


def _ranks(n: int, ps: Sequence[float]) -> IntArray:
    return np.array([max(1, math.ceil(p / 100.0 * n)) for p in ps], dtype=np.int64)


def percentiles(
    values: npt.ArrayLike, counts: npt.ArrayLike, ps: Sequence[float] = DEFAULT_PERCENTILES
) -> dict[float, float]:
    """Percentiles (p in 0..100) of a histogram."""
    _check_p(ps)
    v, c = _nonempty(values, counts)
    idx = np.searchsorted(np.cumsum(c), _ranks(int(c.sum()), ps), side="left")
    return {float(p): float(v[i]) for p, i in zip(ps, idx, strict=True)}


def summarize(
    values: npt.ArrayLike, counts: npt.ArrayLike, ps: Sequence[float] = DEFAULT_PERCENTILES
) -> Summary:
    v, c = _nonempty(values, counts)
    n = int(c.sum())
    return Summary(
        count=n,
        min=float(v[0]),
        mean=float(np.dot(v, c) / n),
        max=float(v[-1]),
        percentiles=percentiles(v, c, ps),
    )


def _boot_matrix(
    v: FloatArray, c: IntArray, ps: Sequence[float], rng: np.random.Generator, n_boot: int
) -> FloatArray:
    """(n_boot, len(ps)) percentiles of multinomial resamples of the buckets."""
    n = int(c.sum())
    draws = rng.multinomial(n, c / n, size=n_boot)
    cum = np.cumsum(draws, axis=1)
    ranks = _ranks(n, ps)
    out = np.empty((n_boot, len(ps)), dtype=np.float64)
    for j, r in enumerate(ranks):
        out[:, j] = v[np.argmax(cum >= r, axis=1)]
    return out


def _check_boot(n_boot: int, level: float) -> None:
    if n_boot < 10:
        raise ValueError(f"n_boot must be at least 10, not {n_boot}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level {level} is outside (0, 1)")


def _interval(estimate: float, boots: FloatArray, level: float) -> Interval:
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return Interval(estimate=estimate, low=float(lo), high=float(hi), level=level)


def bootstrap_percentiles(
    values: npt.ArrayLike,
    counts: npt.ArrayLike,
    rng: np.random.Generator,
    ps: Sequence[float] = CI_PERCENTILES,
    n_boot: int = 1000,
    level: float = 0.95,
) -> dict[float, Interval]:
    """Bootstrap confidence intervals of percentiles of one histogram."""
    _check_p(ps)
    _check_boot(n_boot, level)
    v, c = _nonempty(values, counts)
    est = percentiles(v, c, ps)
    boots = _boot_matrix(v, c, ps, rng, n_boot)
    return {float(p): _interval(est[p], boots[:, j], level) for j, p in enumerate(ps)}


def bootstrap_deltas(
    mesh: Buckets,
    baseline: Buckets,
    rng: np.random.Generator,
    ps: Sequence[float] = CI_PERCENTILES,
    n_boot: int = 1000,
    level: float = 0.95,
) -> dict[float, Interval]:
    """Confidence intervals of ``percentile(mesh) - percentile(baseline)``.

    The two histograms are resampled independently (they are independent runs).
    """
    _check_p(ps)
    _check_boot(n_boot, level)
    mv, mc = _nonempty(*mesh)
    bv, bc = _nonempty(*baseline)
    pm, pb = percentiles(mv, mc, ps), percentiles(bv, bc, ps)
    diff = _boot_matrix(mv, mc, ps, rng, n_boot) - _boot_matrix(bv, bc, ps, rng, n_boot)
    return {float(p): _interval(pm[p] - pb[p], diff[:, j], level) for j, p in enumerate(ps)}


def mann_whitney(mesh: Buckets, baseline: Buckets, alpha: float = 0.05) -> Significance:
    """Two-sided Mann-Whitney U test on histogram data (is mesh latency shifted?)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha {alpha} is outside (0, 1)")
    mv, mc = _nonempty(*mesh)
    bv, bc = _nonempty(*baseline)
    grid = np.union1d(mv, bv)
    a = np.zeros(grid.size, dtype=np.float64)
    b = np.zeros(grid.size, dtype=np.float64)
    a[np.searchsorted(grid, mv)] = mc
    b[np.searchsorted(grid, bv)] = bc
    n1, n2 = a.sum(), b.sum()
    below_b = np.cumsum(b) - b
    u = float(np.sum(a * (below_b + 0.5 * b)))
    n = n1 + n2
    t = a + b
    tie = float(np.sum(t**3 - t)) / (n * (n - 1)) if n > 1 else 0.0
    var = n1 * n2 / 12.0 * ((n + 1) - tie)
    mean_u = n1 * n2 / 2.0
    if var <= 0:
        z, p = 0.0, 1.0
    else:
        diff = u - mean_u
        cc = 0.5 if diff > 0 else (-0.5 if diff < 0 else 0.0)  # continuity correction
        z = (diff - cc) / math.sqrt(var)
        p = min(1.0, math.erfc(abs(z) / math.sqrt(2.0)))
    return Significance(
        test="mann-whitney-u",
        statistic=u,
        z=float(z),
        p_value=float(p),
        effect=u / (n1 * n2),
        alpha=alpha,
    )


def spread(values: Sequence[float] | npt.ArrayLike, threshold: float = 3.5) -> Spread:
    """Spread of repeated measurements, with outliers flagged (modified z-score)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("no repetitions")
    if not np.all(np.isfinite(x)):
        raise ValueError("repetition values must be finite")
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if x.size > 1 else 0.0
    med = float(np.median(x))
    mad = float(np.median(np.abs(x - med)))
    outliers: tuple[int, ...] = ()
    if x.size >= 3:
        if mad > 0:
            score = 0.6745 * np.abs(x - med) / mad
        else:  # more than half identical: fall back to the mean absolute deviation
            meanad = float(np.mean(np.abs(x - med)))
            score = np.abs(x - med) / (1.253314 * meanad) if meanad > 0 else np.zeros_like(x)
        outliers = tuple(int(i) for i in np.flatnonzero(score > threshold))
    return Spread(
        n=int(x.size),
        mean=mean,
        std=std,
        min=float(x.min()),
        max=float(x.max()),
        cv=std / mean if mean != 0 else None,
        outliers=outliers,
    )


def overhead(mesh: float, baseline: float) -> Overhead:
    """What the mesh adds to a non-negative measurement."""
    if not (math.isfinite(mesh) and math.isfinite(baseline)):
        raise ValueError("overhead of a non-finite value")
    if mesh < 0 or baseline < 0:
        raise ValueError("overhead of a negative measurement")
    return Overhead(
        absolute=mesh - baseline,
        relative=(mesh - baseline) / baseline if baseline > 0 else None,
    )


def cpu_ms_per_1k_requests(cpu_seconds: float, requests: int) -> float | None:
    """CPU milliseconds spent per 1,000 requests; None when no request completed."""
    if cpu_seconds < 0 or requests < 0:
        raise ValueError("negative CPU time or request count")
    return cpu_seconds * 1000.0 / requests * 1000.0 if requests else None


def cores_per_1k_rps(cpu_seconds: float, duration_s: float, rps: float) -> float | None:
    """Cores busy per 1,000 req/s of traffic; None when there was no traffic."""
    if cpu_seconds < 0 or rps < 0:
        raise ValueError("negative CPU time or rate")
    if duration_s <= 0:
        raise ValueError(f"duration {duration_s} s is not positive")
    return (cpu_seconds / duration_s) / (rps / 1000.0) if rps > 0 else None


@dataclass(frozen=True)
class Difference:
    """b - a of two sets of repeated measurements, with Welch's t test (between-run variance).

    ``low``/``high``: the (1 - alpha) interval of the difference of the means; it excludes 0
    exactly when ``p_value < alpha``, so an interval and a verdict never disagree.
    """

    estimate: float
    low: float
    high: float
    p_value: float
    df: float
    alpha: float

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta (modified Lentz)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for num in (
            m * (b - m) * x / ((a + m2 - 1) * (a + m2)),
            -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-14:
            break
    return h


def _ibeta(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    front = math.exp(lbeta + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom {df} are not positive")
    return _ibeta(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(q: float, df: float) -> float:
    """The t value with P(|T| >= t) = 1 - q (e.g. q = 0.95 -> t_{0.975, df}); bisection."""
    lo, hi = 0.0, 1e6
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_two_sided_p(mid, df) > 1.0 - q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def welch(a: Sequence[float], b: Sequence[float], alpha: float = 0.05) -> Difference:
    """Welch's t test of mean(b) - mean(a) over repetitions (each needs at least two)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.size < 2 or y.size < 2:
        raise ValueError("Welch's test needs at least two repetitions on each side")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("non-finite repetition value")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha {alpha} is outside (0, 1)")
    d = float(y.mean() - x.mean())
    va, vb = float(x.var(ddof=1)) / x.size, float(y.var(ddof=1)) / y.size
    se = math.sqrt(va + vb)
    if se == 0.0:  # no spread at all: any difference is exact
        return Difference(d, d, d, 0.0 if d else 1.0, float(x.size + y.size - 2), alpha)
    df = (va + vb) ** 2 / (va**2 / (x.size - 1) + vb**2 / (y.size - 1))
    p = t_two_sided_p(d / se, df)
    half = t_quantile(1.0 - alpha, df) * se
    return Difference(d, d - half, d + half, p, df, alpha)
