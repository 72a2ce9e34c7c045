"""Memory of a process and of its container, from the kernel's own accounting."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psutil

from profiler.discovery.cgroups import (
    cgroup2_mount,
    cgroup_of,
    find_cgroups_by_container_id,
    v1_mount,
)
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


_DIRS: dict[str, str] = {}  # container id -> its cgroup directory, found by walking


def _by_container_id(container_id: str) -> Path | None:
    """The container's cgroup found by its id (a reader in another cgroup namespace sees a
    path in /proc that does not exist under its own mount); remembered, bounded."""
    known = _DIRS.get(container_id)
    if known is not None and Path(known).is_dir():
        return Path(known)
    try:
        found = find_cgroups_by_container_id(container_id)
    except TargetNotFound:
        return None
    if not found:
        return None
    if len(_DIRS) >= 1024:
        _DIRS.clear()
    # prefer a directory that accounts memory (v2 with the controller, or v1 memory)
    best = next((d for d in found if cgroup_usage(d) is not None), found[0])
    _DIRS[container_id] = best
    return Path(best)


def _container_cgroup_memory(pid: int) -> tuple[int, int] | None:
    """(usage, inactive file) of the process's container cgroup, v2 or v1, if a memory
    controller accounts it there. A cgroup that is not a container's is not used: it would
    charge the whole host service to the pod."""
    for hierarchy in (None, "memory"):
        try:
            path = cgroup_of(pid, hierarchy)
            ref = parse_container_cgroup(path)
            if ref is None:
                continue
            mount = cgroup2_mount() if hierarchy is None else v1_mount("memory")
        except TargetNotFound:
            continue
        d: Path | None = Path(mount) / path.lstrip("/")
        if d is None or not d.is_dir():
            d = _by_container_id(ref.container_id)
        u = None if d is None else cgroup_usage(d)
        if u is not None and u.usage is not None and u.inactive_file is not None:
            return u.usage, u.inactive_file
    return None


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


@dataclass(frozen=True)
class CgroupUsage:
    """A container's usage as its cgroup accounts it (what ``kubectl top`` shows); None for
    what no controller accounts there (a v2 tree whose memory controller is bound to v1)."""

    working_set: int | None  # usage minus inactive file pages: kubelet's working set
    usage: int | None  # memory.current (v2) or memory.usage_in_bytes (v1)
    inactive_file: int | None
    cpu_seconds: float | None  # cpu.stat usage_usec (v2) or cpuacct.usage (v1)


_V1_MEMORY = ("memory",)
_V1_CPU = ("cpu,cpuacct", "cpuacct,cpu", "cpuacct")


def _read_int(p: Path) -> int | None:
    try:
        return int(p.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _stat(p: Path, key: str) -> int | None:
    try:
        for line in p.read_text().splitlines():
            k, _, v = line.partition(" ")
            if k == key:
                return int(v)
    except (OSError, ValueError):
        return None
    return None


def _v1_twin(d: Path, hierarchies: tuple[str, ...], probe: str) -> Path | None:
    """The same cgroup in another v1 hierarchy: ``<root>/<this hierarchy>/<rel>`` ->
    ``<root>/memory/<rel>`` (v1 mounts one directory per hierarchy side by side)."""
    if (d / probe).exists():
        return d
    for ancestor in d.parents:
        rel = d.relative_to(ancestor)
        for h in hierarchies:
            twin = ancestor.parent / h / rel
            if (twin / probe).exists():
                return twin
    return None


def cgroup_usage(cgroup_dir: str | Path) -> CgroupUsage | None:
    """Memory and CPU of a container from its cgroup directory (as found in the host's tree,
    e.g. under the DaemonSet's /host/sys/fs/cgroup), never from its processes: cgroup v2
    ``memory.current`` minus ``inactive_file`` and ``cpu.stat`` ``usage_usec``; cgroup v1 the
    same from the ``memory`` hierarchy (``memory.usage_in_bytes`` minus
    ``total_inactive_file``) and ``cpuacct.usage``, whichever hierarchy ``cgroup_dir`` is in.
    None when nothing accounts it."""
    d = Path(cgroup_dir)
    usage = _read_int(d / "memory.current")
    inactive: int | None = None
    if usage is not None:
        inactive = _stat(d / "memory.stat", "inactive_file") or 0
    else:
        mem = _v1_twin(d, _V1_MEMORY, "memory.usage_in_bytes")
        usage = None if mem is None else _read_int(mem / "memory.usage_in_bytes")
        if mem is not None and usage is not None:
            inactive = _stat(mem / "memory.stat", "total_inactive_file") or 0
    cpu: float | None = None
    usec = _stat(d / "cpu.stat", "usage_usec")
    if usec is not None:
        cpu = usec / 1e6
    else:
        acct = _v1_twin(d, _V1_CPU, "cpuacct.usage")
        ns = None if acct is None else _read_int(acct / "cpuacct.usage")
        cpu = None if ns is None else ns / 1e9
    if usage is None and cpu is None:
        return None
    ws = None if usage is None else max(usage - (inactive or 0), 0)
    return CgroupUsage(ws, usage, inactive, cpu)
