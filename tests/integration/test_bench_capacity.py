"""The capacity benchmark's workload is what it claims: one ring-buffer record per request of
a traced app, and when the ring buffer is too small every lost record is counted."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks.capacity import _rr, build
from profiler.capture.engine import Engine

pytestmark = pytest.mark.bpf


def test_rr_gives_one_record_per_request_and_counts_drops(tmp_path: Path) -> None:
    exe = build(tmp_path)
    engine = Engine(ringbuf_pages=64)  # ~960 records: 100 ms at 1,000 req/s fits easily
    try:
        slow = _rr(exe, 0.5, 1000, engine, "100")
        assert 400 <= slow["requests"] <= 501
        assert slow["drops"] == 0
        assert slow["handled"] == slow["requests"]
    finally:
        engine.close()
    # a 4-page ring (~97 records, half full in ~1 ms at this rate) whose reader falls
    # behind (it reads nothing until the load is over): most of the ~20,000 records are
    # lost, and every one is counted (a reader that keeps up, woken every ~24 records, may
    # lose none)
    tiny = Engine(ringbuf_pages=4)
    try:
        fast = _rr(exe, 0.5, 40000, _Stalled(tiny), "100")
        assert fast["drops"] > 0
        assert fast["handled"] + fast["drops"] == fast["requests"]
    finally:
        tiny.close()


class _Stalled:
    """An engine whose reader falls behind: its polls sleep and read nothing."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def poll(self, timeout_ms: int) -> None:
        time.sleep(timeout_ms / 1000)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)
