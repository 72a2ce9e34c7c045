"""Find sidecar and app processes on a node: cgroups, container ids, pods.

Everything here reads only ``/proc`` and the cgroup file systems, so it works the same on the
testbed and on a Kubernetes node (with ``hostPID`` and the host's cgroup tree mounted).
"""

from __future__ import annotations

from profiler.discovery.cgroups import (
    cgroup2_mount,
    cgroup_dir,
    cgroup_of,
    find_cgroups_by_container_id,
    pids_in_cgroup,
)
from profiler.discovery.containers import ContainerRef, parse_container_cgroup
from profiler.discovery.processes import (
    ContainerProcesses,
    PodProcesses,
    SidecarProcess,
    find_sidecars,
    proxy_kind,
    resolve_pod_processes,
)

__all__ = [
    "ContainerProcesses",
    "ContainerRef",
    "PodProcesses",
    "SidecarProcess",
    "cgroup2_mount",
    "cgroup_dir",
    "cgroup_of",
    "find_cgroups_by_container_id",
    "find_sidecars",
    "parse_container_cgroup",
    "pids_in_cgroup",
    "proxy_kind",
    "resolve_pod_processes",
]
