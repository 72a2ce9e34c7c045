"""The analysis benchmark's child process on a small input: every app/sidecar pair is joined
and the synthetic legs' medians come back out (it loads the probe once, for its record type)."""

from __future__ import annotations

import pytest

from benchmarks.analysis import _child

pytestmark = pytest.mark.bpf


def test_analysis_correlates_every_pair() -> None:
    r = _child(4000)  # in a child process, as the benchmark runs it
    assert r["spans"] == 4000 and r["requests"] == 2000 and r["joined"] == 2000
    assert r["p50_ms"]["request_proxy"] == pytest.approx(0.060, abs=0.005)
    assert r["p50_ms"]["app"] == pytest.approx(1.0, rel=0.03)
    assert r["p50_ms"]["loopback"] == pytest.approx(0.080, abs=0.008)
    assert r["p50_ms"]["mesh_added"] == pytest.approx(0.19, rel=0.1)
    assert r["ingest_s"] > 0 and r["peak_rss_mb"] > 0
