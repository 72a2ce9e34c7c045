"""Kubernetes discovery: which containers on this node are sidecars, and their processes.

:class:`PodSet` is the pure part: fed with watch events (``on_event``) or a full list
(``resync``), it keeps the desired set of sidecar containers and the app containers of their
pods. :func:`resolve_targets` maps that set to PIDs through the host's /proc and cgroups
(the DaemonSet runs with ``hostPID``). :class:`PodWatcher` feeds a PodSet from the API
server: list once, then watch on from the last resourceVersion, relist on 410 Gone,
reconnect with backoff on errors and on a watch that stays silent past its read timeout.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from profiler.discovery.cgroups import PROC, cgroup_processes
from profiler.discovery.meshes import PodMesh, _containers, classify
from profiler.discovery.processes import _non_pause, container_cgroups, proxy_kind
from profiler.errors import TargetNotFound, TargetUnreachable

log = logging.getLogger(__name__)

Role = Literal["sidecar", "app"]
DEFAULT_SIDECAR_NAMES = ("istio-proxy", "linkerd-proxy")
_RUNTIMES = {"containerd": "containerd", "cri-o": "cri-o", "docker": "docker"}


@dataclass(frozen=True)
class DesiredContainer:
    """A running container of a meshed pod that the agent should trace."""

    namespace: str
    pod: str
    pod_uid: str
    container: str
    container_id: str  # hex, without the "containerd://" scheme
    runtime: str | None
    role: Role
    mesh: str = ""  # SMP mesh type from the pod's evidence; "" when none says

    @property
    def labels(self) -> dict[str, str]:
        return {
            "namespace": self.namespace,
            "pod": self.pod,
            "container": self.container,
            "mesh": self.mesh,
        }


@dataclass(frozen=True)
class Target:
    """One process to trace, with the labels its metrics carry."""

    pid: int
    role: Role
    labels: Mapping[str, str]
    cgroup: str | None = None  # file-system path of its container's cgroup, when known


def split_container_id(value: str) -> tuple[str | None, str]:
    """``"containerd://<id>"`` -> (``"containerd"``, ``"<id>"``)."""
    scheme, sep, cid = value.partition("://")
    if not sep:
        return None, value
    return _RUNTIMES.get(scheme, scheme), cid


@dataclass
class PodSet:
    """The desired set of containers to trace on this node, kept from pod events."""

    sidecar_names: tuple[str, ...] = DEFAULT_SIDECAR_NAMES
    _pods: dict[str, tuple[DesiredContainer, ...]] = field(default_factory=dict)
    _skipped: dict[str, str] = field(default_factory=dict)  # pod uid -> role
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def containers_of(self, pod: Any) -> tuple[DesiredContainer, ...]:
        """The containers of one ``V1Pod`` to trace: none unless it is a sidecar pod (see
        :mod:`profiler.discovery.meshes`: gateways, waypoints, ztunnel and ambient pods are
        not) with a running sidecar."""
        meta, status = pod.metadata, pod.status
        if status is None or status.phase in ("Succeeded", "Failed"):
            return ()
        mesh = classify(pod, self.sidecar_names)
        self._note(meta, mesh)
        if mesh.role != "sidecar":
            return ()
        native = {c.name for c in _containers(pod.spec)}
        statuses = [
            *(status.container_statuses or []),
            *(s for s in (status.init_container_statuses or []) if s.name in native),
        ]
        out: list[DesiredContainer] = []
        for s in statuses:
            running = s.state is not None and s.state.running is not None
            if not running or not s.container_id:
                continue
            runtime, cid = split_container_id(s.container_id)
            role: Role = "sidecar" if s.name in mesh.sidecars else "app"
            out.append(
                DesiredContainer(
                    meta.namespace, meta.name, meta.uid, s.name, cid, runtime, role, mesh.mesh
                )
            )
        if not any(c.role == "sidecar" for c in out):
            return ()
        return tuple(sorted(out, key=lambda c: (c.role != "sidecar", c.container)))

    def _note(self, meta: Any, mesh: PodMesh) -> None:
        """Remember (and log once) a mesh pod that is not traced, and why."""
        with self._lock:
            if mesh.role in ("sidecar", "none"):
                self._skipped.pop(meta.uid, None)
                return
            if meta.uid not in self._skipped:
                log.info("not traced: %s/%s: %s", meta.namespace, meta.name, mesh.reason)
            self._skipped[meta.uid] = mesh.role

    def skipped(self) -> dict[str, int]:
        """Mesh pods of this node that are not traced, by role (gateway, waypoint, ...)."""
        with self._lock:
            out: dict[str, int] = {}
            for role in self._skipped.values():
                out[role] = out.get(role, 0) + 1
            return out

    def on_event(self, event_type: str, pod: Any) -> bool:
        """Apply one watch event (ADDED, MODIFIED, DELETED); True when the set changed."""
        uid = pod.metadata.uid
        new = () if event_type == "DELETED" else self.containers_of(pod)
        with self._lock:
            if event_type == "DELETED":
                self._skipped.pop(uid, None)
            old = self._pods.get(uid, ())
            if new:
                self._pods[uid] = new
            else:
                self._pods.pop(uid, None)
        return new != old

    def resync(self, pods: Iterable[Any]) -> bool:
        """Replace the whole set from a full list of this node's pods."""
        pods = list(pods)
        fresh = {p.metadata.uid: c for p in pods if (c := self.containers_of(p))}
        listed = {p.metadata.uid for p in pods}
        with self._lock:
            changed = fresh != self._pods
            self._pods = fresh
            self._skipped = {u: r for u, r in self._skipped.items() if u in listed}
        return changed

    def desired(self) -> list[DesiredContainer]:
        with self._lock:
            return [c for cs in self._pods.values() for c in cs]


def resolve_targets(
    desired: Iterable[DesiredContainer],
    cgroup_root: str | None = None,
    proc: str = PROC,
    hidden: dict[str, int] | None = None,
) -> dict[int, Target]:
    """PIDs of the desired containers, by container id through the cgroup tree, as this
    process's PID namespace numbers them (its ``/proc``: on a kind/k3d node, the node
    container's namespace; the probe learns the kernel's PIDs itself).

    In a sidecar container only the proxy processes are targets (Istio's pilot-agent runs
    next to Envoy); when none is recognised, every process of the container is. Containers
    whose cgroup is not there (yet, or any more) are skipped. ``hidden`` (when given) gets,
    per ``namespace/pod/container``, the number of its processes that are in a PID namespace
    this process does not see (no hostPID): they cannot be traced.
    """
    index = container_cgroups(cgroup_root)
    targets: dict[int, Target] = {}
    for c in desired:
        cgroup = index.get(c.container_id)
        if cgroup is None:
            continue
        try:
            seen, invisible = cgroup_processes(cgroup, root=cgroup)
        except TargetNotFound:
            continue
        if invisible and hidden is not None:
            hidden[f"{c.namespace}/{c.pod}/{c.container}"] = invisible
        pids = _non_pause(seen, proc)
        if c.role == "sidecar":
            pids = tuple(p for p in pids if proxy_kind(p, proc) is not None) or pids
        for pid in pids:
            targets[pid] = Target(pid, c.role, c.labels, cgroup)
    return targets


class KubernetesUnavailable(TargetUnreachable):
    """No in-cluster config and no usable kubeconfig, or the API server refuses us."""


def core_api(kubeconfig: str | None = None) -> Any:
    """A CoreV1Api from the in-cluster service account, else from the kubeconfig."""
    from kubernetes import client, config

    try:
        if kubeconfig is None:
            try:
                config.load_incluster_config()  # type: ignore[no-untyped-call]
            except config.ConfigException:
                config.load_kube_config()  # type: ignore[no-untyped-call]
        else:
            config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError, TypeError) as e:
        where = kubeconfig or "in-cluster or ~/.kube/config"
        raise KubernetesUnavailable(f"no Kubernetes configuration ({where}): {e}") from None
    cfg = client.Configuration.get_default_copy()
    cfg.socket_options = keepalive_socket_options()
    return client.CoreV1Api(client.ApiClient(cfg))


def keepalive_socket_options() -> list[tuple[int, int, int]]:
    """urllib3's defaults plus TCP keepalive with client-go's timings (30 s idle, then 9
    probes 15 s apart): a connection to an API server that vanished (failover, a load
    balancer dropping idle flows) is closed by the kernel instead of hanging."""
    import socket

    from urllib3.connection import HTTPConnection

    opts = list(HTTPConnection.default_socket_options)
    opts.append((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1))
    for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 15), ("TCP_KEEPCNT", 9)):
        if hasattr(socket, name):
            opts.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    return opts


@dataclass
class PodWatcher:
    """Keeps a :class:`PodSet` in step with the pods scheduled on ``node_name``.

    One list (``resourceVersion=0``: served from the API server's watch cache, not a quorum
    read of etcd, which matters when every node relists after a failover), then watches that
    continue from the last resourceVersion seen (events and bookmarks), each window ending
    after ``resync_seconds`` (jittered, ended by the server); a relist only at start and on
    410 Gone. Every request has a client timeout: a watch that sends nothing, not even the end
    of its window, for ``read_timeout`` seconds (default: the longest window plus 30 s) is a
    dead connection (an API server failover leaves half-open TCP connections the client never
    notices) and is reconnected; TCP keepalive (``core_api``) finds most of them sooner.
    Every answer counts as contact (a list, an accepted watch, an event or bookmark, a window's
    end); ``synced()`` turns false after ``stale_after`` seconds without one."""

    podset: PodSet
    node_name: str
    api: Any
    resync_seconds: int = 300
    on_change: Callable[[], None] | None = None
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    read_timeout: float | None = None
    connect_timeout: float = 10.0
    list_timeout: float = 60.0
    stale_after: float = 600.0
    clock: Callable[[], float] = time.time
    relists: int = 0  # how many full lists were done: the start and the 410 recoveries
    watches: int = 0
    errors: int = 0  # failed lists and watches
    last_sync: float | None = None  # Unix time of the last answer from the API server
    resource_version: str | None = None

    def _changed(self, changed: bool) -> None:
        if changed and self.on_change is not None:
            self.on_change()

    def _contact(self) -> None:
        self.last_sync = self.clock()

    def synced(self) -> tuple[bool, str]:
        if self.last_sync is None:
            return False, f"no pod list from the API server yet ({self.errors} errors)"
        age = self.clock() - self.last_sync
        if age > self.stale_after:
            return False, f"no answer from the API server for {age:.0f} s ({self.errors} errors)"
        return True, f"pods of {self.node_name} synced {age:.0f} s ago"

    @property
    def _selector(self) -> str:
        return f"spec.nodeName={self.node_name}"

    def relist(self) -> None:
        pods = self.api.list_pod_for_all_namespaces(
            field_selector=self._selector,
            resource_version="0",
            _request_timeout=(self.connect_timeout, self.list_timeout),
        )
        self.relists += 1
        self.resource_version = pods.metadata.resource_version
        self._contact()
        self._changed(self.podset.resync(pods.items))

    def watch_once(self, stop: threading.Event) -> None:
        """One watch window from ``resource_version``."""
        from kubernetes import watch

        w = watch.Watch()  # type: ignore[no-untyped-call]
        window = max(1, round(self.resync_seconds * random.uniform(0.9, 1.1)))
        read = self.read_timeout or self.resync_seconds * 1.1 + 30
        list_pods = self.api.list_pod_for_all_namespaces

        @functools.wraps(list_pods)  # the watch reads the call's signature and docstring
        def accepted(*args: Any, **kwargs: Any) -> Any:
            response = list_pods(*args, **kwargs)
            self._contact()  # the API server answered the watch (headers): it is there
            return response

        stream = w.stream(  # type: ignore[no-untyped-call]
            accepted,
            field_selector=self._selector,
            resource_version=self.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=window,
            _request_timeout=(self.connect_timeout, read),
        )
        self.watches += 1
        for ev in stream:
            self._contact()
            if stop.is_set():
                w.stop()  # type: ignore[no-untyped-call]
                break
            kind = ev["type"]
            if kind == "BOOKMARK":
                rv = (ev.get("raw_object") or {}).get("metadata", {}).get("resourceVersion")
                self.resource_version = rv or self.resource_version
            elif kind in ("ADDED", "MODIFIED", "DELETED"):
                self._changed(self.podset.on_event(kind, ev["object"]))
                meta = getattr(ev["object"], "metadata", None)
                self.resource_version = getattr(meta, "resource_version", None) or (
                    self.resource_version
                )
        self._contact()  # the window ended as the server meant it to

    def run_once(self, stop: threading.Event) -> None:
        """A list when there is no resourceVersion to continue from, then one watch window."""
        if self.resource_version is None:
            self.relist()
        self.watch_once(stop)

    def _failed(self, stop: threading.Event, delay: float, what: str) -> float:
        self.errors += 1
        wait = delay * random.uniform(0.8, 1.2)
        log.warning("pod watch failed: %s (retrying in %.1f s)", what, wait)
        stop.wait(wait)
        return min(delay * 2, self.backoff_max)

    def run(self, stop: threading.Event) -> None:
        """Until ``stop`` is set: list once, then watch on; 410 Gone relists at once, other
        failures back off (``backoff_initial`` doubling to ``backoff_max``, jittered) and
        reconnect from the last resourceVersion."""
        from kubernetes.client.exceptions import ApiException

        delay = self.backoff_initial
        while not stop.is_set():
            try:
                self.run_once(stop)
                delay = self.backoff_initial
            except ApiException as e:
                if e.status == 410:
                    log.info("watch expired (410 Gone): relisting")
                    self.resource_version = None
                    continue
                if e.status in (401, 403):
                    log.error("API server refused the pod list/watch: %s %s", e.status, e.reason)
                delay = self._failed(stop, delay, f"{e.status} {e.reason}")
            except Exception as e:  # timeouts, resets, urllib3 errors: reconnect, never die
                delay = self._failed(stop, delay, f"{type(e).__name__}: {e}")
