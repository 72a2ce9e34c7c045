"""Sidecar proxies and the app processes of their pods, found through /proc and cgroups."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from profiler.discovery.cgroups import (
    PROC,
    _walk,
    cgroup2_mount,
    cgroup_of,
    pids_in_cgroup,
    v1_mount,
    v1_mounts,
)
from profiler.discovery.containers import (
    ContainerRef,
    container_id_of_name,
    is_pod_cgroup_name,
    parse_container_cgroup,
)
from profiler.discovery.procfs import comm
from profiler.errors import TargetNotFound

ProxyKind = Literal["envoy", "linkerd2-proxy"]
_PROXIES: dict[str, ProxyKind] = {"envoy": "envoy", "linkerd2-proxy": "linkerd2-proxy"}
# The pod sandbox's process: in every pod, never an app.
_PAUSE = frozenset({"pause"})
# v1 hierarchies a kubelet on a v1 or hybrid node puts containers in, in order of preference.
_V1_HIERARCHIES = ("name=systemd", "memory", "cpu", "pids")


def _exited(pid: int, proc: str = PROC) -> bool:
    """A zombie (exited, not yet reaped) or gone: /proc still lists zombies, with their comm."""
    try:
        state = Path(f"{proc}/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


def proxy_kind(pid: int, proc: str = PROC) -> ProxyKind | None:
    """``"envoy"`` or ``"linkerd2-proxy"`` when the process is one (by executable name, then by
    comm), else None. Istio's pilot-agent, which starts Envoy, is not a proxy."""
    try:
        exe = os.path.basename(os.readlink(f"{proc}/{pid}/exe")).removesuffix(" (deleted)")
    except OSError:
        exe = ""
    return _PROXIES.get(exe) or _PROXIES.get(comm(pid, proc=proc))


@dataclass(frozen=True)
class SidecarProcess:
    """A proxy process in a container of a pod, with the processes of the pod's other
    containers (its apps; the sandbox's pause process left out)."""

    pid: int
    kind: ProxyKind
    container: ContainerRef
    cgroup: str  # file-system path of the container's cgroup
    app_pids: tuple[int, ...]


@dataclass(frozen=True)
class ContainerProcesses:
    container_id: str
    runtime: str | None
    cgroup: str  # file-system path
    pids: tuple[int, ...]


@dataclass(frozen=True)
class PodProcesses:
    pod_uid: str
    cgroup: str  # file-system path of the pod's cgroup
    containers: tuple[ContainerProcesses, ...]

    def container(self, container_id: str) -> ContainerProcesses | None:
        cid = container_id.split("://", 1)[-1]
        return next((c for c in self.containers if c.container_id == cid), None)


def _roots(cgroup_root: str | None) -> list[str]:
    if cgroup_root is not None:
        return [cgroup_root]
    return [cgroup2_mount(), *v1_mounts()]


def _container_dir(fs_path: Path, container_id: str) -> Path:
    """The container's own cgroup: ``fs_path`` or the ancestor named after the container."""
    for d in (fs_path, *fs_path.parents):
        if container_id_of_name(d.name) == container_id:
            return d
    return fs_path


def _non_pause(pids: Sequence[int], proc: str) -> tuple[int, ...]:
    return tuple(p for p in pids if comm(p, proc=proc) not in _PAUSE)


def pod_container_dirs(container_dir: Path) -> list[Path]:
    """Every container cgroup of the pod ``container_dir`` belongs to, itself included: its
    siblings under the pod's cgroup, or, where containers sit flat next to other pods' (the
    ``...pod<uid>.slice:cri-containerd:<id>`` form), the siblings of the same pod uid."""
    ref = parse_container_cgroup(str(container_dir))
    try:
        siblings = sorted(e for e in container_dir.parent.iterdir() if e.is_dir())
    except OSError:
        return [container_dir]
    out = []
    for d in siblings:
        if container_id_of_name(d.name) is None:
            continue
        other = parse_container_cgroup(str(d))
        if ref is not None and (other is None or other.pod_uid != ref.pod_uid):
            continue
        out.append(d)
    return out or [container_dir]


def _app_pids(container_dir: Path, proc: str) -> tuple[int, ...]:
    pids: list[int] = []
    for d in pod_container_dirs(container_dir):
        if d != container_dir:
            pids += pids_in_cgroup(str(d), root=str(d))
    return _non_pause(sorted(pids), proc)


def _placement(pid: int, proc: str) -> tuple[ContainerRef, Path] | None:
    """The container of ``pid`` and the file-system path of its cgroup, from the v2 hierarchy
    or else from the v1 hierarchies a kubelet uses."""
    try:
        path = cgroup_of(pid, proc=proc)
        ref = parse_container_cgroup(path)
        if ref is not None:
            return ref, Path(cgroup2_mount() + path)
    except TargetNotFound:
        pass
    for hierarchy in _V1_HIERARCHIES:
        try:
            path = cgroup_of(pid, hierarchy, proc=proc)
            ref = parse_container_cgroup(path)
            if ref is not None:
                return ref, Path(v1_mount(hierarchy) + path)
        except TargetNotFound:
            continue
    return None


def find_sidecars(cgroup_root: str | None = None, proc: str = PROC) -> list[SidecarProcess]:
    """Proxy processes (by name) that live in a kubelet-style container cgroup, optionally
    only those whose container cgroup is below the directory ``cgroup_root`` (e.g. the host's
    /sys/fs/cgroup mounted into the DaemonSet's pod); sorted by PID."""
    found: list[SidecarProcess] = []
    # With a root given, cgroup directories come from walking it (it may be the host's tree
    # mounted elsewhere, seen from another cgroup namespace); else from the v2 mount.
    index = container_cgroups(cgroup_root) if cgroup_root is not None else None
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        pid = int(entry)
        kind = proxy_kind(pid, proc)
        if kind is None or _exited(pid, proc):
            continue
        placed = _placement(pid, proc)
        if placed is None:
            continue
        ref, fs_path = placed
        if index is not None:
            if ref.container_id not in index:
                continue
            cdir = Path(index[ref.container_id])
        else:
            cdir = _container_dir(fs_path, ref.container_id)
        found.append(SidecarProcess(pid, kind, ref, str(cdir), _app_pids(cdir, proc)))
    return sorted(found, key=lambda s: s.pid)


def container_cgroups(cgroup_root: str | None = None) -> dict[str, str]:
    """Every container cgroup below ``cgroup_root``: container id -> file-system path.

    Without a root, the v2 hierarchy is walked, and only when it holds no container (a v1 or
    hybrid node whose kubelet uses v1) the v1 hierarchies, which mirror each other."""
    out: dict[str, str] = {}
    for root in _roots(cgroup_root):
        if out and cgroup_root is None:
            break
        for d in _walk(Path(root)):
            cid = container_id_of_name(d.name)
            if cid is not None and cid not in out and parse_container_cgroup(str(d)) is not None:
                out[cid] = str(d)
    return out


def resolve_pod_processes(
    pod_uid: str, cgroup_root: str | None = None, proc: str = PROC
) -> PodProcesses:
    """The pod's cgroup and the processes of each of its containers (pause left out).

    Looks in ``cgroup_root`` or else in the v2 hierarchy, then the v1 ones; the first pod
    cgroup that holds processes wins. Raises :class:`TargetNotFound` when there is none.
    """
    candidates: list[PodProcesses] = []
    for root in _roots(cgroup_root):
        for d in _walk(Path(root)):
            if not is_pod_cgroup_name(d.name, pod_uid):
                continue
            containers = []
            for c in sorted(e for e in d.iterdir() if e.is_dir()):
                ref = parse_container_cgroup(str(c))
                if ref is None:
                    continue
                pids = _non_pause(pids_in_cgroup(str(c), root=str(c)), proc)
                containers.append(ContainerProcesses(ref.container_id, ref.runtime, str(c), pids))
            pod = PodProcesses(pod_uid, str(d), tuple(containers))
            if any(c.pids for c in containers):
                return pod
            candidates.append(pod)
    if candidates:
        return candidates[0]
    raise TargetNotFound(f"no cgroup for pod {pod_uid}")
