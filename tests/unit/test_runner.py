"""The run's options and plan (no load is sent here)."""

from __future__ import annotations

import pytest

from profiler.errors import TargetUnreachable, UsageError
from profiler.model import RunConfig
from profiler.runner import check_reachable, check_url, parse_rates, plan, rate_label


def _cfg(**kw: object) -> RunConfig:
    base: dict[str, object] = dict(
        target="http://127.0.0.1:1/",
        rates=[100.0, 200.0],
        step_duration_s=1.0,
        warmup_s=0.0,
        repeat=2,
        generator="builtin",
        connections=2,
    )
    base.update(kw)
    return RunConfig(**base)  # type: ignore[arg-type]


def test_parse_rates() -> None:
    assert parse_rates("100, 500,1000") == [100.0, 500.0, 1000.0]
    assert parse_rates("max,100") == [0.0, 100.0]  # 0 = as fast as possible (SMP rps 0)
    assert rate_label(0.0) == "max" and rate_label(100.0) == "100"
    for bad in ("", "100,x", "0", "-5", "1e9"):
        with pytest.raises(UsageError):
            parse_rates(bad)


def test_check_url() -> None:
    assert check_url("http://a:1/x") == "http://a:1/x"
    for bad in ("https://a/", "a:80", "http:///x"):
        with pytest.raises(UsageError):
            check_url(bad)


def test_plan_alternates_mesh_and_baseline_per_repetition() -> None:
    w = plan(_cfg(baseline_target="http://127.0.0.1:2/"), captured=True)
    assert [(x.step, x.repetition, x.role) for x in w[:4]] == [
        (0, 0, "mesh"),
        (0, 0, "baseline"),
        (0, 1, "mesh"),
        (0, 1, "baseline"),
    ]
    assert len(w) == 8
    assert all(x.captured == (x.role == "mesh") for x in w)
    assert not any(x.captured for x in plan(_cfg(), captured=False))


def test_unreachable_target_is_target_unreachable() -> None:
    with pytest.raises(TargetUnreachable, match="cannot connect to http://127"):
        check_reachable("http://127.0.0.1:1/", None, timeout_s=1.0)
