"""MeshMark: MUEs per class, weights, the 0-100 scale, what is left out."""

from __future__ import annotations

import pytest

from profiler.meshmark import StepCosts, compute


def test_meshmark_free_mesh_scores_100() -> None:
    m = compute([StepCosts(100, 0.0, 1.0, 0.0, 10.0, 1.0, 2.0, 0.0, 0.0)])
    assert m.score == pytest.approx(100.0) and m.missing == []


def test_meshmark_by_hand() -> None:
    # cpu: sidecar 1 of 4 -> 0.75; memory: 10 of 40 -> 0.75;
    # latency: p50 0.5 of 2 -> 0.75 (weight 1), p99 2 of 4 -> 0.5 (weight 1.5) -> 0.6
    m = compute([StepCosts(100, 1.0, 3.0, 10.0, 30.0, 2.0, 4.0, 0.5, 2.0)])
    assert m.classes == pytest.approx({"cpu": 0.75, "memory": 0.75, "latency": 0.6})
    assert m.score == pytest.approx(100 * (0.75 + 0.75 + 0.6) / 3)


def test_meshmark_top_rate_weighs_more_for_cpu() -> None:
    low = StepCosts(100, 1.0, 1.0)  # 0.5
    high = StepCosts(1000, 1.0, 3.0)  # 0.75, weight 1.5
    m = compute([low, high])
    assert m.classes["cpu"] == pytest.approx((0.5 + 0.75 * 1.5) / 2.5)
    assert m.missing == ["memory", "latency"]


def test_meshmark_latency_share_is_clamped() -> None:
    # A/B delta bigger than the latency itself (noise) cannot make a MUE negative.
    m = compute([StepCosts(100, latency_p50_ms=1.0, sidecar_p50_ms=3.0)])
    assert m.classes == {"latency": 0.0} and m.score == 0.0


def test_meshmark_nothing_measured_and_bad_input() -> None:
    assert compute([StepCosts(100)]).score is None
    with pytest.raises(ValueError):
        compute([])
    with pytest.raises(ValueError):
        compute([StepCosts(100, -1.0, 1.0)])
