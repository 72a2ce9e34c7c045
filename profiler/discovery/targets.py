"""Which processes a capture traces: from PIDs, a cgroup, or a container id."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from profiler.discovery.cgroups import find_cgroups_by_container_id, pids_in_cgroup
from profiler.discovery.containers import parse_container_cgroup
from profiler.discovery.processes import pod_container_dirs, proxy_kind
from profiler.discovery.procfs import comm
from profiler.errors import TargetNotFound, UsageError

PROXY_NAMES = "envoy, linkerd2-proxy"


@dataclass
class Targets:
    sidecars: list[int] = field(default_factory=list)
    apps: list[int] = field(default_factory=list)


def _exists(pid: int) -> None:
    if pid <= 0 or not os.path.exists(f"/proc/{pid}/stat"):
        raise TargetNotFound(f"no process with PID {pid}")


def _pod_processes(cgroup_dir: Path) -> list[int]:
    """Every process of the pod a cgroup belongs to (the sandbox's pause out): for a
    container's cgroup, every container of its pod, whatever the driver names them (with the
    cgroupfs driver a container's cgroup is a bare id, not a ``.scope``); any other cgroup
    (a pod's, a testbed's) as it is."""
    if parse_container_cgroup(str(cgroup_dir)) is not None:
        dirs = pod_container_dirs(cgroup_dir)
    else:
        dirs = [cgroup_dir]
    pids = sorted({p for d in dirs for p in pids_in_cgroup(str(d), root=str(d))})
    return [p for p in pids if comm(p) != "pause"]


def resolve(
    pids: list[int],
    sidecar_pids: list[int],
    cgroups: list[str],
    container_ids: list[str],
    sidecar: str = "auto",
) -> Targets:
    """Sidecars are the proxies (by name) among the processes named, or those given with
    ``--sidecar-pid``; every other process is an app."""
    if sidecar not in ("auto", "none"):
        raise UsageError(f"--sidecar must be auto or none, not {sidecar!r}")
    if not (pids or sidecar_pids or cgroups or container_ids):
        raise UsageError("name what to trace: --pid, --sidecar-pid, --cgroup or --container-id")
    t = Targets()
    for pid in sidecar_pids:
        _exists(pid)
        t.sidecars.append(pid)
    for pid in pids:
        _exists(pid)
        if proxy_kind(pid) is not None:
            t.sidecars.append(pid)
        elif sidecar == "auto" and not sidecar_pids and len(pids) == 1:
            raise TargetNotFound(
                f"PID {pid} ({comm(pid) or '?'}) is not a sidecar proxy "
                f"({PROXY_NAMES}); use --sidecar-pid for another proxy"
            )
        else:
            t.apps.append(pid)
    found: list[int] = []
    for path in cgroups:
        d = Path(path)
        if not d.is_absolute():
            from profiler.discovery.cgroups import cgroup2_mount

            d = Path(cgroup2_mount()) / path.lstrip("/")
        if not d.is_dir():
            raise TargetNotFound(f"no cgroup {d}")
        found += _pod_processes(d)
    for cid in container_ids:
        dirs = find_cgroups_by_container_id(cid)
        if not dirs:
            raise TargetNotFound(f"no cgroup for container {cid}")
        found += _pod_processes(Path(dirs[0]))
    for pid in sorted(set(found)):
        if pid in t.sidecars or pid in t.apps:
            continue
        (t.sidecars if proxy_kind(pid) is not None else t.apps).append(pid)
    if sidecar == "auto" and not t.sidecars:
        raise TargetNotFound(f"no sidecar proxy ({PROXY_NAMES}) among the processes named")
    return t
