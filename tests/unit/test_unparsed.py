"""Never silent, without root: unparsed bytes through the engine, the capture document, its
warnings, the reports and the metrics; HTTP/2 stream times; the loadgen protocol results."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from profiler.capture import document
from profiler.capture.engine import Engine
from profiler.capture.snapshot import Snapshot, TargetSnapshot
from profiler.daemon.metrics import SnapshotCollector
from profiler.errors import UsageError
from profiler.histogram import LatencyHistogram
from profiler.loadgen.protocols import protocol_of
from profiler.loadgen.result import LoadSpec
from profiler.probes.sidecar import (
    F_DS_H2,
    F_MATCH_RESP,
    F_US_H2,
    F_US_TLS,
    KIND_PROXY,
    KIND_UNPARSED,
    SPAN_DTYPE,
)

PID = 4242


class FakeProbe:
    """The engine's probe, scripted: records are fed by the test."""

    path = "sock"
    method = "scripted"

    def __init__(self, sink: Callable[[np.ndarray], None]) -> None:
        self.sink = sink
        self.stats = {"rx_bytes": 0, "tx_bytes": 0, "unparsed_bytes": 0, "unparsed_conns": 0}

    def add_target(self, pid: int, mode: Any) -> None: ...
    def remove_target(self, pid: int) -> None: ...
    def poll(self, timeout_ms: int = 100) -> None: ...
    def consume(self) -> None: ...
    def drain_pending(self) -> np.ndarray:
        return np.zeros(0, dtype=SPAN_DTYPE)

    def proc_stats(self, pid: int) -> dict[str, int]:
        return dict(self.stats)

    def drops(self) -> int:
        return 0

    def conns_in_use(self) -> int:
        return 0

    def close(self) -> None: ...


def _engine() -> tuple[Engine, FakeProbe]:
    made: list[FakeProbe] = []

    def factory(sink: Callable[[np.ndarray], None]) -> FakeProbe:
        made.append(FakeProbe(sink))
        return made[0]

    e = Engine(keep_spans=True, probe=factory)  # type: ignore[arg-type]
    e.add_target(PID, "sidecar")
    return e, made[0]


def _unparsed_records(rows: list[tuple[int, int, int, int]]) -> np.ndarray:
    """(ds_fd, us_fd, rx, tx) per connection."""
    a = np.zeros(len(rows), dtype=SPAN_DTYPE)
    for i, (ds_fd, us_fd, rx, tx) in enumerate(rows):
        a[i]["kind"], a[i]["tgid"], a[i]["ds_rx_beg"] = KIND_UNPARSED, PID, 10**12
        a[i]["ds_fd"], a[i]["us_fd"] = ds_fd, us_fd
        a[i]["req_bytes"], a[i]["resp_bytes"] = rx, tx
    return a


def test_unparsed_connections_by_role_largest_first_and_bounded() -> None:
    e, _ = _engine()
    rows = [(7, -1, 11, 13), (-1, 9, 1031, 1033)] + [(100 + i, -1, 1, 1) for i in range(40)]
    e.feed(_unparsed_records(rows))
    t = e.targets[PID]
    assert t.requests == 0  # an unparsed record is never a request
    assert t.unparsed_conns_seen == 42
    assert len(t.unparsed_conns) == 32
    assert t.unparsed_conns[0] == (9, "upstream", 1031, 1033)
    assert t.unparsed_conns[1] == (7, "downstream", 11, 13)


def test_unparsed_doc_share_and_warning_threshold() -> None:
    stats = {"rx_bytes": 600, "tx_bytes": 400, "unparsed_bytes": 50, "unparsed_conns": 3}
    u = document.unparsed_doc(stats, [(9, "upstream", 20, 30)], 1)
    assert u["bytes"] == 50 and u["share"] == 0.05 and u["connections_total"] == 3
    assert u["connections"] == [{"fd": 9, "role": "upstream", "bytes_rx": 20, "bytes_tx": 30}]
    entry = {"pid": 1, "comm": "envoy", "requests": 7, "unparsed": u}
    assert document.warnings([entry]) == []  # exactly 5%: no warning
    u2 = document.unparsed_doc(dict(stats, unparsed_bytes=51), [], 0)
    (w,) = document.warnings([dict(entry, unparsed=u2)])
    assert "51 bytes (5% of its socket bytes)" in w and "not in the 7 counted" in w


def test_unparsed_doc_with_no_traffic_is_zero_not_a_division_error() -> None:
    u = document.unparsed_doc({}, [], 0)
    assert u["share"] == 0.0 and u["bytes"] == 0


def test_incomplete_spans_above_5_percent_warn() -> None:
    ok = {"pid": 2, "comm": "envoy", "requests": 95, "incomplete_spans": 5}
    bad = dict(ok, incomplete_spans=6)
    assert document.warnings([ok]) == []
    (w,) = document.warnings([bad])
    assert "6 of 101 spans were incomplete" in w


def test_writes_timed_by_their_call_above_5_percent_warn() -> None:
    ok = {"pid": 3, "comm": "envoy", "requests": 100}
    ok["write_stamp_missing"] = {"request_proxy": 5, "response_proxy": 2}
    bad = dict(ok, write_stamp_missing={"request_proxy": 1, "response_proxy": 6})
    assert document.warnings([ok]) == []  # exactly 5%: no warning
    (w,) = document.warnings([bad])
    assert "of 100 requests, 1 request_proxy, 6 response_proxy legs end at their write" in w
    assert document.warnings([dict(ok, requests=0)]) == []  # no request: nothing to say


def _h2_span(beg: int, data: int, end: int, flags: int) -> np.ndarray:
    a = np.zeros(1, dtype=SPAN_DTYPE)
    a[0]["kind"], a[0]["flags"] = KIND_PROXY, flags
    a[0]["ds_rx_beg"], a[0]["ds_tx_data"], a[0]["ds_tx_end"] = beg, data, end
    return a


def test_stream_times_first_data_and_end_in_ms_h2_only() -> None:
    # prime gaps: first message 3 ms, end 7 ms after the request; an HTTP/1.1 span ignored
    rows = [
        _h2_span(10**9, 10**9 + 3_000_000, 10**9 + 7_000_000, F_DS_H2),
        _h2_span(2 * 10**9, 0, 2 * 10**9 + 11_000_000, 0),
    ]
    st = document.stream_times(rows, F_DS_H2)
    assert st["first_data"]["count"] == 1 and st["first_data"]["p50_ms"] == 3.0
    assert st["end_of_stream"]["count"] == 1 and st["end_of_stream"]["p50_ms"] == 7.0


def test_engine_counts_http2_and_tls_upstream_flags() -> None:
    e, _ = _engine()
    rows = []
    for i, flags in enumerate(
        (F_DS_H2 | F_MATCH_RESP, F_DS_H2 | F_US_H2 | F_MATCH_RESP, F_DS_H2 | F_US_TLS, 0)
    ):
        a = np.zeros(1, dtype=SPAN_DTYPE)
        b = 10**12 + i * 10**7
        a[0]["kind"], a[0]["tgid"], a[0]["flags"] = KIND_PROXY, PID, flags
        a[0]["ds_rx_arr"] = a[0]["ds_rx_beg"] = b
        a[0]["us_tx_end"], a[0]["us_rx_arr"] = b + 1000, b + 5000
        a[0]["us_rx_beg"], a[0]["ds_tx_end"] = b + 5000, b + 7000
        rows.append(a)
    e.feed(np.concatenate(rows))
    t = e.targets[PID]
    assert t.requests == 4
    assert (t.h2_downstream, t.h2_upstream, t.tls_upstream, t.matched_by_response) == (3, 1, 1, 2)


def test_metrics_export_socket_and_unparsed_bytes() -> None:
    labels = {"namespace": "shop", "pod": "p-1", "container": "istio-proxy"}
    snap = Snapshot(
        targets={
            1: TargetSnapshot(labels=labels, requests=3, socket_bytes=1000, unparsed_bytes=997),
            2: TargetSnapshot(labels=labels, requests=0, socket_bytes=10, unparsed_bytes=10),
        },
        drops=0,
        attached=2,
    )
    c = SnapshotCollector()
    c.update(snap)
    got = {m.name: {s.labels.get("k8s_pod_name"): s.value for s in m.samples} for m in c.collect()}
    assert got["smp_sidecar_unparsed_bytes"]["p-1"] == 1007  # summed over the two processes
    assert got["smp_sidecar_socket_bytes"]["p-1"] == 1010


def test_protocol_must_be_one_of_three() -> None:
    spec = LoadSpec(generator="builtin", target="http://x/", rate=None, duration_s=1,
                    connections=1, protocol="http3")  # fmt: skip
    with pytest.raises(UsageError, match="bad protocol 'http3'"):
        protocol_of(spec)
    assert protocol_of(LoadSpec("builtin", "http://x/", None, 1, 1)) == "http1"


def test_grpc_result_counts_statuses_by_name_not_as_http() -> None:
    from profiler.loadgen.protocols import _result

    h = LatencyHistogram()
    for us in (1009, 2003, 3001):
        h.record(us)
    d = {"latency": h.to_json(), "service": h.to_json(), "status": {"OK": 2, "NOT_FOUND": 1},
         "errors": {}, "ids": ["smp-r-0"], "bytes_received": 3, "sent": 3}  # fmt: skip
    spec = LoadSpec("builtin", "http://x:1/smp.Testbed/Unary", None, 1.0, 1, protocol="grpc")
    r = _result(spec, "grpc", d, datetime(2026, 1, 1, tzinfo=UTC).timestamp(), "r")
    assert r.status_counts == {}
    assert r.requests == 3
    assert "grpc-status: NOT_FOUND 1, OK 2" in r.notes
    assert r.grpc_status_counts == {"OK": 2, "NOT_FOUND": 1}
    assert r.protocol == "grpc"
    assert r.error_responses == 1 and r.errors_in_histogram == 1
