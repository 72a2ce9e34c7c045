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
        # nobody reads for 0.5 s while ~20,000 records arrive
        fast = _rr(exe, 0.5, 40000, engine, "500")
        assert fast["drops"] > 0
        assert fast["handled"] + fast["drops"] == fast["requests"]
    finally:
        engine.close()
