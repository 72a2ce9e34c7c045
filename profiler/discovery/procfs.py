"""The few ``/proc/<pid>`` files discovery reads, each read in one place.

Every reader returns an empty answer for a process that is gone or unreadable (it may exit
at any moment), never raises: callers decide what a missing process means.
"""

from __future__ import annotations

from pathlib import Path

PROC = "/proc"


def comm(pid: int, tid: int | None = None, proc: str = PROC) -> str:
    """The process's (or its thread's) name, or "" when it is gone."""
    path = f"{proc}/{pid}/comm" if tid is None else f"{proc}/{pid}/task/{tid}/comm"
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def cmdline(pid: int, proc: str = PROC) -> list[str]:
    """Its argv (with a trailing "" as the kernel ends it with NUL), or [] when it is gone."""
    try:
        return Path(f"{proc}/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def ppid(pid: int, proc: str = PROC) -> int | None:
    """Its parent's PID, or None when it is gone."""
    try:
        stat = Path(f"{proc}/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None
