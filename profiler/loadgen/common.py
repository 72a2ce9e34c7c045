"""What the generators share: the error, ``ip netns exec``, running a tool, reading JSON files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from profiler.errors import BadInputFile, SmpError, TargetNotFound


class LoadgenError(SmpError):
    """A load generator process failed."""


def netns_prefix(netns: str | None) -> list[str]:
    """``ip netns exec NAME`` for a namespace that exists, or nothing."""
    if netns is None:
        return []
    if not Path("/run/netns", netns).exists():
        raise TargetNotFound(f"network namespace '{netns}' does not exist (ip netns list)")
    return ["ip", "netns", "exec", netns]


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
