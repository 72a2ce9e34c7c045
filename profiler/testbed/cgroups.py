"""Kubelet-looking cgroup v2 leaves in the unified hierarchy, one per container.

Only the unified (v2) hierarchy is touched; processes are moved in by writing its
``cgroup.procs``. The v1 hierarchies (where this machine keeps its controllers) are never used.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from profiler.errors import TestbedError

QOS = "burstable"


def unified_root() -> Path:
    """The cgroup2 mount point (/sys/fs/cgroup/unified on hybrid hosts, else /sys/fs/cgroup)."""
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and parts[2] == "cgroup2":
                return Path(parts[1])
    raise TestbedError("no cgroup2 hierarchy is mounted: the testbed needs cgroup v2")


def pod_slice(root: Path, uid: str) -> Path:
    """kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice (systemd)."""
    qos = root / "kubepods.slice" / f"kubepods-{QOS}.slice"
    return qos / f"kubepods-{QOS}-pod{uid.replace('-', '_')}.slice"


def container_scope(pod: Path, cid: str) -> Path:
    return pod / f"cri-containerd-{cid}.scope"


def make_dirs(leaf: Path, root: Path) -> list[Path]:
    """mkdir -p, returning the directories this call created (outermost first).

    Retried when another testbed's ``down`` removes a shared parent (kubepods.slice) under us.
    """
    created: list[Path] = []
    for attempt in range(5):
        try:
            for d in [*reversed(leaf.relative_to(root).parents[:-1]), leaf.relative_to(root)]:
                p = root / d
                if not p.exists():
                    try:
                        p.mkdir()
                    except FileExistsError:
                        continue
                    created.append(p)
            return created
        except FileNotFoundError:
            if attempt == 4:
                msg = f"cannot create cgroup {leaf}: a parent keeps vanishing"
                raise TestbedError(msg) from None
        except OSError as e:
            raise TestbedError(f"cannot create cgroup {leaf}: {e.strerror}") from None
    return created


def procs(cg: Path) -> list[int]:
    try:
        return [int(x) for x in (cg / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def kill_all(cg: Path, grace_s: float = 3.0) -> int:
    """SIGTERM every process in ``cg``, SIGKILL what is left after ``grace_s``; return count."""
    pids = procs(cg)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while procs(cg) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in procs(cg):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while procs(cg) and time.monotonic() < deadline:
        time.sleep(0.02)
    return len(pids)


def remove(cg: Path) -> bool:
    """rmdir a cgroup after killing what is in it; False when it was not there."""
    if not cg.is_dir():
        return False
    kill_all(cg)
    for _ in range(50):
        try:
            cg.rmdir()
            return True
        except FileNotFoundError:
            return False
        except OSError:
            time.sleep(0.02)  # a killed task can take a moment to leave
    raise TestbedError(f"cannot remove cgroup {cg}: still busy")


def remove_if_empty(cg: Path) -> bool:
    try:
        cg.rmdir()
        return True
    except OSError:
        return False
