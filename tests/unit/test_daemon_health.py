"""The agent never exits on a probe-load failure: it serves its health at once, says why,
retries with backoff, and becomes ready once the probes load, a snapshot is fresh and the
discovery is synced."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator, Mapping

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from test_daemon_server import get

from profiler.capture.snapshot import Snapshot
from profiler.daemon.agent import Agent, EngineLike
from profiler.daemon.metrics import SnapshotCollector
from profiler.daemon.server import MetricsServer
from profiler.discovery.kubernetes import Target


class Engine:
    def add_target(self, pid: int, role: str, labels: Mapping[str, str]) -> None: ...
    def remove_target(self, pid: int) -> None: ...
    def poll(self, timeout_ms: int = 100) -> None:
        time.sleep(0.005)

    def snapshot(self) -> Snapshot:
        return Snapshot()

    def close(self) -> None: ...


class Source:
    def __init__(self) -> None:
        self.ok, self.errors, self.last = True, 0, 1.7e9

    def start(self, stop: threading.Event, on_change: Callable[[], None]) -> None: ...
    def targets(self) -> dict[int, Target]:
        return {}

    def synced(self) -> tuple[bool, str]:
        return self.ok, "synced" if self.ok else "no answer from the API server for 700 s"

    def sync_stats(self) -> tuple[float | None, int]:
        return self.last, self.errors

    def skipped(self) -> dict[str, int]:
        return {"ambient": 2}

    def hidden(self) -> dict[str, int]:
        return {}


class FlakyLoader:
    """Fails ``n`` times (as on a node without headers or CAP_PERFMON), then loads."""

    def __init__(self, n: int) -> None:
        self.n, self.calls = n, 0

    def __call__(self) -> EngineLike:
        self.calls += 1
        if self.calls <= self.n:
            raise OSError(1, "Operation not permitted", "perf_event_open")
        return Engine()


def metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    _, text = get(port, "/metrics")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


@pytest.fixture
def agent_served() -> Iterator[tuple[Agent, FlakyLoader, Source, int, threading.Event]]:
    collector = SnapshotCollector()
    source, loader = Source(), FlakyLoader(3)
    agent = Agent(
        None,
        source,
        collector,
        interval=0.02,
        load_engine=loader,
        backoff_initial=0.05,
        backoff_max=0.1,
    )
    collector.health = agent.health
    reg = CollectorRegistry()
    reg.register(collector)
    server = MetricsServer(reg, agent.ready, agent.alive, port=0, host="127.0.0.1").start()
    stop = threading.Event()
    try:
        yield agent, loader, source, server.port, stop
    finally:
        stop.set()
        server.stop()


def _until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_probe_load_failures_keep_the_agent_up_then_it_becomes_ready(
    agent_served: tuple[Agent, FlakyLoader, Source, int, threading.Event],
) -> None:
    agent, loader, source, port, stop = agent_served
    # before the loop even starts: alive, not ready, and why
    assert get(port, "/healthz")[0] == 200
    code, text = get(port, "/readyz")
    assert code == 503 and "loading the probes" in text
    assert metrics(port)["smp_agent_up", (("k8s_node_name", ""), ("reason", "starting"))] == 0
    t = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    t.start()
    _until(lambda: loader.calls >= 1)
    code, text = get(port, "/readyz")
    assert code == 503 and "Operation not permitted" in text, text
    m = metrics(port)
    assert m["smp_agent_up", (("k8s_node_name", ""), ("reason", "probe_load_failed"))] == 0
    assert get(port, "/healthz")[0] == 200  # failing to load is not a reason to restart
    _until(lambda: get(port, "/readyz")[0] == 200)
    assert loader.calls == 4  # three failures, retried, then loaded
    m = metrics(port)
    assert m["smp_agent_up", (("k8s_node_name", ""), ("reason", "ready"))] == 1
    assert m["smp_probe_load_failures_total", ()] == 3
    assert m["smp_discovery_last_sync_timestamp_seconds", ()] == 1.7e9
    assert m["smp_discovery_pods_skipped", (("role", "ambient"),)] == 2
    # the discovery loses the API server: not ready, with its reason
    source.ok, source.errors = False, 5
    code, text = get(port, "/readyz")
    assert code == 503 and "no answer from the API server" in text
    m = metrics(port)
    assert m["smp_agent_up", (("k8s_node_name", ""), ("reason", "discovery_not_synced"))] == 0
    assert m["smp_discovery_errors_total", ()] == 5
    stop.set()
    t.join(timeout=5)
    assert not t.is_alive()


def test_stale_snapshot_is_not_ready() -> None:
    now = [100.0]
    collector = SnapshotCollector(clock=lambda: now[0])
    agent = Agent(Engine(), Source(), collector, interval=5, clock=lambda: now[0])
    assert agent.health().reason == "no_snapshot"
    agent.flush()
    assert agent.health().reason == "ready"
    now[0] += 31  # 6 intervals or 30 s, whichever is longer
    h = agent.health()
    assert (h.up, h.reason) == (False, "snapshot_stale") and "31 s ago" in h.detail


def test_backoff_doubles_with_jitter_and_stops_at_the_cap() -> None:
    now = [0.0]
    stop = threading.Event()

    class Clock:
        def __call__(self) -> float:
            return now[0]

    def wait(timeout: float | None = None) -> bool:
        now[0] += timeout or 0.0
        return stop.is_set()

    loader = FlakyLoader(7)
    agent = Agent(
        None,
        Source(),
        SnapshotCollector(),
        clock=Clock(),
        load_engine=loader,
        backoff_initial=5,
        backoff_max=60,
    )
    starts: list[float] = []

    def timed_load() -> EngineLike:
        starts.append(now[0])
        return loader()

    agent.load_engine = timed_load
    stop.wait = wait  # type: ignore[method-assign]
    assert agent._load(stop)
    waits = [b - a for a, b in itertools.pairwise(starts)]
    nominal = [5, 10, 20, 40, 60, 60, 60]
    assert len(waits) == 7
    for got, want in zip(waits, nominal, strict=True):
        assert 0.8 * want - 1 <= got <= 1.2 * want + 1, (waits, nominal)


def test_the_full_capability_check_runs_once_and_only_when_loading_fails() -> None:
    calls: list[int] = []

    def doctor() -> tuple[bool, str]:
        calls.append(1)
        return False, "root: no CAP_BPF+CAP_PERFMON"

    stop = threading.Event()
    ok_agent = Agent(None, Source(), SnapshotCollector(), load_engine=FlakyLoader(0),
                     preflight=doctor)  # fmt: skip
    assert ok_agent._load(stop) and calls == []  # a node that works pays nothing for it

    loader = FlakyLoader(3)
    agent = Agent(None, Source(), SnapshotCollector(), load_engine=loader, preflight=doctor,
                  backoff_initial=0.01, backoff_max=0.01)  # fmt: skip
    assert agent._load(stop)
    assert calls == [1] and loader.calls == 4  # once, at the first of three failures
    agent.engine = None
    h = agent.health()
    assert h.reason == "capability_missing" and "CAP_PERFMON" in h.detail


@pytest.mark.parametrize(
    ("poll_ms", "interval", "want"),
    [(500, 5.0, 500), (200, 5.0, 200), (500, 0.05, 50)],
)
def test_the_loop_polls_up_to_poll_ms_and_never_past_its_tick(
    poll_ms: int, interval: float, want: int
) -> None:
    """The agent waits up to --poll-ms for the probe's records (ms, not s), and less when its
    next reconcile is due sooner: on a clock that stands still every wait is the smaller."""
    stop = threading.Event()
    waits: list[int] = []

    class Recording(Engine):
        def poll(self, timeout_ms: int = 100) -> None:
            waits.append(timeout_ms)
            if len(waits) == 3:
                stop.set()

    agent = Agent(
        Recording(), Source(), SnapshotCollector(), interval=interval, poll_ms=poll_ms,
        clock=lambda: 100.0,
    )  # fmt: skip
    agent.run(stop)
    assert waits[:3] == [want] * 3 and waits[3:] == [0]  # then the last drain
