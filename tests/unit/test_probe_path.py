"""Which sidecar probe path runs: SMP_PROBE_PATH forces one (the contract with CI and the
benchmarks), anything else is one clear error before any BPF is loaded."""

from __future__ import annotations

import pytest

from profiler import capabilities
from profiler.errors import CapabilityMissing


@pytest.mark.parametrize("path", ["sock", "syscalls"])
def test_env_var_forces_the_path(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    monkeypatch.setenv(capabilities.PROBE_PATH_ENV, path)
    assert capabilities.probe_path() == (path, "forced by SMP_PROBE_PATH")


def test_unknown_path_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(capabilities.PROBE_PATH_ENV, "kprobes")
    with pytest.raises(ValueError, match="expected one of sock, syscalls"):
        capabilities.probe_path()


def test_probe_refuses_an_unknown_path_before_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """No root or BCC needed: the value is checked before anything is compiled."""
    from profiler.probes.sidecar import SidecarProbe

    monkeypatch.setenv(capabilities.PROBE_PATH_ENV, "fast")
    with pytest.raises(CapabilityMissing, match="SMP_PROBE_PATH='fast'"):
        SidecarProbe(lambda _batch: None)
