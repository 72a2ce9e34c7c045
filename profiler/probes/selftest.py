"""The selftest probe: count a traced process's getppid() calls through the ring buffer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from profiler.probes import loader


@dataclass(frozen=True)
class SelftestResult:
    events: int
    pids: frozenset[int]
    drops: int


def count_getppid(pid: int, trigger: Callable[[], None], ringbuf_pages: int = 16) -> SelftestResult:
    """Trace ``pid``, call ``trigger`` (which makes it run), then drain the ring buffer."""
    bpf = loader.load("selftest", {"SMP_RINGBUF_PAGES": ringbuf_pages})
    try:
        pids: set[int] = set()
        count = 0

        def on_event(_ctx: object, data: int, _size: int) -> None:
            nonlocal count
            e = bpf["smp_selftest_events"].event(data)
            count += 1
            pids.add(e.pid)

        bpf["smp_selftest_events"].open_ring_buffer(on_event)
        loader.fill_pid_filter(bpf, [pid])
        trigger()
        bpf.ring_buffer_consume()
        return SelftestResult(count, frozenset(pids), loader.drops(bpf))
    finally:
        bpf.cleanup()
