"""Completeness at saturation: wrk (16 connections, no request ids) through the testbed's
1-worker Envoy; of the requests Envoy logged inside the capture window, >= 99% have a span
(joined one to one by the id Envoy generated, which the probe adopts from the upstream write),
and every loss is in a counter.

Issue 11's goal is 99.5%: `make bench` reports it against that target. Here, run beside the rest
of the suite on 2 cores, the probe's thread-order pairing loses 0.1-0.6% (measured: 60, 88, 214
of 55-66k alone; 313 of 52k in a loaded CI run), each one a request whose response went down
before its upstream write was matched, counted in ``local_replies``. The test holds the line
at 99% and, more strictly, that no loss goes uncounted."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from profiler.capture import CaptureConfig, start_capture
from profiler.capture.document import read_spans
from profiler.testbed.accesslog import read_access_log

pytestmark = [pytest.mark.bpf, pytest.mark.testbed, pytest.mark.envoy, pytest.mark.slow]
MARGIN = timedelta(milliseconds=300)  # requests this close to the window's ends are left out


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_every_request_at_saturation_has_a_span(
    testbed_factory: Callable[..., Any], tmp_path: Path
) -> None:
    from profiler.loadgen import LoadSpec, run_load

    tb = testbed_factory()
    st = tb.state
    run_load(LoadSpec("wrk", st.url, None, 1.0, 16, netns=st.client.netns))  # warm pools
    spans_file = tmp_path / "spans.csv"
    session = start_capture(
        CaptureConfig(sidecar_pids=[st.server.envoy_pid], duration_s=None, spans_file=spans_file)
    )
    load = session.during(
        lambda: run_load(LoadSpec("wrk", st.url, None, 4.0, 16, netns=st.client.netns))
    )
    time.sleep(0.5)  # Envoy flushes its access log every 200 ms
    doc = session.stop()
    lo, hi = _when(doc["start_time"]) + MARGIN, _when(doc["end_time"]) - MARGIN
    envoy = {
        e.request_id
        for e in read_access_log(Path(st.access_log))
        if e.request_id and lo <= _when(e.start_time) <= hi
    }
    ours = {r["request_id"] for r in read_spans(spans_file) if r["role"] == "sidecar"}
    side = doc["sidecars"][0]
    missing = envoy - ours
    report = {
        "wrk": load.requests,
        "envoy_in_window": len(envoy),
        "spans": side["requests"],
        "missing": len(missing),
        "drops": doc["drops"],
        "incomplete": side["incomplete_spans"],
        "local_replies": side["local_replies"],
        "pipelined": side["pipelined_requests"],
        "aborted": side["aborted_requests"],
        "unparsed_bytes": side["unparsed_bytes"],
        "matched": side["matched"],
        "path": doc["probe_path"],
    }
    print("completeness", json.dumps(report))
    assert len(envoy) > 2000, report  # saturation, not a trickle
    assert len(envoy & ours) >= 0.99 * len(envoy), report
    counted = doc["drops"] + side["local_replies"] + side["incomplete_spans"]
    counted += side["aborted_requests"] + side["pipelined_requests"]
    assert len(missing) <= counted, report  # never silent
