"""What the generators share: the error, ``ip netns exec``, running a tool, reading JSON files."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from profiler.errors import BadInputFile, CapabilityMissing, SmpError, TargetNotFound, UsageError


class LoadgenError(SmpError):
    """A load generator process failed."""


def find_binary(name: str, how_to_install: str) -> str:
    """The path of an external load generator, or CapabilityMissing saying how to get it."""
    path = shutil.which(name)
    if path is None:
        raise CapabilityMissing(f"{name} is not installed ({how_to_install})")
    return path


def netns_prefix(netns: str | None) -> list[str]:
    """``ip netns exec NAME`` for a namespace that exists, or nothing."""
    if netns is None:
        return []
    if not Path("/run/netns", netns).exists():
        raise TargetNotFound(f"network namespace '{netns}' does not exist (ip netns list)")
    return ["ip", "netns", "exec", netns]


def cgroup2_mounts() -> list[Path]:
    with open("/proc/self/mounts") as f:
        return [
            Path(p[1]) for p in (line.split() for line in f) if len(p) > 2 and p[2] == "cgroup2"
        ]


def cgroup_prefix(cgroup: str | None) -> list[str]:
    """A wrapper that moves the process into a cgroup v2 directory, then execs the command.

    Only cgroup v2 (unified) directories are accepted: v1 hierarchies are the machine's own.
    """
    if cgroup is None:
        return []
    path = Path(cgroup).resolve()
    if not any(path.is_relative_to(m) for m in cgroup2_mounts()):
        raise UsageError(f"{cgroup} is not a cgroup v2 directory (only the unified hierarchy)")
    procs = path / "cgroup.procs"
    if not procs.exists():
        raise TargetNotFound(f"cgroup {cgroup} does not exist")
    return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(procs)]


def launch_prefix(netns: str | None, cgroup: str | None) -> list[str]:
    """Run inside a cgroup v2 directory and a network namespace (either, both or neither)."""
    return [*cgroup_prefix(cgroup), *netns_prefix(netns)]


def run_tool(name: str, cmd: list[str], seconds: float) -> str:
    """Run an external generator; its stdout, or one line saying why it failed."""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        raise LoadgenError(f"{name} did not finish within {seconds + 30:.0f} s") from None
    if p.returncode != 0:
        last = (p.stderr or p.stdout).strip().splitlines()
        raise LoadgenError(f"{name} failed: {last[-1] if last else f'exit {p.returncode}'}")
    return p.stdout


def load_json(source: str | Path | dict[str, Any] | list[Any], what: str) -> Any:
    """A parsed JSON document from a path or an already-parsed object."""
    if isinstance(source, dict | list):
        return source
    path = Path(source)
    try:
        text = path.read_text()
    except OSError as e:
        raise BadInputFile(f"cannot read {what} file {path}: {e.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise BadInputFile(f"{path} is not JSON ({e.msg} at line {e.lineno}): truncated?") from None


def parse_target(url: str) -> tuple[str, int, str, str]:
    """(host, port, path with query, Host header) of an http:// URL."""
    u = urlsplit(url)
    if u.scheme != "http" or not u.hostname:
        raise UsageError(
            f"the built-in generator needs an http://host[:port]/path URL, not {url!r}"
        )
    try:
        port = u.port or 80
    except ValueError:
        raise UsageError(f"bad port in {url!r}") from None
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    host_header = u.netloc.rsplit("@", 1)[-1]
    return u.hostname, port, path, host_header
