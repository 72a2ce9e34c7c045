"""The first real BPF test: a tracepoint program, loaded by the product's loader, counts
exactly the events a child process makes, through the in-kernel PID filter."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from profiler.probes import selftest

pytestmark = pytest.mark.bpf

CHILD = (
    "import os, sys\n"
    "sys.stdin.readline()\n"  # wait until the probe traces us
    "for _ in range(23): os.getppid()\n"
)


def test_23_getppid_calls_give_23_events() -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, text=True)
    assert child.stdin is not None

    def trigger() -> None:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
        child.wait(timeout=30)

    try:
        result = selftest.count_getppid(child.pid, trigger)
    finally:
        child.kill()
    assert result.events == 23
    assert result.pids == {child.pid}
    assert result.drops == 0
    # our own getppid() calls are filtered out in the kernel
    os.getppid()


def test_tiny_ring_buffer_counts_drops() -> None:
    many = CHILD.replace("range(23)", "range(200000)")
    child = subprocess.Popen([sys.executable, "-c", many], stdin=subprocess.PIPE, text=True)

    def trigger() -> None:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
        child.wait(timeout=60)

    try:
        result = selftest.count_getppid(child.pid, trigger, ringbuf_pages=1)
    finally:
        child.kill()
    assert result.drops > 0
    assert result.events + result.drops == 200000
