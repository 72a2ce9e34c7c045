"""Memory of a process and of its container, from the kernel's own accounting."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psutil

from profiler.discovery.cgroups import cgroup2_mount, cgroup_of
from profiler.discovery.containers import parse_container_cgroup
from profiler.errors import TargetNotFound

MB = 1024 * 1024


@dataclass(frozen=True)
class Memory:
    rss: int
    pss: int | None
    cgroup_current: int | None  # memory.current of the container cgroup, when accounted
    working_set: int  # kubelet's working set (current - inactive_file), else RSS

    def to_mb(self) -> dict[str, float | None]:
        return {
            "rss": round(self.rss / MB, 3),
            "pss": None if self.pss is None else round(self.pss / MB, 3),
            "cgroup_current": None
            if self.cgroup_current is None
            else round(self.cgroup_current / MB, 3),
            "working_set": round(self.working_set / MB, 3),
        }


def _container_cgroup_memory(pid: int) -> tuple[int, int] | None:
    """(memory.current, inactive_file) of the process's container cgroup (v2), if the
    memory controller accounts it there. A cgroup that is not a container's is not used:
    it would charge the whole host service to the pod."""
    try:
        path = cgroup_of(pid)
    except TargetNotFound:
        return None
    if parse_container_cgroup(path) is None:
        return None
    d = Path(cgroup2_mount()) / path.lstrip("/")
    try:
        current = int((d / "memory.current").read_text())
    except (OSError, ValueError):
        return None
    inactive = 0
    try:
        for line in (d / "memory.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "inactive_file":
                inactive = int(value)
    except (OSError, ValueError):
        pass
    return current, inactive


def memory_of(pid: int) -> Memory | None:
    try:
        p = psutil.Process(pid)
        try:
            full = p.memory_full_info()
            rss, pss = int(full.rss), int(getattr(full, "pss", 0)) or None
        except psutil.AccessDenied:
            rss, pss = int(p.memory_info().rss), None
    except psutil.Error:
        return None
    cg = _container_cgroup_memory(pid)
    if cg is None:
        return Memory(rss, pss, None, rss)
    current, inactive = cg
    return Memory(rss, pss, current, max(current - inactive, 0))
