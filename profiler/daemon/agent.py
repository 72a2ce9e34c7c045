"""The node agent's reconcile loop.

discovery source (Kubernetes pod watch, or node-only process scan) -> the desired set of
targets -> ``engine.add_target`` / ``engine.remove_target`` for the difference -> the engine
drained with ``engine.poll`` -> every ``interval`` an ``engine.snapshot()`` into the metrics
collector. Memory is bounded: the agent holds one entry per attached PID, the collector one
per live label set (plus recently retired ones), the engine aggregates in fixed histograms.

The agent never exits because the probes cannot load (no headers, a missing capability, a
seccomp profile): it keeps serving, says why in :meth:`Agent.health` (``/readyz`` 503 with
the reason, ``smp_agent_up{reason=...}``) and retries with a jittered, doubling backoff.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from profiler.capture.memory import CgroupUsage, cgroup_usage
from profiler.capture.snapshot import SnapshotLike
from profiler.daemon import POLL_MS
from profiler.daemon.metrics import ContainerUsage, Health, SnapshotCollector
from profiler.discovery.cgroups import pids_in_cgroup
from profiler.discovery.kubernetes import PodSet, PodWatcher, Target, resolve_targets
from profiler.discovery.processes import find_sidecars, pod_container_dirs
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
    def synced(self) -> tuple[bool, str]: ...
    def sync_stats(self) -> tuple[float | None, int]:
        """(Unix time of the last successful contact with the source, errors so far)."""
        ...

    def skipped(self) -> dict[str, int]:
        """Mesh pods not traced, by role (gateway, waypoint, ztunnel, ambient)."""
        ...

    def hidden(self) -> dict[str, int]:
        """Containers to trace whose processes are in a PID namespace the agent does not see
        (``namespace/pod/container`` -> processes), as of the last :meth:`targets`."""
        ...


@dataclass
class NodeDiscovery:
    """Node only: proxies by process name in kubelet-style cgroups (what the testbed has).

    Labels: ``namespace`` empty, ``pod`` the pod uid, ``container`` the proxy kind for the
    sidecar and ``app`` for the processes of the pod's other containers."""

    cgroup_root: str | None = None

    def start(self, stop: threading.Event, on_change: Callable[[], None]) -> None:
        return

    def synced(self) -> tuple[bool, str]:
        return True, "node-only discovery"

    def sync_stats(self) -> tuple[float | None, int]:
        return None, 0

    def skipped(self) -> dict[str, int]:
        return {}

    def hidden(self) -> dict[str, int]:
        return {}  # proxies are found by their /proc entries: only visible ones exist here

    def targets(self) -> dict[int, Target]:
        out: dict[int, Target] = {}
        for s in find_sidecars(cgroup_root=self.cgroup_root):
            uid = s.container.pod_uid
            out[s.pid] = Target(s.pid, "sidecar", _labels(uid, s.kind), s.cgroup)
            apps = set(s.app_pids)
            for d in pod_container_dirs(Path(s.cgroup)):
                if str(d) == s.cgroup:
                    continue
                for pid in pids_in_cgroup(str(d), root=str(d)):
                    if pid in apps:
                        out.setdefault(pid, Target(pid, "app", _labels(uid, "app"), str(d)))
        return out


def _labels(pod: str, container: str) -> dict[str, str]:
    return {"namespace": "", "pod": pod, "container": container, "mesh": ""}


@dataclass
class KubernetesDiscovery:
    """The pods of this node from the API server; their containers' PIDs from the host."""

    watcher: PodWatcher
    cgroup_root: str | None = None
    _thread: threading.Thread | None = None
    _hidden: dict[str, int] = field(default_factory=dict)

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
        hidden: dict[str, int] = {}
        out = resolve_targets(self.podset.desired(), cgroup_root=self.cgroup_root, hidden=hidden)
        if hidden and hidden != self._hidden:
            log.warning(
                "processes in a PID namespace this agent does not see (hostPID?): %s",
                ", ".join(f"{c}: {n}" for c, n in sorted(hidden.items())),
            )
        self._hidden = hidden
        return out

    def hidden(self) -> dict[str, int]:
        return dict(self._hidden)

    def synced(self) -> tuple[bool, str]:
        return self.watcher.synced()

    def sync_stats(self) -> tuple[float | None, int]:
        return self.watcher.last_sync, self.watcher.errors

    def skipped(self) -> dict[str, int]:
        return self.podset.skipped()


def renice(nice: int) -> None:
    """Run every thread of this process at niceness ``nice``; 0 leaves them as they were.
    Linux keeps niceness per thread (numpy's BLAS pool already runs at import), and threads
    started later inherit their creator's. Without the right to (a niceness below the
    current one needs CAP_SYS_NICE) it says so and runs as it is."""
    if not nice:
        return
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]  # the calling thread
    for tid in tids:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        except ProcessLookupError:
            continue  # a thread that has just ended
        except OSError as e:
            now = os.getpriority(os.PRIO_PROCESS, 0)
            log.warning("cannot set niceness %d (%s): running at %d", nice, e.strerror, now)
            return


@dataclass
class Agent:
    """``engine`` is loaded by ``load_engine`` in :meth:`run` when not given; until it loads
    the agent serves its health and retries (``backoff_initial`` doubling to ``backoff_max``,
    each wait jittered by +-20% so a fleet does not retry in step)."""

    engine: EngineLike | None
    source: DiscoverySource
    collector: SnapshotCollector
    interval: float = 5.0
    poll_ms: int = POLL_MS
    clock: Callable[[], float] = time.monotonic
    load_engine: Callable[[], EngineLike] | None = None
    preflight: Callable[[], tuple[bool, str]] | None = None
    backoff_initial: float = 5.0
    backoff_max: float = 300.0
    stale_after: float | None = None  # a snapshot older than this is not fresh
    attached: dict[int, Target] = field(default_factory=dict)
    _wake: threading.Event = field(default_factory=threading.Event)
    last_beat: float = 0.0
    reconciles: int = 0
    load_failures: int = 0
    loading_since: float | None = None
    _reason: tuple[str, str] = ("starting", "loading the probes")
    _missing: str | None = None  # what the capability check found missing, if it ran

    def reconcile(self) -> tuple[list[int], list[int]]:
        """Bring the engine's targets to the discovered set; (added, removed) PIDs."""
        assert self.engine is not None
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
        assert self.engine is not None
        try:
            self.engine.remove_target(pid)
        except (SmpError, OSError) as e:
            log.warning("cannot detach PID %d: %s", pid, e)
        self.attached.pop(pid, None)

    def flush(self) -> None:
        if self.engine is not None:
            self.collector.update(self.engine.snapshot(), self.container_usage())

    def container_usage(self) -> list[ContainerUsage]:
        """Memory and CPU of every traced container from its cgroup in the host's tree: once
        per container (however many of its processes are traced), summed per label set (the
        node-only discovery labels all of a pod's app containers ``app``)."""
        by_key: dict[tuple[tuple[tuple[str, str], ...], str], dict[str, CgroupUsage]] = {}
        labels_of: dict[tuple[tuple[tuple[str, str], ...], str], Mapping[str, str]] = {}
        for t in self.attached.values():
            if t.cgroup is None:
                continue
            key: tuple[tuple[tuple[str, str], ...], str] = (tuple(sorted(t.labels.items())), t.role)
            dirs = by_key.setdefault(key, {})
            if t.cgroup in dirs:
                continue
            usage = cgroup_usage(t.cgroup)
            if usage is not None:
                dirs[t.cgroup] = usage
                labels_of[key] = t.labels
        out = []
        for k, dirs in by_key.items():
            if not dirs:
                continue
            cpus = [u.cpu_seconds for u in dirs.values()]
            mems = [u.working_set for u in dirs.values()]
            out.append(
                ContainerUsage(
                    labels_of[k],
                    k[1],
                    None if None in mems else sum(m for m in mems if m is not None),
                    None if None in cpus else sum(c for c in cpus if c is not None),
                )
            )
        return out

    def wake(self) -> None:
        """Reconcile soon (the Kubernetes watch saw a change)."""
        self._wake.set()

    def alive(self, max_age: float | None = None) -> tuple[bool, str]:
        """Liveness: the loop beats (a probe load in progress counts, up to 10 minutes)."""
        now = self.clock()
        if self.loading_since is not None and now - self.loading_since <= 600:
            return True, f"loading the probes for {now - self.loading_since:.0f} s"
        age = now - self.last_beat
        limit = max_age if max_age is not None else max(30.0, 6 * self.interval)
        if self.last_beat and age <= limit:
            return True, f"agent loop alive ({len(self.attached)} targets)"
        if not self.last_beat:
            return True, "starting"
        return False, f"agent loop stalled for {age:.0f} s"

    def health(self) -> Health:
        """Readiness, cheap enough for every probe: the engine loaded, a snapshot fresh, the
        discovery synced. ``reason`` is a short code (``smp_agent_up`` label), ``detail`` the
        sentence ``/readyz`` answers."""
        up, reason, detail = self._readiness()
        last_sync, errors = self.source.sync_stats()
        skipped = self.source.skipped()
        return Health(up, reason, detail, self.load_failures, last_sync, errors, skipped)

    def _readiness(self) -> tuple[bool, str, str]:
        if self.engine is None:
            return False, *self._reason
        age = self.collector.age()
        stale = self.stale_after if self.stale_after is not None else max(30.0, 6 * self.interval)
        if age is None:
            return False, "no_snapshot", "no snapshot taken yet"
        if age > stale:
            return False, "snapshot_stale", f"last snapshot taken {age:.0f} s ago"
        synced, why = self.source.synced()
        if not synced:
            return False, "discovery_not_synced", why
        hidden = self.source.hidden()
        if hidden:
            names = sorted(hidden)
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            return (
                False,
                "pids_not_visible",
                f"the processes of {', '.join(names[:3])}{more} are in a PID namespace this "
                "agent does not see: their requests would count zero; run it with "
                "hostPID: true (docs/daemonset.md)",
            )
        return True, "ready", f"ready: {len(self.attached)} processes traced"

    def ready(self) -> tuple[bool, str]:
        h = self.health()
        return h.up, h.detail

    def _load(self, stop: threading.Event) -> bool:
        """Load the engine, retrying with backoff until it loads or ``stop``; False on stop.
        The full capability check (``preflight``, doctor's: it compiles a test program) runs
        once, at the first failure, so its answer is in the log and the not-ready reason
        without delaying a node that works."""
        assert self.load_engine is not None
        delay = self.backoff_initial
        while not stop.is_set():
            self.loading_since = self.clock()
            try:
                self.engine = self.load_engine()
                self.loading_since = None
                log.info("probes loaded")
                return True
            except Exception as e:  # never exit: say why, retry
                self.loading_since = None
                self.load_failures += 1
                wait = delay * random.uniform(0.8, 1.2)
                why = str(e) or type(e).__name__
                if self.load_failures == 1 and self.preflight is not None:
                    ok, detail = self.preflight()
                    log.warning("capability check: %s", detail)
                    self._missing = None if ok else detail
                code = "probe_load_failed" if self._missing is None else "capability_missing"
                also = "" if self._missing is None else f"; capability check: {self._missing}"
                self._reason = (
                    code,
                    f"cannot load the probes: {why}{also} (attempt {self.load_failures}, "
                    f"retrying in {wait:.0f} s)",
                )
                log.warning("%s", self._reason[1])
                end = self.clock() + wait
                while not stop.is_set() and self.clock() < end:
                    self.last_beat = self.clock()
                    stop.wait(min(1.0, max(end - self.clock(), 0.0)))
                delay = min(delay * 2, self.backoff_max)
        return False

    def run(self, stop: threading.Event) -> None:
        """Until ``stop``: reconcile and snapshot every ``interval``, poll in between. On stop
        every target is detached, a last snapshot flushed and the engine closed."""
        self.source.start(stop, self.wake)
        self.last_beat = self.clock()
        if self.engine is None and not self._load(stop):
            return
        engine = self.engine
        assert engine is not None
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
                # up to poll_ms (bigger batches: less CPU per request), never past the tick
                wait = min(self.poll_ms / 1000, max(next_tick - self.clock(), 0.0))
                engine.poll(max(round(wait * 1000), 1))
        finally:
            engine.poll(0)  # drain what is left in the ring buffer
            self.flush()
            for pid in list(self.attached):
                self._remove(pid)
            engine.close()
