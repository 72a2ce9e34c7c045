"""The capacity benchmark's workload is what it claims: one ring-buffer record per request of
a traced app, and when the ring buffer is too small every lost record is counted."""

from __future__ import annotations

from pathlib import Path

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
    # a 4-page ring (~97 records, half full in ~1 ms at this rate) looked at every
    # POLL_CHECK_MS (25 ms): most of the ~20,000 records are lost, and every one is counted
    tiny = Engine(ringbuf_pages=4)
    try:
        fast = _rr(exe, 0.5, 40000, tiny, "500")
        assert fast["drops"] > 0
        assert fast["handled"] + fast["drops"] == fast["requests"]
    finally:
        tiny.close()
