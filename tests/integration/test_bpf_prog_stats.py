"""loader.prog_stats on a real program: the kernel counts every run while stats are on."""

from __future__ import annotations

import os

import pytest

from profiler.probes import loader

pytestmark = pytest.mark.bpf


def test_prog_stats_count_runs_and_sysctl_is_restored() -> None:
    before = loader.BPF_STATS_SYSCTL.read_text()
    bpf = loader.load("selftest", {"SMP_RINGBUF_PAGES": 1})
    try:
        name = "tracepoint__syscalls__sys_enter_getppid"
        with loader.bpf_stats_enabled() as on:
            assert on
            assert loader.BPF_STATS_SYSCTL.read_text().strip() == "1"
            cnt0, ns0 = loader.prog_stats(bpf)[name]
            for _ in range(5000):
                os.getppid()  # not traced (no PID in the filter): the program still runs
            cnt1, ns1 = loader.prog_stats(bpf)[name]
        assert cnt1 - cnt0 >= 5000
        assert ns1 > ns0
        # the filter lookup alone: well under 10 us a run
        assert (ns1 - ns0) / (cnt1 - cnt0) < 10_000
    finally:
        bpf.cleanup()
    assert loader.BPF_STATS_SYSCTL.read_text() == before
