"""The engine as a pure aggregator: synthetic records (struct smp_span, dtype read from
bpf/sidecar.h) with known instants in, exact legs, joins, counters and the capture document
out. A scripted probe is handed in: no root, no BCC."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from profiler.capture import CaptureConfig
from profiler.capture.document import read_spans
from profiler.capture.engine import Engine
from profiler.capture.session import CaptureSession
from profiler.probes.sidecar import (
    F_DRAINED,
    F_DS_BURST,
    F_DS_H2,
    F_DS_TX_CALL,
    F_MATCH_RID,
    F_MATCH_THREAD,
    F_US_H2,
    F_US_TLS,
    F_US_TX_CALL,
    KIND_PROXY,
    KIND_SERVER,
    PROC_STATS,
    SPAN_DTYPE,
)

SIDECAR, APP = 4100, 4200
US = 1000  # ns in a microsecond


class ScriptedProbe:
    """Stands in for SidecarProbe: the test queues record batches, the engine consumes."""

    path = "sock"

    def __init__(self, sink: Callable[[np.ndarray], None]) -> None:
        self.sink = sink
        self.queue: list[np.ndarray] = []
        self.pending = np.empty(0, SPAN_DTYPE)
        self.added: dict[int, str] = {}
        self.stats: dict[int, dict[str, int]] = {}
        self.closed = False

    @property
    def method(self) -> str:
        return "scripted"

    def add_target(self, pid: int, mode: str) -> None:
        self.added[pid] = mode

    def remove_target(self, pid: int) -> None:
        self.added.pop(pid, None)

    def poll(self, timeout_ms: int = 100) -> None:
        self.consume()

    def consume(self) -> None:
        for batch in self.queue:
            self.sink(batch)
        self.queue.clear()

    def drain_pending(self) -> np.ndarray:
        out, self.pending = self.pending, np.empty(0, SPAN_DTYPE)
        return out

    def proc_stats(self, pid: int) -> dict[str, int]:
        return self.stats.get(pid, dict.fromkeys(PROC_STATS, 0))

    def drops(self) -> int:
        return 0

    def conns_in_use(self) -> int:
        return 0

    def close(self) -> None:
        self.closed = True


def spans(rows: list[dict[str, Any]]) -> np.ndarray:
    out = np.zeros(len(rows), SPAN_DTYPE)
    for i, row in enumerate(rows):
        for key, value in row.items():
            if key == "rid":
                raw = value.encode()
                out[i]["rid"][: len(raw)] = np.frombuffer(raw, "S1")
                out[i]["rid_len"] = len(raw)
            else:
                out[i][key] = value
    return out


def proxy(t0: int, rp_us: int, up_us: int, resp_us: int, **kw: Any) -> dict[str, Any]:
    """A sidecar record whose legs are exactly request_proxy/upstream/response_proxy."""
    us_tx = t0 + rp_us * US
    us_rx = us_tx + up_us * US
    return {
        "kind": KIND_PROXY,
        "tgid": SIDECAR,
        "ds_rx_beg": t0,
        "us_tx_beg": us_tx,
        "us_tx_end": us_tx,
        "us_rx_beg": us_rx,
        "ds_tx_end": us_rx + resp_us * US,
        "flags": F_MATCH_THREAD,
        **kw,
    }


def app(t0: int, app_us: int, **kw: Any) -> dict[str, Any]:
    return {"kind": KIND_SERVER, "tgid": APP, "ds_rx_beg": t0, "ds_tx_end": t0 + app_us * US, **kw}


@pytest.fixture
def engine() -> Iterator[tuple[Engine, ScriptedProbe]]:
    made: list[ScriptedProbe] = []

    def factory(sink: Callable[[np.ndarray], None]) -> ScriptedProbe:
        made.append(ScriptedProbe(sink))
        return made[0]

    e = Engine(keep_spans=True, probe=factory)
    e.add_target(SIDECAR, "sidecar")
    e.add_target(APP, "app")
    yield e, made[0]
    e.close()


def _now() -> int:
    return time.monotonic_ns() + 10**9


def test_probe_is_handed_in_and_told_the_modes(engine: tuple[Engine, ScriptedProbe]) -> None:
    e, probe = engine
    assert probe.added == {SIDECAR: "proxy", APP: "app"}
    assert e.method == "scripted" and e.probe_path == "sock"


def test_proxy_legs_are_exact_per_request(engine: tuple[Engine, ScriptedProbe]) -> None:
    """Three requests with known legs: each histogram holds exactly those microseconds
    (a swap of two legs, or ns taken for us, changes the numbers)."""
    e, probe = engine
    t = _now()
    probe.queue.append(
        spans([proxy(t, 100, 1000, 50), proxy(t + 10**6, 200, 2000, 60), proxy(t + 2, 7, 3, 1)])
    )
    e.poll(0)
    target = e.targets[SIDECAR]
    assert target.requests == 3 and target.incomplete == 0
    legs = target.legs
    assert legs["request_proxy"].count == 3
    assert (legs["request_proxy"].min, legs["request_proxy"].max) == (7, 200)
    assert (legs["upstream"].min, legs["upstream"].max) == (3, 2000)
    assert (legs["response_proxy"].min, legs["response_proxy"].max) == (1, 60)
    assert legs["sidecar_total"].total_us == (100 + 50) + (200 + 60) + (7 + 1)
    assert target.matched_by_thread == 3 and target.matched_by_rid == 0


def test_instants_out_of_order_are_incomplete_not_legs(
    engine: tuple[Engine, ScriptedProbe],
) -> None:
    """A record whose upstream answer precedes its upstream send (a mismatched join) or that
    never reached the upstream is counted incomplete and records no leg."""
    e, probe = engine
    t = _now()
    bad = proxy(t, 100, 1000, 50)
    bad["us_rx_beg"] = bad["us_tx_end"] - US
    unsent = proxy(t, 100, 1000, 50, us_tx_end=0, us_tx_beg=0)
    probe.queue.append(spans([proxy(t, 10, 10, 10), bad, unsent]))
    e.poll(0)
    target = e.targets[SIDECAR]
    assert (target.requests, target.incomplete) == (1, 2)
    assert target.legs["upstream"].count == 1


def test_app_join_gives_loopback_and_mesh_added_in_either_order(
    engine: tuple[Engine, ScriptedProbe],
) -> None:
    """The app's record of a request (800 us) and the sidecar's (upstream 1000 us), joined
    by request id: loopback = 200 us, mesh_added = sidecar_total + loopback. The app's record
    arriving first or second gives the same answer; a request without an app record none."""
    e, probe = engine
    t = _now()
    probe.queue.append(spans([app(t, 800, rid_hash=11, rid="r-1")]))
    probe.queue.append(
        spans(
            [
                proxy(t, 100, 1000, 50, rid_hash=11, rid="r-1", flags=F_MATCH_RID),
                proxy(t, 100, 1500, 50, rid_hash=22, rid="r-2", flags=F_MATCH_RID),
                proxy(t, 100, 1000, 50, rid_hash=33, rid="r-3", flags=F_MATCH_RID),
            ]
        )
    )
    probe.queue.append(spans([app(t, 1200, rid_hash=22, rid="r-2")]))
    e.poll(0)
    loop = e.targets[APP].legs["loopback"]
    added = e.targets[SIDECAR].legs["mesh_added"]
    assert loop.count == 2 and added.count == 2
    assert (loop.min, loop.max) == (200, 300)
    assert (added.min, added.max) == (150 + 200, 150 + 300)
    assert e.targets[APP].legs["app"].count == 2
    assert e.targets[SIDECAR].matched_by_rid == 3


def test_records_from_before_the_window_are_left_out(
    engine: tuple[Engine, ScriptedProbe],
) -> None:
    e, probe = engine
    e.new_window([SIDECAR], [APP])
    old = time.monotonic_ns() - 10**9
    probe.queue.append(spans([proxy(old, 1, 1, 1), proxy(_now(), 1, 1, 1)]))
    e.poll(0)
    assert e.targets[SIDECAR].requests == 1


def test_span_cap_counts_what_it_does_not_keep() -> None:
    probes: list[ScriptedProbe] = []

    def factory(sink: Callable[[np.ndarray], None]) -> ScriptedProbe:
        probes.append(ScriptedProbe(sink))
        return probes[0]

    e = Engine(keep_spans=True, max_spans=2, probe=factory)
    e.add_target(SIDECAR, "sidecar")
    t = _now()
    probes[0].queue.append(spans([proxy(t + i, 1, 1, 1) for i in range(5)]))
    e.poll(0)
    target = e.targets[SIDECAR]
    assert (target.requests, target.rows_kept, target.rows_dropped) == (5, 2, 3)
    e.close()
    assert probes[0].closed


def test_http1_statuses_counted_per_target_and_h2_streams_left_out(
    engine: tuple[Engine, ScriptedProbe],
) -> None:
    """Statuses of the spans by target over two batches: the sidecar's and the app's apart,
    status 0 as "unknown", spans whose downstream is an HTTP/2 stream (their statuses are the
    kernel's HPACK counts) and incomplete spans not counted; the snapshot carries the same
    as ("http1", code) plus the HTTP/2 decoder's counts and its lost blocks."""
    e, probe = engine
    t = _now()
    probe.queue.append(spans(
        [proxy(t + i, 10, 100, 5, status=200) for i in range(4)]
        + [proxy(t + 10 + i, 10, 100, 5, status=503) for i in range(2)]
        + [proxy(t + 20, 10, 100, 5, status=0, flags=F_MATCH_THREAD)]
        + [proxy(t + 21, 10, 100, 5, status=0, flags=F_DS_H2)]
        + [proxy(t + 22, 10, 100, 5, status=0, flags=F_DS_BURST)]
        + [proxy(t + 23, 10, 100, 5, status=404, ds_tx_end=1)]  # incomplete: not a request
        + [app(t + 30 + i, 5, status=200) for i in range(3)] + [app(t + 40, 5, status=503)]
    ))  # fmt: skip
    probe.queue.append(spans([proxy(t + 50, 10, 100, 5, status=503), app(t + 51, 5, status=404)]))
    e.poll(0)
    assert (e.targets[SIDECAR].requests, e.targets[SIDECAR].incomplete) == (10, 1)
    assert e.http1_statuses(SIDECAR) == {"200": 4, "503": 3, "unknown": 1}
    assert list(e.http1_statuses(SIDECAR)) == ["200", "503", "unknown"]  # ascending, then unknown
    assert e.http1_statuses(APP) == {"200": 3, "404": 1, "503": 1, "unknown": 0}
    h2 = {SIDECAR: {"http": {"200": 1, "503": 2}, "grpc": {"0": 5, "14": 1}, "unknown": 3}}
    probe.status_tables = lambda: (h2, {})  # type: ignore[attr-defined]
    probe.stats[SIDECAR] = dict.fromkeys(PROC_STATS, 0) | {"h2_blocks_lost": 2}
    snap = e.snapshot().targets[SIDECAR]
    assert snap.statuses == {
        ("http1", "200"): 4, ("http1", "503"): 3, ("http1", "unknown"): 1,
        ("http2", "200"): 1, ("http2", "503"): 2, ("http2", "unknown"): 3,
        ("grpc", "0"): 5, ("grpc", "14"): 1,
    }  # fmt: skip
    assert snap.h2_blocks_lost == 2
    assert e.snapshot().targets[APP].statuses == {
        ("http1", "200"): 3, ("http1", "404"): 1, ("http1", "503"): 1
    }  # fmt: skip
    # the sidecar's local replies (no span) add to its HTTP/1.1 responses, in the capture's
    # http1_statuses and the snapshot alike; never to the app's
    local = {SIDECAR: {503: 5, 404: 2, 0: 1}}
    probe.status_tables = lambda: (h2, local)  # type: ignore[attr-defined]
    assert e.http1_statuses(SIDECAR) == {"200": 4, "404": 2, "503": 8, "unknown": 2}
    assert e.http1_statuses(APP) == {"200": 3, "404": 1, "503": 1, "unknown": 0}
    snap = e.snapshot().targets[SIDECAR]
    assert (snap.statuses["http1", "503"], snap.statuses["http1", "404"]) == (8, 2)
    assert snap.statuses["http1", "unknown"] == 2
    assert e.targets[SIDECAR].requests == 10  # local replies are not requests with a span


def test_writes_timed_by_their_call_are_counted_per_leg_and_target(
    engine: tuple[Engine, ScriptedProbe],
) -> None:
    """The probe flags an HTTP/1.1 leg whose write instant is the call's own (no packet
    stamped): counted per target by the leg the write ends, request_proxy (the request sent
    upstream) and response_proxy (the response written downstream) apart (swapped flags
    would swap the counts), an app's as its app leg; legs the probe does not flag (HTTP/2,
    TLS bursts) are not counted even with the bit set; incomplete spans are not counted."""
    e, probe = engine
    t = _now()
    thread = F_MATCH_THREAD
    probe.queue.append(spans(
        [proxy(t + i, 10, 100, 5) for i in range(5)]  # stamped: none counted
        + [proxy(t + 10 + i, 10, 100, 5, flags=thread | F_US_TX_CALL) for i in range(3)]
        + [proxy(t + 20, 10, 100, 5, flags=thread | F_DS_TX_CALL)]
        + [proxy(t + 21, 10, 100, 5, flags=thread | F_US_TX_CALL | F_DS_TX_CALL)]
        + [proxy(t + 22, 10, 100, 5, flags=F_US_H2 | F_US_TX_CALL | F_DS_TX_CALL)]
        + [proxy(t + 23, 10, 100, 5, flags=F_US_TLS | F_US_TX_CALL)]
        + [proxy(t + 24, 10, 100, 5, flags=F_DS_H2 | F_DS_TX_CALL)]
        + [proxy(t + 25, 10, 100, 5, flags=F_US_TX_CALL, ds_tx_end=1)]  # incomplete
        + [app(t + 30 + i, 5) for i in range(4)] + [app(t + 40, 5, flags=F_DS_TX_CALL)]
    ))  # fmt: skip
    e.poll(0)
    assert e.targets[SIDECAR].write_stamp_missing == {"request_proxy": 4, "response_proxy": 3}
    assert e.targets[APP].write_stamp_missing == {"app": 1}
    # the daemon's snapshot carries the same
    snap = e.snapshot().targets
    assert snap[SIDECAR].write_stamp_missing == {"request_proxy": 4, "response_proxy": 3}
    assert snap[APP].write_stamp_missing == {"app": 1}


def test_capture_document_from_synthetic_records(tmp_path: Path) -> None:
    """records -> legs -> capture document and spans file, for processes that exist (this
    test's own PID as the sidecar), with the probe's counters in the document."""
    me = os.getpid()
    probes: list[ScriptedProbe] = []

    def factory(sink: Callable[[np.ndarray], None]) -> ScriptedProbe:
        probes.append(ScriptedProbe(sink))
        return probes[0]

    e = Engine(keep_spans=True, probe=factory)
    session = CaptureSession(
        CaptureConfig(sidecar_pids=[me], duration_s=None, spans_file=tmp_path / "s.csv"), e
    )
    probe = probes[0]
    t = _now()
    rows = [proxy(t + i * 10**6, 100 + i, 1000, 50, tgid=me, rid=f"doc-{i}") for i in range(23)]
    rows[3]["flags"] |= F_DS_TX_CALL  # one response timed by its write call
    probe.queue.append(spans(rows[:20]))
    drained = spans(rows[20:])
    drained["flags"] |= F_DRAINED
    probe.pending = drained  # answered, still in the connection table at the end
    probe.stats[me] = dict.fromkeys(PROC_STATS, 0) | {"unparsed_bytes": 77, "pipelined": 2}
    session.poll(0)
    doc = session.stop()
    side = doc["sidecars"][0]
    assert side["requests"] == 23
    assert side["legs"]["request_proxy"]["min_ms"] == 0.1
    assert side["legs"]["request_proxy"]["max_ms"] == 0.122
    assert side["legs"]["upstream"]["p50_ms"] == 1.0
    assert side["unparsed_bytes"] == 77 and side["pipelined_requests"] == 2
    assert side["http1_statuses"] == {"unknown": 23}  # the records carry no status
    assert side["write_stamp_missing"] == {"request_proxy": 0, "response_proxy": 1}
    assert doc["method"].startswith("scripted") and doc["probe_path"] == "sock"
    ids = [r["request_id"] for r in read_spans(tmp_path / "s.csv")]
    assert sorted(ids) == sorted(f"doc-{i}" for i in range(23))


def test_join_in_one_batch_and_each_waiting_half_taken_once(
    engine: tuple[Engine, ScriptedProbe],
) -> None:
    """Both halves of a request in the same batch join; a waiting half joins one request
    only (a second app record with the same id waits instead of joining twice)."""
    e, probe = engine
    t = _now()
    probe.queue.append(
        spans(
            [
                app(t, 800, rid_hash=11, rid="r-1"),
                proxy(t, 100, 1000, 50, rid_hash=11, rid="r-1", flags=F_MATCH_RID),
                proxy(t, 100, 1900, 50, rid_hash=44, rid="r-4", flags=F_MATCH_RID),
            ]
        )
    )
    probe.queue.append(spans([app(t, 900, rid_hash=44, rid="r-4"), app(t, 5, rid_hash=44)]))
    e.poll(0)
    loop = e.targets[APP].legs["loopback"]
    assert loop.count == 2 and (loop.min, loop.max) == (200, 1000)


def test_pending_join_is_bounded_oldest_first() -> None:
    from profiler.capture.engine import _Pending

    p = _Pending(2, limit=8)
    for i in range(20):  # one at a time: the oldest go when over the limit
        p.put(np.array([100 + i], dtype=np.uint64), np.array([[1, i]], dtype=np.int64))
    assert len(p) <= 8
    got = p.take(np.array([119, 100, 999], dtype=np.uint64))
    assert got[:, 1].tolist() == [19, -1, -1]  # the newest waits; the oldest went; 999 never
    assert p.take(np.array([119], dtype=np.uint64))[0, 0] == -1  # taken once
    p.put(np.array([7, 7], dtype=np.uint64), np.array([[1, 1], [1, 2]], dtype=np.int64))
    assert p.take(np.array([7], dtype=np.uint64))[0, 1] == 2  # the latest of one id waits
