"""Built-in generator pieces that need no server: URL, worker split, HTTP reader, merge."""

from __future__ import annotations

import asyncio

import pytest

from profiler.errors import TargetNotFound, UsageError
from profiler.histogram import LatencyHistogram
from profiler.loadgen import LoadSpec, run_load
from profiler.loadgen.builtin import _configs, _merge, parse_target, worker_count
from profiler.loadgen.common import netns_prefix
from profiler.loadgen.worker import ProtocolError, error_kind, read_response


def _spec(**kw: object) -> LoadSpec:
    base: dict[str, object] = dict(
        generator="builtin",
        target="http://10.0.0.1:8080/a?b=1",
        rate=1000.0,
        duration_s=1.0,
        connections=8,
    )
    base.update(kw)
    return LoadSpec(**base)  # type: ignore[arg-type]


def test_parse_target() -> None:
    assert parse_target("http://10.0.0.1:8080/a?b=1") == (
        "10.0.0.1",
        8080,
        "/a?b=1",
        "10.0.0.1:8080",
    )
    assert parse_target("http://example") == ("example", 80, "/", "example")
    with pytest.raises(UsageError):
        parse_target("https://example/")
    with pytest.raises(UsageError):
        parse_target("not a url")


def test_worker_split_interleaves_and_keeps_the_totals() -> None:
    spec = _spec(rate=9000.0, connections=7, workers=2)
    assert worker_count(spec) == 2
    cfgs = _configs(spec, 2, "r1")
    assert [c.connections for c in cfgs] == [4, 3]
    assert sum(c.rate or 0 for c in cfgs) == 9000.0
    assert [c.index for c in cfgs] == [0, 1] and all(c.workers == 2 for c in cfgs)
    assert worker_count(_spec(rate=100.0)) == 1
    assert worker_count(_spec(rate=None)) == 1
    assert worker_count(_spec(rate=1e6, connections=1)) == 1  # never more workers than conns


def _read(data: bytes) -> tuple[int, int, bool]:
    async def go() -> tuple[int, int, bool]:
        r = asyncio.StreamReader()
        r.feed_data(data)
        r.feed_eof()
        return await read_response(r)

    return asyncio.run(go())


def test_read_response_content_length_and_keepalive() -> None:
    msg = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    assert _read(msg + b"HTTP/1.1 ...") == (200, len(msg), False)


def test_read_response_chunked_and_close() -> None:
    msg = b"HTTP/1.1 503 NO\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    body = b"3\r\nabc\r\n0\r\n\r\n"
    assert _read(msg + body) == (503, len(msg + body), True)


def test_read_response_skips_100_continue_and_reads_to_eof() -> None:
    msg = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n\r\nbody-to-eof"
    status, n, close = _read(msg)
    assert status == 200 and close and n == len(msg)


def test_read_response_rejects_garbage() -> None:
    with pytest.raises(ProtocolError):
        _read(b"SSH-2.0-OpenSSH\r\n\r\n")
    with pytest.raises(asyncio.IncompleteReadError):
        _read(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort")


def test_error_kinds() -> None:
    assert error_kind(TimeoutError()) == "timeout"
    assert error_kind(ConnectionRefusedError()) == "connect"
    assert error_kind(ConnectionResetError()) == "reset"
    assert error_kind(asyncio.IncompleteReadError(b"", 3)) == "read"
    assert error_kind(ProtocolError()) == "protocol"
    assert error_kind(OSError(99, "x")) == "socket"


def _part(
    lat: list[int],
    done: int,
    status: dict[str, int],
    errors: dict[str, int],
    ids: list[str],
    err_lat: tuple[int, ...] = (),
) -> dict[str, object]:
    h, e = LatencyHistogram(), LatencyHistogram()
    h.record_many(lat)
    e.record_many(list(err_lat))
    return {
        "latency": h.to_json(),
        "service": h.to_json(),
        "error_latency": e.to_json(),
        "status": status,
        "errors": errors,
        "completed_in_window": done,
        "sent": len(lat),
        "bytes_received": 10 * len(lat),
        "ids": ids,
        "max_lag_s": 0.001,
    }


def test_merge_sums_histograms_and_counts() -> None:
    spec = _spec(rate=10.0, duration_s=2.0, connections=2)
    a = _part([1000] * 9, 10, {"200": 9}, {"timeout": 1}, ["smp-r-0", "smp-r-2"])
    b = _part([300_000], 9, {"200": 1}, {}, ["smp-r-1"])
    r = _merge(spec, [a, b], 1_700_000_000.0, 2, "r")  # type: ignore[list-item]
    assert r.requests == 10 and r.status_counts == {200: 10} and r.errors == {"timeout": 1}
    assert r.rate_achieved == 9.5 and not r.target_reached  # 19 in 2 s: 5% short of 10/s
    assert r.request_ids == ["smp-r-0", "smp-r-1", "smp-r-2"]
    assert r.percentiles_ms[99] == pytest.approx(300.0, rel=0.004)  # from the merged buckets
    assert r.mode == "open-loop" and r.workers == 2
    assert any("not reached" in n for n in r.notes)


def test_merge_keeps_error_responses_apart() -> None:
    spec = _spec(rate=5.0, duration_s=2.0, connections=2)
    a = _part([1000] * 8, 10, {"200": 8, "503": 2}, {}, [], err_lat=(50_000, 60_000))
    r = _merge(spec, [a], 1_700_000_000.0, 1, "r")  # type: ignore[list-item]
    assert r.requests == 10 and r.successes == 8 and r.error_responses == 2
    assert r.histogram is not None and r.histogram.count == 8 and r.max_ms == pytest.approx(1.0)
    assert r.error_histogram is not None and r.error_histogram.count == 2
    assert r.error_rate == pytest.approx(0.2)
    # 10 responses/s of the 5 asked, but only 4 successful/s: not reached
    assert r.success_rate == pytest.approx(4.0) and not r.target_reached


def test_bad_specs() -> None:
    with pytest.raises(UsageError, match="unknown load generator"):
        run_load(_spec(generator="ab"))
    with pytest.raises(UsageError, match="rate"):
        run_load(_spec(rate=-1.0))
    with pytest.raises(TargetNotFound, match="network namespace"):
        netns_prefix("smp-no-such-netns-xyz")
