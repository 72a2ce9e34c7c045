"""cgroup membership of processes, and processes of cgroups (cgroup v2 and v1)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path

from profiler.discovery.containers import container_id_of_name
from profiler.errors import TargetNotFound

PROC = "/proc"


@lru_cache(maxsize=8)
def _mounts(mounts_file: str = "/proc/self/mounts") -> tuple[tuple[str, str, str], ...]:
    """(mount point, fs type, options) of every cgroup and cgroup2 mount."""
    out = []
    with open(mounts_file) as f:
        for line in f:
            parts = line.split()
            if len(parts) > 3 and parts[2] in ("cgroup", "cgroup2"):
                out.append((parts[1], parts[2], parts[3]))
    return tuple(out)


def cgroup2_mount() -> str:
    """Where the unified (v2) hierarchy is mounted: /sys/fs/cgroup or /sys/fs/cgroup/unified."""
    for point, fstype, _ in _mounts():
        if fstype == "cgroup2":
            return point
    raise TargetNotFound("no cgroup2 file system is mounted")


def v1_mount(hierarchy: str) -> str:
    """Mount point of the v1 hierarchy named like in /proc/<pid>/cgroup (``memory``,
    ``name=systemd``)."""
    for point, fstype, opts in _mounts():
        if fstype == "cgroup" and hierarchy in opts.split(","):
            return point
    raise TargetNotFound(f"no cgroup v1 hierarchy '{hierarchy}' is mounted")


def v1_mounts() -> list[str]:
    return [point for point, fstype, _ in _mounts() if fstype == "cgroup"]


def _normalise(path: str) -> str:
    """Drop the ``/..`` components a cgroup namespace puts in front of outside paths."""
    parts = [p for p in path.split("/") if p and p != ".."]
    return "/" + "/".join(parts)


def cgroup_of(pid: int, hierarchy: str | None = None, proc: str = PROC) -> str:
    """The cgroup path of ``pid`` relative to its hierarchy's root.

    ``hierarchy=None`` is the unified (v2) hierarchy; otherwise a v1 hierarchy named as in
    /proc/<pid>/cgroup (``memory``, ``cpu,cpuacct``, ``name=systemd``; one controller of a
    co-mounted group is enough).
    """
    try:
        with open(f"{proc}/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        raise TargetNotFound(f"no process with PID {pid}") from None
    for line in lines:
        num, controllers, path = line.split(":", 2)
        if hierarchy is None:
            if num == "0" and controllers == "":
                return _normalise(path)
        elif hierarchy == controllers or hierarchy in controllers.split(","):
            return _normalise(path)
    what = "cgroup v2" if hierarchy is None else f"cgroup v1 '{hierarchy}'"
    raise TargetNotFound(f"PID {pid} is in no {what} hierarchy")


def cgroup_dir(path: str, root: str | None = None) -> Path:
    """The directory of a cgroup: ``path`` relative to ``root`` (the v2 mount by default), or
    unchanged when it already is a directory under ``root``."""
    base = root or cgroup2_mount()
    if path == base or path.startswith(base.rstrip("/") + "/"):
        return Path(path)
    return Path(base) / path.lstrip("/")


def _walk(top: Path) -> Iterator[Path]:
    """``top`` and every cgroup below it (cgroup files are never directories)."""
    stack = [top]
    while stack:
        d = stack.pop()
        yield d
        try:
            with os.scandir(d) as it:
                stack.extend(Path(e.path) for e in it if e.is_dir(follow_symlinks=False))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue


def _read_procs(d: Path) -> list[int]:
    try:
        text = (d / "cgroup.procs").read_text()
    except (FileNotFoundError, OSError):
        return []
    return [int(x) for x in text.split()]


def cgroup_processes(path: str, root: str | None = None) -> tuple[list[int], int]:
    """(PIDs, hidden): the processes of the cgroup and its descendants as this process's
    PID namespace numbers them, sorted, and how many are in no namespace it sees.

    ``cgroup.procs`` gives each process's PID in the reader's PID namespace, and 0 for a
    process outside it (an agent without hostPID, or in a sibling namespace): such a process
    cannot be traced by PID from here, and is counted instead of listed. cgroup v2 puts
    processes only in leaves, v1 anywhere: both are read."""
    top = cgroup_dir(path, root)
    if not top.is_dir():
        raise TargetNotFound(f"no cgroup {top}")
    seen: set[int] = set()
    hidden = 0
    for d in _walk(top):
        for pid in _read_procs(d):
            if pid == 0:
                hidden += 1
            else:
                seen.add(pid)
    return sorted(seen), hidden


def pids_in_cgroup(path: str, root: str | None = None) -> list[int]:
    """Every process in the cgroup and its descendants that this PID namespace sees, sorted
    (:func:`cgroup_processes` without the count of the others)."""
    return cgroup_processes(path, root)[0]


def find_cgroups_by_container_id(
    container_id: str, roots: Sequence[str] | None = None
) -> list[str]:
    """File-system paths of the cgroups named after ``container_id`` (a full id, or a prefix
    of at least 12 hex digits), in the v2 hierarchy and every v1 hierarchy unless ``roots``
    says where to look. A ``containerd://`` style prefix is accepted."""
    cid = container_id.split("://", 1)[-1].lower()
    if len(cid) < 12 or any(c not in "0123456789abcdef" for c in cid):
        raise TargetNotFound(f"'{container_id}' is not a container id")
    if roots is None:
        roots = [cgroup2_mount(), *v1_mounts()]
    found: list[str] = []
    for root in roots:
        for d in _walk(Path(root)):
            name_id = container_id_of_name(d.name)
            if name_id is not None and name_id.startswith(cid):
                found.append(str(d))
    return sorted(found)
