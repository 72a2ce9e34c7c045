"""The run's options and plan (no load is sent here)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from profiler.discovery.environment import mesh_evidence
from profiler.errors import TargetUnreachable, UsageError
from profiler.model import RunConfig
from profiler.runner import (
    _mesh_of,
    check_reachable,
    check_url,
    parse_rates,
    plan,
    rate_label,
)


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


def _named(tmp_path: Path, name: str, src: str) -> Path:
    exe = tmp_path / name
    shutil.copy2(src, exe)
    return exe


def _wait_comm(pid: int, comm: str) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if Path(f"/proc/{pid}/comm").read_text().strip() == comm:
            return
        time.sleep(0.01)
    raise AssertionError(f"PID {pid} never became {comm}")


def test_mesh_type_only_from_evidence(tmp_path: Path) -> None:
    """A plain process named envoy is an Envoy of no known mesh (never ISTIO by default); the
    same Envoy started by a process named pilot-agent is Istio's; anything else is unknown."""
    envoy = _named(tmp_path, "envoy", shutil.which("sleep") or "/bin/sleep")
    agent = _named(tmp_path, "pilot-agent", shutil.which("sh") or "/bin/sh")
    plain = subprocess.Popen([str(envoy), "30"])
    istio = subprocess.Popen([str(agent), "-c", f"{envoy} 30; true"])
    try:
        _wait_comm(plain.pid, "envoy")
        kind, proxy, why = mesh_evidence(plain.pid)
        assert (kind, proxy) == ("INVALID_MESH", "envoy") and "plain Envoy" in why
        deadline = time.monotonic() + 5
        child = None
        while child is None and time.monotonic() < deadline:
            kids = Path(f"/proc/{istio.pid}/task/{istio.pid}/children").read_text().split()
            child = int(kids[0]) if kids else None
        assert child is not None
        _wait_comm(child, "envoy")
        kind, proxy, why = mesh_evidence(child)
        assert (kind, proxy) == ("ISTIO", "envoy") and "pilot-agent" in why
        kind, proxy, why = mesh_evidence(os.getpid())  # pytest: no sidecar proxy
        assert (kind, proxy) == ("INVALID_MESH", None) and "no known sidecar proxy" in why
        # a testbed's Envoy version and concurrency never describe another process
        m = _mesh_of([os.getpid()], proxy_build="1.40.0", proxy_concurrency=2, mtls_enabled=True)
        assert m.proxy is None and m.proxy_build is None and m.proxy_concurrency is None
        assert m.mtls_enabled and m.sidecar_count == 1
    finally:
        for p in (plain, istio):
            p.kill()
            p.wait()


def _doc(*rates: tuple[float, float | None]) -> dict[str, object]:
    steps = []
    for rate, base in rates:
        step: dict[str, object] = {"rate_asked": 100.0, "mesh": {"error_rate": rate}}
        step["baseline"] = None if base is None else {"error_rate": base}
        steps.append(step)
    return {"details": {"steps": steps}}


def test_error_rate_above_the_limit_is_exit_6() -> None:
    from profiler.commands.run import check_error_rate
    from profiler.errors import TooManyErrors

    check_error_rate(_doc((0.0, 0.0), (0.01, None)), 0.01)  # at the limit: fine
    with pytest.raises(TooManyErrors, match=r"error rate 50.00% \(baseline") as e:
        check_error_rate(_doc((0.02, 0.5)), 0.01)
    assert e.value.exit_code == 6
    check_error_rate(_doc((1.0, None)), 1.0)  # --max-error-rate 1 accepts anything
