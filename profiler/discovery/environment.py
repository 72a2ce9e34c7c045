"""What the node is: kernel, CPU model, cores, memory, Kubernetes version; Envoy's build."""

from __future__ import annotations

import os
import platform
import re
import socket
import subprocess
from pathlib import Path

from profiler.discovery.procfs import cmdline, comm, ppid
from profiler.model import Environment


def _cpuinfo(path: Path = Path("/proc/cpuinfo")) -> tuple[str, int | None]:
    model, siblings, cores = "unknown", None, None
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key in ("model name", "Model", "Hardware") and model == "unknown":
                model = value
            elif key == "siblings" and siblings is None:
                siblings = int(value)
            elif key == "cpu cores" and cores is None:
                cores = int(value)
    except (OSError, ValueError):
        pass
    threads = siblings // cores if siblings and cores else None
    return model, threads


def _mem_mb(path: Path = Path("/proc/meminfo")) -> int:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _os_name(path: Path = Path("/etc/os-release")) -> str:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def kubernetes_version() -> str | None:
    """The cluster's version when running inside a pod; None elsewhere (no cluster)."""
    if not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    try:
        from kubernetes import client, config

        config.load_incluster_config()  # type: ignore[no-untyped-call]
        info = client.VersionApi().get_code(_request_timeout=3)
        return str(info.git_version)
    except Exception:
        return None


def detect_environment() -> Environment:
    model, threads = _cpuinfo()
    return Environment(
        hostname=socket.gethostname(),
        kernel=platform.release(),
        os=_os_name(),
        arch=platform.machine(),
        cpu_model=model,
        cores=os.cpu_count() or 1,
        threads_per_core=threads,
        mem_mb=_mem_mb(),
        kubernetes_version=kubernetes_version(),
    )


def envoy_version(binary: str | Path) -> str | None:
    """``envoy --version`` reduced to its build string, e.g. ``1.40.0/Clean/RELEASE/BoringSSL``."""
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=20, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_envoy_version(out)


def parse_envoy_version(text: str) -> str | None:
    """``envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL`` -> ``1.40.0/Clean/...``."""
    m = re.search(r"version:\s*[0-9a-f]+/(\S+)", text)
    return m.group(1) if m else None


def envoy_binary_of(pid: int) -> Path | None:
    """The executable of a running process (to ask a sidecar's Envoy for its version)."""
    try:
        return Path(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return None


def proxy_concurrency_of(pid: int) -> int | None:
    """Envoy's --concurrency from its command line, if given."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    for i, a in enumerate(args):
        if a == b"--concurrency" and i + 1 < len(args) and args[i + 1].isdigit():
            return int(args[i + 1])
        if a.startswith(b"--concurrency=") and a[14:].isdigit():
            return int(a[14:])
    return None


def mesh_evidence(pid: int) -> tuple[str, str | None, str]:
    """(SMP mesh type, proxy, why) of a sidecar PID, from what the node shows of it only.

    Istio: an Envoy started by Istio's pilot-agent (or with Istio's bootstrap); Linkerd: the
    linkerd2-proxy binary. A plain Envoy is a proxy without a known mesh: INVALID_MESH, SMP's
    "unknown", never ISTIO by default.
    """
    name, args = comm(pid), cmdline(pid)
    exe = Path(args[0]).name if args and args[0] else name
    if "linkerd2-proxy" in (name, exe) or name.startswith("linkerd2"):
        return "LINKERD", "linkerd2-proxy", f"PID {pid} is linkerd2-proxy"
    if "envoy" in (name, exe):
        parent = ppid(pid)
        if parent and comm(parent) == "pilot-agent":
            return "ISTIO", "envoy", f"PID {pid} is an Envoy started by Istio's pilot-agent"
        if any("/etc/istio/" in a for a in args):
            return "ISTIO", "envoy", f"PID {pid} is an Envoy with Istio's bootstrap"
        return "INVALID_MESH", "envoy", f"PID {pid} is a plain Envoy: no Istio or other mesh seen"
    return "INVALID_MESH", None, f"PID {pid} ({name or '?'}) is no known sidecar proxy"
