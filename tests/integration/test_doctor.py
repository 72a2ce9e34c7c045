"""``doctor`` on this machine: kprobes and fentry absent, captures possible; without
privileges it says what is missing and exits 1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

NAMES = [
    "root",
    "bpf_syscall",
    "btf",
    "bcc",
    "bcc_compile",
    "kernel_headers",
    "tracepoints",
    "uprobes",
    "kprobes",
    "fentry",
    "sock_tracepoints",
    "ringbuf",
    "tracefs",
    "cgroup_v2",
]
CLI = [sys.executable, "-m", "profiler.cli"]


@pytest.mark.bpf
def test_doctor_json_on_this_machine() -> None:
    r = subprocess.run([*CLI, "doctor", "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    checks = {c["name"]: c for c in doc["checks"]}
    assert sorted(checks) == sorted(NAMES)
    assert all(isinstance(c["ok"], bool) and c["detail"] for c in checks.values())
    assert doc["capture_possible"] is True
    assert checks["tracepoints"]["ok"] and checks["uprobes"]["ok"]
    # this kernel is built without kprobes, and fentry programs fail to load
    assert checks["kprobes"]["ok"] is False
    assert checks["fentry"]["ok"] is False
    # kernel 6.18 has sock_recv_length/sock_send_length: the sidecar probe's fast path,
    # unless SMP_PROBE_PATH forces the fallback (CI runs both)
    assert checks["sock_tracepoints"]["ok"] is True
    assert doc["method"]["path"] == (os.environ.get("SMP_PROBE_PATH") or "sock")
    # arrival stamps: sk_data_ready on the sock path, tcp_probe data segments on the fallback
    fast = doc["method"]["path"] == "sock"
    assert doc["method"]["arrival"] == ("sk_data_ready" if fast else "tcp_probe")
    assert "net_dev_queue" in doc["method"]["writes"]


@pytest.mark.bpf
def test_doctor_without_privileges_says_what_is_missing() -> None:
    setpriv = shutil.which("setpriv")
    assert setpriv, "util-linux setpriv is part of Debian's base system"
    # root without any capability is what an unprivileged container sees
    r = subprocess.run(
        [setpriv, "--bounding-set=-all", "--inh-caps=-all", *CLI, "doctor"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert "not possible" in r.stdout and "root" in r.stdout


@pytest.mark.bpf
def test_doctor_as_a_normal_user_reports_instead_of_crashing() -> None:
    """The first command a newcomer runs; as UID 65534 it died on /sys/kernel/tracing."""
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    for args in (["doctor"], ["doctor", "--json"]):
        r = subprocess.run([*nobody, *CLI, *args], capture_output=True, text=True, timeout=60)
        assert r.returncode == 1, r.stderr
        assert "Traceback" not in r.stderr, r.stderr
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert sorted(checks) == sorted(NAMES)
    assert not checks["root"]["ok"] and "sudo" in checks["root"]["detail"]
    assert (
        not checks["tracefs"]["ok"] and "not readable by UID 65534" in checks["tracefs"]["detail"]
    )
