"""wrk and hey outputs: text captured from real runs of wrk 4.1.0 and hey (Debian 12)."""

from __future__ import annotations

import pytest

from profiler.errors import BadInputFile
from profiler.loadgen import hey, wrk
from profiler.loadgen.result import LoadSpec

WRK_TEXT = """Running 1s test @ http://127.0.0.1:18932/
  2 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   343.28us    1.03ms  14.29ms   94.41%
    Req/Sec    15.15k     2.00k   19.39k    72.73%
  Latency Distribution
     50%  120.00us
     75%  140.00us
     90%  237.00us
     99%    5.60ms
  33208 requests in 1.10s, 2.63MB read
  Socket errors: connect 0, read 2, write 0, timeout 5
  Non-2xx or 3xx responses: 12
Requests/sec:  30127.47
Transfer/sec:      2.38MB
"""

WRK_JSON = (
    "Running 1s test @ http://127.0.0.1:1/\n  1 threads and 2 connections\n"
    'SMP-WRK-JSON {"duration_us":2000000,"requests":5,"bytes":500,"errors":{"connect":0,'
    '"read":0,"write":0,"status":1,"timeout":1},"min":100,"max":9000,"mean":2000.0,'
    '"latency":[[100,2],[200,2],[9000,1]],"codes":{"200":4,"503":1}}\n'
)

HEY_CSV = (
    hey.CSV_HEADER
    + """,status-code,offset
0.0014,0.0003,0.0000,0.0001,0.0008,0.0001,200,0.0275
0.0015,0.0002,0.0000,0.0009,0.0001,0.0000,200,0.0275
0.0100,0.0000,0.0000,0.0000,0.0099,0.0000,503,0.9900
"""
)

HEY_SUMMARY = """
Summary:
  Total:\t1.0048 secs
  Slowest:\t0.0110 secs
  Fastest:\t0.0003 secs
  Average:\t0.0008 secs
  Requests/sec:\t99.5244

  Total data:\t300 bytes
  Size/request:\t3 bytes

Latency distribution:
  10% in 0.0004 secs
  50% in 0.0006 secs
  90% in 0.0008 secs
  99% in 0.0110 secs

Status code distribution:
  [200]\t100 responses

Error distribution:
  [3]\tGet "http://127.0.0.1:18939/": dial tcp 127.0.0.1:18939: connect: connection refused
  [2]\tGet "http://127.0.0.1:18939/": context deadline exceeded (Client.Timeout exceeded)
"""


def test_wrk_text() -> None:
    r = wrk.parse(WRK_TEXT)
    assert r.requests == 33208 and r.duration_s == pytest.approx(1.1)
    assert r.rate_achieved == pytest.approx(33208 / 1.1)
    assert r.percentiles_ms == pytest.approx({50.0: 0.12, 75.0: 0.14, 90.0: 0.237, 99.0: 5.6})
    assert r.mean_ms == pytest.approx(0.34328) and r.max_ms == pytest.approx(14.29)
    assert r.errors == {"read": 2, "timeout": 5}
    assert r.connections == 4 and r.workers == 2 and r.mode == "closed-loop"
    assert r.bytes_received == int(2.63 * 1024**2)
    assert r.histogram is None and any("12 non-2xx" in n for n in r.notes)


def test_wrk_lua_json_line() -> None:
    r = wrk.parse(WRK_JSON)
    assert r.histogram is not None and r.histogram.count == 5
    assert r.percentiles_ms[50] == 0.2 and r.percentiles_ms[99] == pytest.approx(9.0, rel=0.004)
    assert r.status_counts == {200: 4, 503: 1}
    assert r.errors == {"timeout": 1}  # "status" is in status_counts, not an error
    assert r.rate_achieved == 2.5 and r.min_ms == 0.1
    # wrk times every response alike: the 503 is in the histogram, and that is said
    assert r.errors_in_histogram == 1 and r.error_rate == pytest.approx(2 / 6)
    assert any("does not separate error latency" in n for n in r.notes)


def test_wrk_bad_output() -> None:
    with pytest.raises(BadInputFile, match="not wrk output"):
        wrk.parse("Summary:\n nothing")
    with pytest.raises(BadInputFile, match="malformed SMP-WRK-JSON"):
        wrk.parse('SMP-WRK-JSON {"duration_us": 1')


def test_wrk_refuses_a_rate() -> None:
    from profiler.errors import UsageError

    with pytest.raises(UsageError, match="closed loop"):
        wrk.command(LoadSpec("wrk", "http://127.0.0.1:1/", 100.0, 1, 1), "x.lua", 1)


def test_hey_csv() -> None:
    r = hey.parse(HEY_CSV, duration_s=1.0)
    assert r.requests == 3 and r.rate_achieved == 3.0
    assert r.status_counts == {200: 2, 503: 1}
    # the 503's 10 ms is the error's latency, apart from the two successes'
    assert r.histogram is not None and r.min_ms == 1.4 and r.max_ms == 1.5
    assert r.histogram.count == 2
    assert r.error_histogram is not None and r.error_histogram.max == 10_000
    assert r.error_rate == pytest.approx(1 / 3) and r.success_rate == pytest.approx(2.0)
    assert r.percentiles_ms[50] == pytest.approx(1.4, rel=0.004)  # of the successes only
    assert hey.parse(HEY_CSV).duration_s == pytest.approx(1.0)  # last offset + its time


def test_hey_summary() -> None:
    r = hey.parse(HEY_SUMMARY)
    assert r.requests == 100 and r.duration_s == pytest.approx(1.0048)
    assert r.percentiles_ms[99] == pytest.approx(11.0) and r.percentiles_ms[50] == 0.6
    assert r.errors == {"connect": 3, "timeout": 2}
    assert r.bytes_received == 300 and r.min_ms == pytest.approx(0.3)


def test_hey_rate_is_per_worker() -> None:
    cmd = hey.command(LoadSpec("hey", "http://127.0.0.1:1/", 500.0, 2, 4), 2)
    assert cmd[cmd.index("-q") + 1] == "125"


def test_hey_bad_output() -> None:
    with pytest.raises(BadInputFile, match="not hey output"):
        hey.parse("garbage")
    with pytest.raises(BadInputFile, match="hey CSV"):
        hey.parse(HEY_CSV.replace("200,0.0275", "abc,0.0275"))
