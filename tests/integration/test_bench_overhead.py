"""The overhead benchmark measures what it says: the C loop makes exactly the system calls it
claims (counted by the kernel's own per-program run counter), and the profiler harness counts
the requests it was sent, through the daemon's /metrics and through the capture's file."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _testbed import send_requests

from benchmarks import overhead
from benchmarks.common import Profile, build_c
from profiler.capture.engine import Engine
from profiler.probes import loader

pytestmark = pytest.mark.bpf


@pytest.mark.parametrize("path", ["syscalls", "sock"])
def test_tax_loop_makes_the_calls_it_claims(path: str, tmp_path: Path) -> None:
    """Counted by the probe's own programs (bpf_stats run counts) on a loop nobody traces:
    syscalls path, sys_enter_read runs for every read (the file's and the socket's); sock
    path, sock_recv_length runs for the socket reads only and no syscall program is loaded."""
    exe = build_c(overhead.TAX_SOURCE, tmp_path)
    with overhead.probe_path_env(path):
        engine = Engine(ringbuf_pages=16)  # no targets: every program filters the loop out
    try:
        bpf = overhead._bpf_of(engine)
        # another tracer on the machine is seen (here: this process's own probe)
        assert overhead.foreign_tracers(set())[os.getpid()] >= 2
        assert os.getpid() not in overhead.foreign_tracers({os.getpid()})
        with loader.bpf_stats_enabled() as on:
            assert on
            before = loader.prog_stats(bpf)
            out = os.popen(f"{exe} 3 0.1").read()
            after = loader.prog_stats(bpf)
        tax = overhead.parse_tax(out)
    finally:
        engine.close()
    runs = {k: after[k][0] - before[k][0] for k in after}
    assert [tax[c]["iters"] for c in overhead.TAX_CALLS] == [40000, 30000, 6000, 3000]
    sock_reads = overhead.tax_syscalls(tax["sockpair"], "sockpair") // 2
    tcp_reads = overhead.tax_syscalls(tax["tcp"], "tcp") // 2
    if path == "syscalls":
        # every read() of /dev/zero and the read half of every socket pair, warm-up included
        reads = overhead.tax_syscalls(tax["read"], "read") + sock_reads + tcp_reads
        assert runs["tracepoint__syscalls__sys_enter_read"] >= reads
    else:
        assert not [k for k in runs if "syscalls" in k]
        assert runs["raw_tracepoint__sock_recv_length"] >= sock_reads + tcp_reads
        assert runs["raw_tracepoint__sock_send_length"] >= sock_reads + tcp_reads
        # the per-packet hooks run for the TCP pair's packets (untraced) and not the unix one's
        if "raw_tracepoint__sk_data_ready" in runs:
            assert runs["raw_tracepoint__sk_data_ready"] >= tcp_reads
    for c in overhead.TAX_CALLS:
        assert 0 < tax[c]["best"] <= tax[c]["median"] <= max(tax[c]["runs"])
    # a syscall costs more than nothing and a socket pair more than a getppid
    assert tax["getppid"]["best"] < tax["sockpair"]["best"] < tax["tcp"]["best"]


@pytest.mark.testbed
@pytest.mark.envoy
@pytest.mark.parametrize("path", ["sock", "syscalls"])
@pytest.mark.parametrize("config", ["daemon", "capture"])
def test_profiler_process_counts_what_was_sent(
    config: str, path: str, testbed_factory: Callable[..., Any], tmp_path: Path
) -> None:
    tb = testbed_factory()
    bench = overhead.Bench(tb, Profile("t", 1, 1.0, 1.0, 1, 1.0, 1), tmp_path)
    prof = overhead.ProfilerProc(config, path, tb, tmp_path)
    try:
        _, offset = overhead.count_lines(bench.access_log, 0)
        before, _ = prof.settle(0.0)
        assert [r["status"] for r in send_requests(tb, 37, "ov")] == [200] * 37
        envoy, _ = bench.access_lines_settled(offset)
        after, drops = prof.settle(overhead.DAEMON_INTERVAL_S * 1.6)
    except BaseException:
        prof.kill()
        raise
    before_stop = prof.cpu_s()
    cpu = prof.stop()
    assert envoy == 37
    # the CPU read during the run and wait4's total at the end count the same things: the
    # compile (seconds, in the capture's start-up thread) is in both, so stopping after 37
    # requests adds well under half a second
    assert before_stop > 0.2 and 0 <= cpu - before_stop < 0.5
    if config == "daemon":
        assert before is not None and after is not None
        assert after - before == 37 and drops == 0
    else:
        assert prof.doc is not None
        assert sum(s["requests"] for s in prof.doc["sidecars"]) == 37
        assert prof.doc["drops"] == 0
        assert prof.doc["probe_path"] == path  # SMP_PROBE_PATH reached the profiler
