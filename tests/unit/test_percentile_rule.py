"""One percentile rule: the same spans give the same p50..p99.9 in a capture document and in
a run bundle's step (both read the histogram the engine filled, by its own rule)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from profiler.analysis.details import sidecar_summary
from profiler.capture.document import leg_stats
from profiler.histogram import LatencyHistogram
from profiler.model import StepRecord
from profiler.units import PERCENTILES, pkey
from tests.unit.smp_fixtures import load


@pytest.mark.parametrize("n", [1, 1000])
def test_a_capture_and_a_bundle_give_the_same_percentiles_for_the_same_spans(n: int) -> None:
    # one value (a midpoint past the max must be clamped) and a heavy tail, where rank rules
    # differ most (the old bundle rule put p99.9 of these 1,000 at 17.2 ms, the capture 8.9)
    rng = np.random.default_rng(1)
    values = np.round(rng.lognormal(6.0, 1.0, size=n)).astype(np.int64)
    h = LatencyHistogram()
    h.record_many(values)
    leg = leg_stats(h)
    capture = {"duration_s": 10.0, "drops": 0, "complete": True,
               "sidecars": [{"pid": 7, "cpu_seconds": 0.1, "requests": n,
                             "legs": {"upstream": leg}}]}  # fmt: skip
    loaded = load(101.0, values.astype(float), datetime(2026, 1, 1, tzinfo=UTC))
    rec = StepRecord(step=0, rate=101.0, role="mesh", repetition=0, load=loaded, capture=capture)
    summary = sidecar_summary([rec])
    assert summary is not None
    step = summary["legs"]["upstream"]
    for p in PERCENTILES:
        key = f"{pkey(p)}_ms"
        assert step[key] == leg[key] == round(h.percentile(p) / 1000, 6), key
    assert step["min_ms"] == leg["min_ms"] == values.min() / 1000
    assert step["max_ms"] == leg["max_ms"] == values.max() / 1000
