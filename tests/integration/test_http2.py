"""HTTP/2 through the testbed's real Envoy, real probe: per-stream spans for h2 -> h1 and
h2 -> h2 (h2load, 4 connections x 8 concurrent streams), a raw TCP echo through Envoy's TCP
proxy reported as unparsed bytes (never "0 requests, complete"), and HTTP/1.1 and HTTP/2 on
one sidecar at once."""

from __future__ import annotations

import shutil
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from profiler.capture import CaptureConfig, start_capture
from profiler.capture.document import read_spans
from profiler.probes.sidecar import F_DS_H2

pytestmark = [pytest.mark.bpf, pytest.mark.testbed, pytest.mark.envoy]
SLACK_US = 20.0
N = 3000


def _h2load(tb: Any, url: str, n: int = N, headers: tuple[str, ...] = ()) -> str:
    if shutil.which("h2load") is None:
        pytest.fail("h2load is not installed (nghttp2-client; make setup)")
    extra = [a for h in headers for a in ("-H", h)]
    r = tb.run_in_client(
        ["h2load", "-n", str(n), "-c", "4", "-m", "8", *extra, url],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    # (h2load counts a 4xx/5xx answer as "failed": all done, none errored)
    ok = f"{n} succeeded" if not headers else f"{n} done"
    assert ok in r.stdout and "0 errored" in r.stdout, r.stdout
    return str(r.stdout)


def _capture(tb: Any, spans_file: Path, app: bool = True) -> Any:
    server = tb.state.server
    return start_capture(
        CaptureConfig(
            sidecar_pids=[server.envoy_pid],
            app_pids=[server.app_pid] if app else [],
            duration_s=None,
            spans_file=spans_file,
        )
    )


def _stop(session: Any) -> dict[str, Any]:
    time.sleep(0.3)
    session.poll(0)
    doc: dict[str, Any] = session.stop()
    return doc


def _sidecar_rows(spans_file: Path) -> list[dict[str, str]]:
    return [r for r in read_spans(spans_file) if r["role"] == "sidecar"]


def test_h2_to_h1_every_stream_has_a_span_joined_by_request_id(
    testbed_factory: Callable[..., Any], tmp_path: Path
) -> None:
    """h2load (no request ids) to the HTTP/1.1 app: Envoy generates an id per stream and
    sends it upstream in plaintext; the stream's span takes it from its upstream answer, so
    every access-log entry of Envoy's can be looked up. Per request, the upstream leg is that
    request's own (<= Envoy's) and the proxy legs hold Envoy's (>=)."""
    tb = testbed_factory(app_delay_s=0.001)
    spans_file = tmp_path / "spans.csv"
    session = _capture(tb, spans_file)
    session.during(lambda: _h2load(tb, tb.state.url))
    doc = _stop(session)
    entries = tb.wait_access_log(N, timeout=5)
    assert len(entries) == N
    sidecar = doc["sidecars"][0]
    assert doc["drops"] == 0 and doc["warnings"] == []
    assert sidecar["http2_spans"]["downstream"] == sidecar["requests"]
    assert sidecar["http2_spans"]["upstream"] == 0
    assert "HTTP/2: per stream" in doc["method"]
    ours = {r["request_id"]: r for r in _sidecar_rows(spans_file) if r["request_id"]}
    by_id = {e.request_id: e for e in entries}
    joined = [(ours[i], e) for i, e in by_id.items() if i in ours]
    assert len(joined) >= 0.98 * N, (len(joined), sidecar)
    # the app saw each request once, and its span joins the sidecar's by the same id
    assert doc["apps"][0]["requests"] == N
    assert sidecar["legs"]["mesh_added"]["count"] >= 0.98 * N
    # HTTP/2 downstream: statuses are the HPACK decoder's, none counted as HTTP/1.1; the
    # app's HTTP/1.1 answers are
    assert sidecar["http1_statuses"] == {"unknown": 0}
    assert doc["apps"][0]["http1_statuses"] == {"200": N, "unknown": 0}
    _assert_legs_hold_envoys(joined)


def _assert_legs_hold_envoys(joined: list[tuple[dict[str, str], Any]]) -> None:
    up_ok = sum(float(r["upstream_us"]) <= e.upstream_us + SLACK_US for r, e in joined)
    rp_ok = sum(float(r["request_proxy_us"]) >= e.request_proxy_us - SLACK_US for r, e in joined)
    resp_ok = sum(
        float(r["response_proxy_us"]) >= e.response_proxy_us - SLACK_US for r, e in joined
    )
    n = len(joined)
    # the upstream leg is always one upstream request's own (it comes from its answer)
    assert up_ok >= 0.99 * n, (up_ok, n)
    assert rp_ok >= 0.98 * n, (rp_ok, n)
    assert resp_ok >= 0.98 * n, (resp_ok, n)


def test_h2_to_h2_every_stream_has_a_span(
    testbed_factory: Callable[..., Any], tmp_path: Path
) -> None:
    """h2load to the app's HTTP/2 port (h2 on both legs of the sidecar). Request ids are
    HPACK-coded on both sides, so the join is by count and per-leg distributions: the span
    count matches Envoy's entries, every span is a stream on both sides, and the upstream
    leg holds the app's 1 ms."""
    tb = testbed_factory(app_delay_s=0.001)
    spans_file = tmp_path / "spans.csv"
    session = _capture(tb, spans_file, app=False)
    session.during(lambda: _h2load(tb, tb.state.server.h2c_url))
    doc = _stop(session)
    entries = tb.wait_access_log(N, timeout=5)
    assert len(entries) == N
    sidecar = doc["sidecars"][0]
    assert doc["drops"] == 0 and doc["warnings"] == []
    assert sidecar["requests"] >= 0.98 * N, sidecar
    assert sidecar["requests"] <= N
    assert sidecar["http2_spans"] == {"downstream": sidecar["requests"],
                                      "upstream": sidecar["requests"]}  # fmt: skip
    assert sidecar["unparsed"]["http2_desyncs"] == 0
    rows = _sidecar_rows(spans_file)
    ours_up = np.array([float(r["upstream_us"]) for r in rows])
    envoy_up = np.array([e.upstream_us for e in entries], dtype=float)
    assert np.percentile(ours_up, 50) >= 1000.0  # the app's 1 ms is upstream
    assert np.percentile(ours_up, 50) <= np.percentile(envoy_up, 50) + SLACK_US
    for leg in ("request_proxy", "response_proxy"):
        o = np.array([float(r[f"{leg}_us"]) for r in rows])
        e = np.array([getattr(x, f"{leg}_us") for x in entries], dtype=float)
        assert np.percentile(o, 50) >= np.percentile(e, 50) - SLACK_US, leg


def test_tcp_echo_through_tcp_proxy_reports_the_bytes_and_warns(
    testbed_factory: Callable[..., Any], tmp_path: Path
) -> None:
    """Raw TCP through Envoy's TCP proxy: no HTTP request exists, so the capture must say
    how many bytes it could not parse, on which connections, and warn, instead of looking
    like an idle sidecar."""
    tb = testbed_factory()
    session = _capture(tb, tmp_path / "spans.csv", app=False)
    payload, rounds = b"not http at all, just bytes\n" * 37, 23  # 1,036 bytes a round
    code = (
        "import socket,sys\n"
        f"s=socket.create_connection(('{tb.state.server.ip}', {tb.state.ports['echo']}))\n"
        f"p={payload!r}\n"
        f"for _ in range({rounds}):\n"
        "    s.sendall(p); got=b''\n"
        "    while len(got)<len(p): got+=s.recv(65536)\n"
        "    assert got==p\n"
        "s.close()\n"
    )
    r = tb.run_in_client([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    time.sleep(0.3)
    doc = _stop(session)
    sidecar = doc["sidecars"][0]
    moved = len(payload) * rounds
    assert sidecar["requests"] == 0
    # Envoy read it downstream, wrote it upstream, read the echo, wrote it back: 4x
    assert sidecar["unparsed"]["bytes"] == 4 * moved, sidecar["unparsed"]
    assert sidecar["unparsed"]["share"] > 0.99
    conns = sidecar["unparsed"]["connections"]
    roles = sorted(c["role"] for c in conns)
    assert roles == ["downstream", "upstream"], conns
    for c in conns:
        assert c["bytes_rx"] == moved and c["bytes_tx"] == moved, c
    assert len(doc["warnings"]) == 1
    assert "not parsed as HTTP/1.1 or HTTP/2" in doc["warnings"][0]
    assert str(4 * moved) in doc["warnings"][0]


def test_http1_and_http2_at_once_on_one_sidecar(
    testbed_factory: Callable[..., Any], tmp_path: Path
) -> None:
    """HTTP/1.1 requests with ids (sequential, one connection) while h2load runs HTTP/2 on
    the same sidecar: the HTTP/1.1 ones are all found by their ids, the HTTP/2 streams are
    counted as such, and the total matches Envoy's."""
    tb = testbed_factory(app_delay_s=0.001)
    spans_file = tmp_path / "spans.csv"
    session = _capture(tb, spans_file)
    n1, n2 = 211, 2000

    def load() -> None:
        import threading

        from _testbed import send_requests

        out: dict[str, Any] = {}
        t = threading.Thread(target=lambda: out.update(r=send_requests(tb, n1, "mix")))
        t.start()
        _h2load(tb, tb.state.url, n2)
        t.join()
        assert all(x["status"] == 200 for x in out["r"])

    session.during(load)
    doc = _stop(session)
    entries = tb.wait_access_log(n1 + n2, timeout=5)
    assert len(entries) == n1 + n2
    sidecar = doc["sidecars"][0]
    rows = _sidecar_rows(spans_file)
    h1_ids = {r["request_id"] for r in rows if r["request_id"].startswith("mix-")}
    h2_rows = [r for r in rows if int(r["flags"]) & F_DS_H2]
    # CI once missed one id here (not reproduced): say what the HTTP/1.1 rows without one were
    h1_rows = [r for r in rows if not int(r["flags"]) & F_DS_H2]
    odd = [r for r in h1_rows if not r["request_id"].startswith("mix-")]
    assert h1_ids == {f"mix-{i}" for i in range(n1)}, odd[:5]
    assert len(h2_rows) == sidecar["http2_spans"]["downstream"]
    assert len(h2_rows) >= 0.98 * n2
    assert len(rows) - len(h2_rows) == n1
    assert doc["warnings"] == []


def test_h2_connection_opened_before_the_capture_is_followed(
    testbed_factory: Callable[..., Any], tmp_path: Path
) -> None:
    """A client's HTTP/2 connection (and Envoy's upstream one) exist before the probe
    attaches: no preface is ever seen, the walk synchronises on the first plausible frames."""
    tb = testbed_factory(app_delay_s=0.001)
    import subprocess

    client = subprocess.Popen(
        tb.client_cmd([sys.executable, str(Path(__file__).parent / "_h2client.py"),
                       tb.state.server.ip, str(tb.state.ports["h2c"]), "2", "157"]),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert client.stdout is not None and client.stdin is not None
    assert client.stdout.readline().strip() == "warm"  # connections up, 2 requests each done
    session = _capture(tb, tmp_path / "spans.csv", app=False)
    client.stdin.write("go\n")
    client.stdin.flush()
    out = client.stdout.readline()
    assert client.wait(timeout=60) == 0 and out.startswith("done"), out
    doc = _stop(session)
    sidecar = doc["sidecars"][0]
    assert sidecar["requests"] >= 0.98 * 2 * 157, sidecar
    assert sidecar["requests"] <= 2 * 157


def test_unparsed_counter_ignores_http(testbed_factory: Callable[..., Any]) -> None:
    """HTTP/1.1 and HTTP/2 traffic alone leaves (almost) nothing unparsed: the counter is
    not a byte counter in disguise."""
    tb = testbed_factory()
    from profiler.capture.engine import Engine

    engine = Engine()
    try:
        pid = tb.state.server.envoy_pid
        engine.add_target(pid, "sidecar")
        _h2load(tb, tb.state.url, 500)
        _h2load(tb, tb.state.server.h2c_url, 500)
        s = socket.socket()  # nothing: the counter must not move for a refused peer either
        s.close()
        engine.drain()
        stats = engine.proc_stats(pid)
        assert engine.targets[pid].requests >= 980
        assert stats["unparsed_bytes"] <= 0.01 * (stats["rx_bytes"] + stats["tx_bytes"]), stats
    finally:
        engine.close()


def test_h1_to_h2_each_request_is_an_upstream_stream(
    testbed_factory: Callable[..., Any], tmp_path: Path
) -> None:
    """HTTP/1.1 clients (ids) to the app's HTTP/2 port: Envoy turns each request into a
    stream on its upstream connection. Each of the 23 x 3 requests has its span, found by its
    id, with an upstream stream id, and the app's 1 ms in the upstream leg."""
    import threading

    from _testbed import send_requests

    tb = testbed_factory(app_delay_s=0.001)
    spans_file = tmp_path / "spans.csv"
    session = _capture(tb, spans_file, app=False)

    def load() -> None:
        ts = [
            threading.Thread(
                target=send_requests, args=(tb, 23, f"h1h2{k}", tb.state.server.h2c_url)
            )
            for k in range(3)
        ]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    session.during(load)
    doc = _stop(session)
    sidecar = doc["sidecars"][0]
    rows = _sidecar_rows(spans_file)
    assert sorted(r["request_id"] for r in rows) == sorted(
        f"h1h2{k}-{i}" for k in range(3) for i in range(23)
    )
    assert sidecar["http2_spans"] == {"downstream": 0, "upstream": 69}
    ups = sorted(float(r["upstream_us"]) for r in rows)
    assert ups[0] >= 1000.0, ups
    assert doc["warnings"] == []


def test_h2_statuses_decoded_in_the_kernel_match_envoys_log(
    testbed_factory: Callable[..., Any], tmp_path: Path
) -> None:
    """h2load to the app's HTTP/2 port asking for a known mix of statuses (200, 404, 503,
    429): the sidecar's downstream responses' :status, decoded in the kernel from Envoy's
    HPACK (404 a static index, 503 and 429 literals the first time, then dynamic-table
    references the shadow must resolve), count exactly as Envoy's access log; nothing is
    unknown. A shadow off by one insertion, or a Huffman digit table wrong, moves counts
    between codes or into "unknown"."""
    tb = testbed_factory()
    session = _capture(tb, tmp_path / "spans.csv", app=False)
    mix = {200: 400, 404: 300, 503: 200, 429: 100}
    for code, n in mix.items():
        session.during(
            lambda c=code, k=n: _h2load(tb, tb.state.server.h2c_url, k, (f"x-smp-status: {c}",))
        )
    doc = _stop(session)
    total = sum(mix.values())
    entries = tb.wait_access_log(total, timeout=5)
    assert len(entries) == total
    logged: dict[str, int] = {}
    for e in entries:
        logged[str(e.response_code)] = logged.get(str(e.response_code), 0) + 1
    assert logged == {str(c): n for c, n in mix.items()}, logged
    sidecar = doc["sidecars"][0]
    st = sidecar["http2_statuses"]
    assert st["http"] == dict(sorted(logged.items(), key=lambda kv: int(kv[0]))), st
    assert st["grpc"] == {} and st["unknown"] == 0, st
