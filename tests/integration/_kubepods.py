"""Kubelet-style pods made of real parts: cgroups under the unified hierarchy, named like the
kubelet and the runtimes name them, with real processes moved in. Everything is removed on
exit, also after a failure. Only the unified (v2) hierarchy is touched."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from profiler.discovery import cgroup2_mount

RUNTIME_SCOPE = {
    "containerd": "cri-containerd-{}.scope",
    "cri-o": "crio-{}.scope",
    "docker": "docker-{}.scope",
}


def new_container_id() -> str:
    return secrets.token_hex(32)


@dataclass
class Container:
    name: str
    container_id: str
    cgroup: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def pids(self) -> list[int]:
        return sorted(p.pid for p in self.procs)


@dataclass
class Pod:
    uid: str
    cgroup: Path
    root: Path
    runtime: str
    qos: str
    containers: dict[str, Container] = field(default_factory=dict)
    pause_pid: int = 0

    def add_container(
        self, name: str, argv: list[str], n: int = 1, container_id: str | None = None
    ) -> Container:
        cid = container_id or new_container_id()
        if self.runtime == "cgroupfs":
            d = self.cgroup / cid
        elif self.runtime == "crio-cgroupfs":
            d = self.cgroup / f"crio-{cid}"
        elif self.runtime == "flat":  # containerd's cgroupfs mode under a systemd parent
            uid_ = self.uid.replace("-", "_")
            d = self.cgroup / f"kubepods-{self.qos}-pod{uid_}.slice:cri-containerd:{cid}"
        else:
            d = self.cgroup / RUNTIME_SCOPE[self.runtime].format(cid)
        d.mkdir()
        c = Container(name, cid, d)
        self.containers[name] = c
        for _ in range(n):
            p = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            c.procs.append(p)
            (d / "cgroup.procs").write_text(str(p.pid))
        return c

    def add_process(self, name: str, argv: list[str]) -> int:
        """Start one more process in an existing container (e.g. Envoy next to pilot-agent)."""
        c = self.containers[name]
        p = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        c.procs.append(p)
        (c.cgroup / "cgroup.procs").write_text(str(p.pid))
        return p.pid

    def remove_container(self, name: str) -> None:
        c = self.containers.pop(name)
        _stop(c.procs)
        _rmdir(c.cgroup)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
    for p in procs:
        p.wait(timeout=10)


def _rmdir(d: Path) -> None:
    """Remove a cgroup tree bottom-up, waiting for killed processes to leave it."""
    if not d.exists():
        return
    for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        _rmdir_one(sub)
    _rmdir_one(d)


def _rmdir_one(d: Path) -> None:
    for _ in range(100):
        try:
            d.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)
    d.rmdir()


def pod_dir(root: Path, uid: str, qos: str, driver: str) -> Path:
    if driver == "flat":  # no pod cgroup: every pod's containers side by side
        return root / "system.slice" / "containerd.service"
    if driver == "systemd":
        top = root / "kubepods.slice"
        if qos == "guaranteed":
            return top / f"kubepods-pod{uid.replace('-', '_')}.slice"
        return top / f"kubepods-{qos}.slice" / f"kubepods-{qos}-pod{uid.replace('-', '_')}.slice"
    top = root / "kubepods"
    return top / f"pod{uid}" if qos == "guaranteed" else top / qos / f"pod{uid}"


@contextlib.contextmanager
def node_root(prefix: str = "smp-test") -> Iterator[Path]:
    """A private cgroup directory in the unified hierarchy, removed (with its processes
    killed) on exit."""
    root = Path(cgroup2_mount()) / f"{prefix}-{secrets.token_hex(4)}"
    root.mkdir()
    try:
        yield root
    finally:
        for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            for pid in (d / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        _rmdir(root)


@contextlib.contextmanager
def kubelet_pod(
    root: Path,
    runtime: str = "containerd",
    qos: str = "burstable",
    uid: str | None = None,
    pause: bool = True,
) -> Iterator[Pod]:
    """A pod cgroup (systemd driver for a named runtime, cgroupfs driver for
    ``runtime="cgroupfs"`` (docker, containerd: bare ids) and ``"crio-cgroupfs"``
    (``crio-<id>``), and ``"flat"`` for containerd's cgroupfs mode under a systemd-style
    parent, where the pod has no cgroup of its own), with a pause-like sandbox process named
    ``pause``."""
    uid = uid or str(uuid.uuid4())
    driver = {"cgroupfs": "cgroupfs", "crio-cgroupfs": "cgroupfs", "flat": "flat"}
    d = pod_dir(root, uid, qos, driver.get(runtime, "systemd"))
    d.mkdir(parents=True, exist_ok=runtime == "flat")
    pod = Pod(uid, d, root, runtime, qos)
    try:
        if pause:
            sandbox = pod.add_container("POD", [named_binary("pause"), "600"])
            pod.pause_pid = sandbox.pids[0]
        yield pod
    finally:
        for name in list(pod.containers):
            pod.remove_container(name)
        if runtime == "flat":  # shared with the other flat pods: removed when the last goes
            with contextlib.suppress(OSError):
                d.rmdir()
        else:
            _rmdir(d)


_BIN_DIR = Path(os.environ.get("TMPDIR", "/tmp")) / "smp-test-bin"


def named_binary(name: str) -> str:
    """A copy of ``sleep`` whose executable name (and so comm) is ``name``: stands for a
    process of that name without its behaviour (the real Envoy is used where it matters)."""
    _BIN_DIR.mkdir(exist_ok=True)
    path = _BIN_DIR / name
    if not path.exists():
        tmp = _BIN_DIR / f".{name}.{os.getpid()}"
        shutil.copy2(shutil.which("sleep") or "/bin/sleep", tmp)
        tmp.rename(path)
    return str(path)
