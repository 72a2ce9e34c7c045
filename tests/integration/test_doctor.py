"""``doctor`` on this machine, against facts of the machine read independently of it (the
kernel's event sources, tracefs, BTF, mounts): on any kernel its answers must match those;
without privileges it says what is missing and exits 1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

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
TRACEFS = next(
    (p for p in (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing")) if p.is_dir()),
    Path("/sys/kernel/tracing"),
)
SOURCES = Path("/sys/bus/event_source/devices")


def _readable(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            f.read(1)
    except OSError:
        return False
    return True


def machine_facts() -> dict[str, bool]:
    """What the kernel shows, not what BCC managed: the PMUs BPF attaches kprobes and uprobes
    through (or tracefs' text interface to them), dynamic ftrace (fentry's trampolines need
    it: a kernel that keeps its function list from root, like this one, refuses fentry
    programs too), the tracepoints' own directories, BTF and the cgroup2 mount."""
    events = TRACEFS / "events"
    return {
        "kprobes": (SOURCES / "kprobe").exists() or (TRACEFS / "kprobe_events").exists(),
        "uprobes": (SOURCES / "uprobe").exists() or (TRACEFS / "uprobe_events").exists(),
        "fentry": Path("/sys/kernel/btf/vmlinux").exists()
        and _readable(TRACEFS / "available_filter_functions"),
        "tracepoints": (events / "syscalls" / "sys_enter_getppid").is_dir(),
        "sock_tracepoints": all(
            (events / "sock" / e).is_dir() for e in ("sock_recv_length", "sock_send_length")
        ),
        "btf": Path("/sys/kernel/btf/vmlinux").exists(),
        "cgroup_v2": any(
            line.split()[2] == "cgroup2"
            for line in Path("/proc/self/mounts").read_text().splitlines()
        ),
    }


@pytest.mark.bpf
def test_doctor_json_on_this_machine() -> None:
    r = subprocess.run([*CLI, "doctor", "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    checks = {c["name"]: c for c in doc["checks"]}
    assert sorted(checks) == sorted(NAMES)
    assert all(isinstance(c["ok"], bool) and c["detail"] for c in checks.values())
    assert doc["capture_possible"] is True
    # each answer is the machine's: a kernel without kprobes (this one) says no, one with
    # them yes; the same for fentry, the sock tracepoints and the rest
    facts = machine_facts()
    assert {k: checks[k]["ok"] for k in facts} == facts
    # the sidecar probe's fast path where the sock tracepoints exist, unless SMP_PROBE_PATH
    # forces the fallback (CI runs both)
    expected = "sock" if facts["sock_tracepoints"] else "syscalls"
    assert doc["method"]["path"] == (os.environ.get("SMP_PROBE_PATH") or expected)
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
