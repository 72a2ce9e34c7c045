"""The sidecar probe in a child PID namespace (kind, k3d, minikube: the node is itself a
container): PIDs as the caller sees them, and a self-test that turns a blind probe into one
clear error instead of a capture that counts zero."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from profiler.errors import CapabilityMissing

pytestmark = [pytest.mark.bpf, pytest.mark.envoy]
HERE = Path(__file__).resolve().parent
N = 23


def test_capture_in_child_pid_namespace_counts_every_request(tmp_path: Path) -> None:
    """Envoy, its app and ``capture --pid`` all in ``unshare --pid --fork --mount-proc``:
    every request gets a span (before: 0 counted, exit 0, no warning)."""
    r = subprocess.run(
        [
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            sys.executable,
            str(HERE.parent / "helpers" / "pidns_driver.py"),
            str(tmp_path),
            str(N),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stderr + (tmp_path / "driver.json").read_text()
    info = json.loads((tmp_path / "driver.json").read_text())
    assert info["my_pid"] == 1  # really in a new PID namespace
    assert info["ok"] == N
    assert "Traceback" not in info["capture_stderr"]
    doc = json.loads((tmp_path / "capture.json").read_text())
    assert doc["probe_path"] == (os.environ.get("SMP_PROBE_PATH") or "sock")
    sidecar, app = doc["sidecars"][0], doc["apps"][0]
    # the PIDs of the document are the namespace's, as the caller gave them
    assert (sidecar["pid"], app["pid"]) == (info["envoy_pid"], info["app_pid"])
    assert sidecar["comm"] == "envoy"
    assert sidecar["requests"] == N
    assert app["requests"] == N
    assert sidecar["legs"]["sidecar_total"]["count"] == N
    assert app["legs"]["loopback"]["count"] == N  # joined by request id across both
    assert sidecar["bytes_rx"] > 0 and app["bytes_rx"] > 0


def test_self_test_refuses_a_probe_that_cannot_see_its_targets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A PID translation that is wrong (here: the learning path given a tgid that does not
    exist in the namespace) must stop the capture before it starts, with one clear line."""
    from profiler.probes import sidecar

    monkeypatch.setattr(sidecar, "INIT_PID_NS_INO", -1)  # take the learning path
    monkeypatch.setattr(sidecar, "_ns_tgid", lambda pid: 0x7FFFFFF0)
    with pytest.raises(CapabilityMissing, match="did not see this process's own socket"):
        sidecar.SidecarProbe(lambda _batch: None)


def test_learning_path_sees_the_profiler_in_the_initial_namespace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The namespace translation (bpf_get_ns_current_pid_tgid against the target's own
    namespace) also holds in the initial namespace: the self-test passes through it."""
    from profiler.probes import sidecar

    monkeypatch.setattr(sidecar, "INIT_PID_NS_INO", -1)
    probe = sidecar.SidecarProbe(lambda _batch: None)  # raises if the self-test fails
    try:
        filt = probe._bpf["smp_filter_pids"]
        learning = probe._bpf["smp_learning"]
        assert len(filt) == 0  # the profiler itself was learned, then removed
        assert learning[learning.Key(0)].value == 0
    finally:
        probe.close()
