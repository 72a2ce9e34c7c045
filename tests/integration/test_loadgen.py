"""The load generators against real servers: the built-in one, wrk and hey, on loopback,
inside a network namespace, and in the testbed's client pod through a real Envoy."""

from __future__ import annotations

import contextlib
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from profiler.errors import TargetUnreachable
from profiler.loadgen import LoadSpec, run_load, wrk
from profiler.loadgen.common import run_tool
from profiler.testbed import read_access_log

SERVER = Path(__file__).resolve().parents[1] / "helpers" / "http_server.py"

Server = Callable[..., str]


@contextlib.contextmanager
def _server(*args: str, netns: str | None = None) -> Iterator[str]:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    p = subprocess.Popen(
        [*prefix, sys.executable, str(SERVER), *args], stdout=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout is not None
        port = int(p.stdout.readline())
        yield f"http://127.0.0.1:{port}/"
    finally:
        p.kill()
        p.wait()


@pytest.fixture
def server() -> Iterator[Server]:
    """``server("--stall-at-ms", "1500")`` -> URL of a fresh helper server, killed after."""
    with contextlib.ExitStack() as stack:
        yield lambda *args: stack.enter_context(_server(*args))


def _spec(url: str, **kw: Any) -> LoadSpec:
    base: dict[str, Any] = {"generator": "builtin", "target": url, "rate": 1000.0}
    base.update({"duration_s": 3.0, "connections": 8, **kw})
    return LoadSpec(**base)


def test_builtin_holds_1000_rps(server: Server) -> None:
    r = run_load(_spec(server(), warmup_s=0.5, run_id="hold"))
    assert r.rate_achieved == pytest.approx(1000, rel=0.01), r.notes
    assert r.target_reached and r.mode == "open-loop" and r.workers == 1
    assert r.errors == {} and r.status_counts == {200: r.requests}
    assert r.requests == pytest.approx(3000, abs=3) and r.requests_sent == r.requests
    assert r.histogram is not None and r.histogram.count == r.requests
    ids = r.request_ids or []
    assert len(ids) == len(set(ids)) == r.requests and ids[0] == "smp-hold-500"  # after warm-up
    assert r.bytes_received and r.bytes_received > r.requests * 50


def test_stall_shows_in_open_loop_p99_not_in_closed_loop(server: Server) -> None:
    """200 ms of stall at 1000 req/s: ~200 requests intended during it wait (up to 200 ms),
    ~6.7% of 3000, so p99 is well above 100 ms. A closed-loop client has only its few
    connections' requests in flight during the stall, so its p99 stays small."""
    stall = ("--stall-at-ms", "1500", "--stall-ms", "200")
    opened = run_load(_spec(server(*stall), connections=4))
    assert opened.target_reached
    assert opened.percentiles_ms[99] >= 100, opened.percentiles_ms
    assert opened.max_ms is not None and opened.max_ms >= 190
    # the same run timed from the actual send (what coordinated omission reports)
    assert opened.service_histogram is not None
    assert opened.service_histogram.percentile(99) < 50_000

    closed = run_load(_spec(server(*stall), rate=None, connections=4))
    assert closed.mode == "closed-loop" and closed.requests > 3000
    assert closed.max_ms is not None and closed.max_ms >= 190  # the stall was there
    assert closed.percentiles_ms[99] < 50, closed.percentiles_ms


def test_timeouts_are_counted_by_kind(server: Server) -> None:
    url = server("--stall-at-ms", "500", "--stall-ms", "1200")
    r = run_load(_spec(url, rate=200.0, duration_s=2.0, connections=2, timeout_s=0.4))
    assert r.errors.get("timeout", 0) >= 100, r.errors  # ~240 intended during the stall
    assert r.requests + r.errors["timeout"] == pytest.approx(400, abs=2)


def test_idle_connections_closed_by_the_server_are_reopened(server: Server) -> None:
    url = server("--idle-close-ms", "60")  # every connection idles ~200 ms between requests
    r = run_load(_spec(url, rate=20.0, duration_s=2.0, connections=4))
    assert r.errors == {} and r.status_counts == {200: 40}


def test_two_workers_merge(server: Server) -> None:
    r = run_load(_spec(server(), rate=3000.0, duration_s=2.0, workers=2, run_id="two"))
    assert r.workers == 2 and r.target_reached, r.notes
    assert r.rate_achieved == pytest.approx(3000, rel=0.01)
    numbers = {int(i.rsplit("-", 1)[1]) % 2 for i in r.request_ids or []}
    assert numbers == {0, 1}  # both workers' requests
    assert r.histogram is not None and r.histogram.count == r.requests


def test_poisson_arrivals(server: Server) -> None:
    r = run_load(_spec(server(), rate=500.0, duration_s=3.0, poisson=True))
    assert r.rate_achieved == pytest.approx(500, rel=0.1)
    assert r.errors == {}


def test_unreachable_target() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TargetUnreachable, match="cannot connect"):
        run_load(_spec(f"http://127.0.0.1:{port}/", duration_s=1.0))


def _wrk_percentile_ms(text: str, p: str) -> float:
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == f"{p}%":
            v = parts[1]
            for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
                if v.endswith(unit):
                    return float(v[: -len(unit)]) * f
    raise AssertionError(f"no {p}% line in wrk output")


def test_wrk_runs_and_its_histogram_is_exact(server: Server, tmp_path: Path) -> None:
    url = server()
    spec = LoadSpec("wrk", url, None, 1.0, 4)
    lua = tmp_path / "s.lua"
    lua.write_text(wrk.LUA)
    out = run_tool("wrk", wrk.command(spec, str(lua), 1.0), 10)
    r = wrk.parse(out)
    assert r.requests > 1000 and r.status_counts == {200: r.requests}
    assert r.histogram is not None and r.histogram.count >= r.requests
    # our p50/p99 from wrk's own samples agree with the percentiles wrk printed
    for p in ("50", "99"):
        assert r.percentiles_ms[float(p)] == pytest.approx(_wrk_percentile_ms(out, p), rel=0.02)
    full = run_load(spec)
    assert full.generator_version and full.requests > 1000 and full.target == url


def test_hey_runs_at_a_rate(server: Server) -> None:
    r = run_load(LoadSpec("hey", server(), 200.0, 2.0, 4))
    assert r.generator == "hey" and r.mode == "closed-loop"
    assert r.rate_achieved == pytest.approx(200, rel=0.05)
    assert r.status_counts == {200: r.requests} and r.histogram is not None


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"smp-lg-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.mark.testbed
def test_generators_inside_a_network_namespace(netns: str) -> None:
    """The server listens on the namespace's own loopback: only a client inside reaches it."""
    with _server(netns=netns) as url:
        with pytest.raises(TargetUnreachable):  # not from the host
            run_load(_spec(url, duration_s=1.0))
        r = run_load(_spec(url, rate=500.0, duration_s=1.0, netns=netns))
        assert r.target_reached and r.status_counts == {200: 500}
        assert run_load(LoadSpec("wrk", url, None, 1.0, 2, netns=netns)).requests > 100
        assert run_load(LoadSpec("hey", url, 100.0, 1.0, 2, netns=netns)).requests > 50


@pytest.mark.testbed
@pytest.mark.envoy
def test_builtin_1000_rps_in_the_testbed_client_pod(testbed_factory: Callable[..., Any]) -> None:
    """Client pod -> server pod's Envoy sidecar (iptables capture) -> app, at 1000 req/s."""
    tb = testbed_factory()
    client = tb.state.client
    spec = LoadSpec(
        "builtin",
        tb.state.url,
        1000.0,
        3.0,
        16,
        warmup_s=0.5,
        netns=client.netns,
        cgroup=client.cgroups.get("client"),
        keep_request_ids=5000,
    )
    r = run_load(spec)
    assert r.rate_achieved == pytest.approx(1000, rel=0.01), r.notes
    assert r.target_reached and r.errors == {}
    assert r.status_counts == {200: r.requests}
    assert r.percentiles_ms[50] < 20
    # every measured request id reached the server's sidecar (what a capture matches on)
    ids = set(r.request_ids or [])
    assert len(ids) == r.requests
    deadline = time.monotonic() + 10  # Envoy flushes its access log about once a second
    while not ids <= (logged := {e.request_id for e in read_access_log(tb.state.access_log)}):
        assert time.monotonic() < deadline, f"{len(ids - logged)} ids not in the access log"
        time.sleep(0.2)
