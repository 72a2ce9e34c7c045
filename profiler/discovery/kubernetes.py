"""Kubernetes discovery: which containers on this node are sidecars, and their processes.

:class:`PodSet` is the pure part: fed with watch events (``on_event``) or a full list
(``resync``), it keeps the desired set of sidecar containers and the app containers of their
pods. :func:`resolve_targets` maps that set to PIDs through the host's /proc and cgroups
(the DaemonSet runs with ``hostPID``). :class:`PodWatcher` feeds a PodSet from the API
server: list, then watch from that resourceVersion, relist on 410 Gone and after every watch
window (the resync), reconnect with backoff on errors.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from profiler.discovery.cgroups import PROC, pids_in_cgroup
from profiler.discovery.processes import _non_pause, container_cgroups, proxy_kind
from profiler.errors import SmpError, TargetNotFound, TargetUnreachable

log = logging.getLogger(__name__)

Role = Literal["sidecar", "app"]
DEFAULT_SIDECAR_NAMES = ("istio-proxy", "linkerd-proxy")
ISTIO_STATUS = "sidecar.istio.io/status"
LINKERD_VERSION = "linkerd.io/proxy-version"
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

    @property
    def labels(self) -> dict[str, str]:
        return {"namespace": self.namespace, "pod": self.pod, "container": self.container}


@dataclass(frozen=True)
class Target:
    """One process to trace, with the labels its metrics carry."""

    pid: int
    role: Role
    labels: Mapping[str, str]


def split_container_id(value: str) -> tuple[str | None, str]:
    """``"containerd://<id>"`` -> (``"containerd"``, ``"<id>"``)."""
    scheme, sep, cid = value.partition("://")
    if not sep:
        return None, value
    return _RUNTIMES.get(scheme, scheme), cid


def _annotation_sidecars(annotations: Mapping[str, str]) -> set[str]:
    """Container names the injection annotations declare as the mesh's sidecars."""
    names: set[str] = set()
    status = annotations.get(ISTIO_STATUS)
    if status is not None:
        try:
            doc = json.loads(status)
            listed = [*(doc.get("containers") or []), *(doc.get("initContainers") or [])]
            names |= {n for n in listed if n == "istio-proxy"} or {"istio-proxy"}
        except (ValueError, AttributeError, TypeError):
            names.add("istio-proxy")
    if LINKERD_VERSION in annotations:
        names.add("linkerd-proxy")
    return names


@dataclass
class PodSet:
    """The desired set of containers to trace on this node, kept from pod events."""

    sidecar_names: tuple[str, ...] = DEFAULT_SIDECAR_NAMES
    _pods: dict[str, tuple[DesiredContainer, ...]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def containers_of(self, pod: Any) -> tuple[DesiredContainer, ...]:
        """The containers of one ``V1Pod`` to trace: none unless it has a running sidecar."""
        meta, spec, status = pod.metadata, pod.spec, pod.status
        if status is None or status.phase in ("Succeeded", "Failed"):
            return ()
        names = set(self.sidecar_names) | _annotation_sidecars(meta.annotations or {})
        # native sidecars: init containers that keep running (restartPolicy: Always)
        native = {
            c.name
            for c in ((spec.init_containers if spec is not None else None) or [])
            if getattr(c, "restart_policy", None) == "Always"
        }
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
            role: Role = "sidecar" if s.name in names else "app"
            out.append(
                DesiredContainer(meta.namespace, meta.name, meta.uid, s.name, cid, runtime, role)
            )
        if not any(c.role == "sidecar" for c in out):
            return ()
        return tuple(sorted(out, key=lambda c: (c.role != "sidecar", c.container)))

    def on_event(self, event_type: str, pod: Any) -> bool:
        """Apply one watch event (ADDED, MODIFIED, DELETED); True when the set changed."""
        uid = pod.metadata.uid
        new = () if event_type == "DELETED" else self.containers_of(pod)
        with self._lock:
            old = self._pods.get(uid, ())
            if new:
                self._pods[uid] = new
            else:
                self._pods.pop(uid, None)
        return new != old

    def resync(self, pods: Iterable[Any]) -> bool:
        """Replace the whole set from a full list of this node's pods."""
        fresh = {p.metadata.uid: c for p in pods if (c := self.containers_of(p))}
        with self._lock:
            changed = fresh != self._pods
            self._pods = fresh
        return changed

    def desired(self) -> list[DesiredContainer]:
        with self._lock:
            return [c for cs in self._pods.values() for c in cs]


def resolve_targets(
    desired: Iterable[DesiredContainer], cgroup_root: str | None = None, proc: str = PROC
) -> dict[int, Target]:
    """PIDs of the desired containers, by container id through the cgroup tree.

    In a sidecar container only the proxy processes are targets (Istio's pilot-agent runs
    next to Envoy); when none is recognised, every process of the container is. Containers
    whose cgroup is not there (yet, or any more) are skipped.
    """
    index = container_cgroups(cgroup_root)
    targets: dict[int, Target] = {}
    for c in desired:
        cgroup = index.get(c.container_id)
        if cgroup is None:
            continue
        try:
            pids = _non_pause(pids_in_cgroup(cgroup, root=cgroup), proc)
        except TargetNotFound:
            continue
        if c.role == "sidecar":
            pids = tuple(p for p in pids if proxy_kind(p, proc) is not None) or pids
        for pid in pids:
            targets[pid] = Target(pid, c.role, c.labels)
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
    return client.CoreV1Api()


@dataclass
class PodWatcher:
    """Keeps a :class:`PodSet` in step with the pods scheduled on ``node_name``."""

    podset: PodSet
    node_name: str
    api: Any
    resync_seconds: int = 300
    on_change: Callable[[], None] | None = None
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    relists: int = 0  # how many full lists were done: the resyncs and the 410 recoveries

    def _changed(self, changed: bool) -> None:
        if changed and self.on_change is not None:
            self.on_change()

    def run_once(self, stop: threading.Event) -> None:
        """One full list, then one watch window from its resourceVersion."""
        from kubernetes import watch

        selector = f"spec.nodeName={self.node_name}"
        pods = self.api.list_pod_for_all_namespaces(field_selector=selector)
        self.relists += 1
        self._changed(self.podset.resync(pods.items))
        w = watch.Watch()  # type: ignore[no-untyped-call]
        stream = w.stream(  # type: ignore[no-untyped-call]
            self.api.list_pod_for_all_namespaces,
            field_selector=selector,
            resource_version=pods.metadata.resource_version,
            timeout_seconds=self.resync_seconds,
        )
        for ev in stream:
            if stop.is_set():
                w.stop()  # type: ignore[no-untyped-call]
                break
            if ev["type"] in ("ADDED", "MODIFIED", "DELETED"):
                self._changed(self.podset.on_event(ev["type"], ev["object"]))

    def run(self, stop: threading.Event) -> None:
        """Until ``stop`` is set: relist and watch; 410 Gone relists at once, other
        failures back off (``backoff_initial`` doubling to ``backoff_max``) and reconnect."""
        from kubernetes.client.exceptions import ApiException

        delay = self.backoff_initial
        while not stop.is_set():
            try:
                self.run_once(stop)
                delay = self.backoff_initial
            except ApiException as e:
                if e.status == 410:
                    log.info("watch expired (410 Gone): relisting")
                    continue
                if e.status in (401, 403):
                    log.error("API server refused the pod list/watch: %s %s", e.status, e.reason)
                else:
                    log.warning("pod watch failed: %s %s", e.status, e.reason)
                stop.wait(delay)
                delay = min(delay * 2, self.backoff_max)
            except (OSError, SmpError, ValueError) as e:
                log.warning("pod watch failed: %s", e)
                stop.wait(delay)
                delay = min(delay * 2, self.backoff_max)
            except Exception as e:  # urllib3 errors and the like: reconnect, never die
                log.warning("pod watch failed: %s: %s", type(e).__name__, e)
                stop.wait(delay)
                delay = min(delay * 2, self.backoff_max)
