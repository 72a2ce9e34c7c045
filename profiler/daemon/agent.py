"""The node agent's reconcile loop.

discovery source (Kubernetes pod watch, or node-only process scan) -> the desired set of
targets -> ``engine.add_target`` / ``engine.remove_target`` for the difference -> the engine
drained with ``engine.poll`` -> every ``interval`` an ``engine.snapshot()`` into the metrics
collector. Memory is bounded: the agent holds one entry per attached PID, the collector one
per live label set (plus recently retired ones), the engine aggregates in fixed histograms.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from profiler.daemon.metrics import SnapshotCollector
from profiler.daemon.snapshot import SnapshotLike
from profiler.discovery.kubernetes import PodSet, PodWatcher, Target, resolve_targets
from profiler.discovery.processes import find_sidecars
from profiler.errors import SmpError

log = logging.getLogger(__name__)


class EngineLike(Protocol):
    """The capture engine's interface (``profiler.capture.engine.Engine``)."""

    def add_target(self, pid: int, role: str, labels: Mapping[str, str]) -> None: ...
    def remove_target(self, pid: int) -> None: ...
    def poll(self, timeout_ms: int = 100) -> None: ...
    def snapshot(self) -> SnapshotLike: ...
    def close(self) -> None: ...


class DiscoverySource(Protocol):
    def start(self, stop: threading.Event, on_change: Callable[[], None]) -> None: ...
    def targets(self) -> dict[int, Target]: ...


@dataclass
class NodeDiscovery:
    """Node only: proxies by process name in kubelet-style cgroups (what the testbed has).

    Labels: ``namespace`` empty, ``pod`` the pod uid, ``container`` the proxy kind for the
    sidecar and ``app`` for the processes of the pod's other containers."""

    cgroup_root: str | None = None

    def start(self, stop: threading.Event, on_change: Callable[[], None]) -> None:
        return

    def targets(self) -> dict[int, Target]:
        out: dict[int, Target] = {}
        for s in find_sidecars(cgroup_root=self.cgroup_root):
            uid = s.container.pod_uid
            out[s.pid] = Target(s.pid, "sidecar", _labels(uid, s.kind))
            for pid in s.app_pids:
                out.setdefault(pid, Target(pid, "app", _labels(uid, "app")))
        return out


def _labels(pod: str, container: str) -> dict[str, str]:
    return {"namespace": "", "pod": pod, "container": container}


@dataclass
class KubernetesDiscovery:
    """The pods of this node from the API server; their containers' PIDs from the host."""

    watcher: PodWatcher
    cgroup_root: str | None = None
    _thread: threading.Thread | None = None

    @property
    def podset(self) -> PodSet:
        return self.watcher.podset

    def start(self, stop: threading.Event, on_change: Callable[[], None]) -> None:
        self.watcher.on_change = on_change
        self._thread = threading.Thread(
            target=self.watcher.run, args=(stop,), name="smp-pod-watch", daemon=True
        )
        self._thread.start()

    def targets(self) -> dict[int, Target]:
        return resolve_targets(self.podset.desired(), cgroup_root=self.cgroup_root)


@dataclass
class Agent:
    engine: EngineLike
    source: DiscoverySource
    collector: SnapshotCollector
    interval: float = 5.0
    clock: Callable[[], float] = time.monotonic
    attached: dict[int, Target] = field(default_factory=dict)
    _wake: threading.Event = field(default_factory=threading.Event)
    last_beat: float = 0.0
    reconciles: int = 0

    def reconcile(self) -> tuple[list[int], list[int]]:
        """Bring the engine's targets to the discovered set; (added, removed) PIDs."""
        desired = self.source.targets()
        removed = [
            pid
            for pid, t in self.attached.items()
            if pid not in desired or (desired[pid].role, desired[pid].labels) != (t.role, t.labels)
        ]
        for pid in removed:
            self._remove(pid)
        added = []
        for pid, t in sorted(desired.items()):
            if pid in self.attached:
                continue
            try:
                self.engine.add_target(pid, t.role, t.labels)
            except (SmpError, OSError) as e:  # e.g. the process exited meanwhile
                log.warning("cannot trace PID %d (%s): %s", pid, t.labels, e)
                continue
            self.attached[pid] = t
            added.append(pid)
        self.reconciles += 1
        if added or removed:
            log.info("targets: +%s -%s, %d attached", added, removed, len(self.attached))
        return added, removed

    def _remove(self, pid: int) -> None:
        try:
            self.engine.remove_target(pid)
        except (SmpError, OSError) as e:
            log.warning("cannot detach PID %d: %s", pid, e)
        self.attached.pop(pid, None)

    def flush(self) -> None:
        self.collector.update(self.engine.snapshot())

    def wake(self) -> None:
        """Reconcile soon (the Kubernetes watch saw a change)."""
        self._wake.set()

    def alive(self, max_age: float | None = None) -> tuple[bool, str]:
        age = self.clock() - self.last_beat
        limit = max_age if max_age is not None else max(30.0, 6 * self.interval)
        if self.last_beat and age <= limit:
            return True, f"agent loop alive ({len(self.attached)} targets)"
        return False, f"agent loop stalled for {age:.0f} s"

    def run(self, stop: threading.Event) -> None:
        """Until ``stop``: reconcile and snapshot every ``interval``, poll in between. On stop
        every target is detached, a last snapshot flushed and the engine closed."""
        self.source.start(stop, self.wake)
        next_tick = self.clock()
        try:
            while not stop.is_set():
                now = self.clock()
                self.last_beat = now
                if now >= next_tick or self._wake.is_set():
                    self._wake.clear()
                    self.reconcile()
                    self.flush()
                    next_tick = now + self.interval
                self.engine.poll(100)
        finally:
            self.engine.poll(0)  # drain what is left in the ring buffer
            self.flush()
            for pid in list(self.attached):
                self._remove(pid)
            self.engine.close()
