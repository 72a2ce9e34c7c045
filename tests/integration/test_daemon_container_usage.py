"""A container's CPU and memory from the kernel's own cgroup accounting, with known answers.

CPU: real cgroup v2 leaves (kubelet-style, in the unified hierarchy) holding a stand-in
proxy and an app that each burn a CPU time they measure themselves; the agent's per-
container CPU must match each, and not each other's. Memory: this machine binds the memory
controller to cgroup v1, where processes must never be moved, so the v1 arithmetic is checked
on the test's own memory cgroup (read only) with a child that touches exactly 64 MiB."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _kubepods import kubelet_pod, node_root
from test_daemon_agent import RecordingEngine

from profiler.capture.memory import cgroup_usage
from profiler.daemon.agent import Agent, NodeDiscovery
from profiler.daemon.metrics import SnapshotCollector
from profiler.discovery.cgroups import cgroup_of, v1_mount

pytestmark = pytest.mark.testbed
MiB = 2**20

# Names itself (comm), burns CPU until its own process_time reaches the target, writes it,
# touches N MiB, says "ready" and sleeps.
WORKER = r"""
import mmap, sys, time
name, burn, mib, out = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
open("/proc/self/comm", "w").write(name)
x = 0
while time.process_time() < burn:
    x += 1
buf = mmap.mmap(-1, max(mib, 1) * 2**20)
for i in range(0, mib * 2**20, 4096):
    buf[i] = 1
open(out, "w").write(repr(time.process_time()))
print("ready", flush=True)
time.sleep(600)
"""


def _start(script: Path, name: str, burn: float, mib: int, out: Path) -> list[str]:
    return [sys.executable, str(script), name, str(burn), str(mib), str(out)]


def _wait_for(paths: list[Path], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() and p.read_text() for p in paths):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_container_cpu_from_a_real_v2_leaf(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    proxy_out, app_out = tmp_path / "proxy", tmp_path / "app"
    with node_root("smp-usage") as root, kubelet_pod(root, pause=False) as pod:
        # The worker burns after it is moved into its leaf (it reads argv first, then
        # loops: the move happens within the interpreter's start-up, before the burn)
        pod.add_container("istio-proxy", _start(script, "envoy", 0.7, 8, proxy_out))
        pod.add_container("app", _start(script, "app", 0.3, 8, app_out))
        _wait_for([proxy_out, app_out])
        proxy_cpu, app_cpu = float(proxy_out.read_text()), float(app_out.read_text())
        agent = Agent(RecordingEngine(), NodeDiscovery(cgroup_root=str(root)), SnapshotCollector())
        agent.reconcile()
        got = {u.labels["container"]: u for u in agent.container_usage()}
        assert set(got) == {"envoy", "app"}
        # the cgroup counts from the process's move on; the process counts from its exec:
        # the interpreter's start-up before the move (a few ms) is the only difference
        for name, want in (("envoy", proxy_cpu), ("app", app_cpu)):
            cpu = got[name].cpu_seconds
            assert cpu is not None
            print(f"{name}: cgroup {cpu:.3f} s, process {want:.3f} s")
            assert want - 0.15 <= cpu <= want + 0.02, (name, cpu, want)
        assert got["envoy"].cpu_seconds > got["app"].cpu_seconds + 0.2  # not swapped
        # the unified hierarchy here has no memory controller: memory unknown, not zero
        assert got["envoy"].memory_working_set_bytes is None


def _own_memory_cgroup() -> Path:
    return Path(v1_mount("memory")) / cgroup_of(
        0 if False else __import__("os").getpid(), "memory"
    ).lstrip("/")


def test_v1_working_set_of_64_mib_touched(tmp_path: Path) -> None:
    d = _own_memory_cgroup()
    assert cgroup_usage(d) is not None, d
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    deltas = []
    for i in range(5):  # paired: with the child, then without, alternated
        before = cgroup_usage(d)
        out = tmp_path / f"out{i}"
        child = subprocess.Popen(
            _start(script, "toucher", 0.0, 64, out), stdout=subprocess.PIPE, text=True
        )  # inherits this cgroup: nothing is moved
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        during = cgroup_usage(d)
        child.kill()
        child.wait()
        after = cgroup_usage(d)
        assert before and during and after
        assert before.working_set is not None and during.working_set is not None
        assert after.working_set is not None
        deltas.append(during.working_set - (before.working_set + after.working_set) / 2)
    # 64 MiB of anonymous pages plus an interpreter (~8-12 MiB); never 0, never doubled
    med = statistics.median(deltas)
    print(f"v1 working set delta, MiB: {[round(x / MiB, 1) for x in deltas]}")
    assert 64 * MiB <= med <= 84 * MiB, [round(x / MiB, 1) for x in deltas]
