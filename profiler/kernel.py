"""What BCC needs from the host before it can compile a probe: kernel headers and tracefs.

BCC compiles probes against ``/lib/modules/$(uname -r)/build``. Where the running kernel
ships no headers (custom or cloud kernels), we present the nearest installed Debian header
tree there; probes then rely only on stable ABIs (tracepoints, uprobes), whose layouts come
from the running kernel's tracefs ``format`` files and BTF rather than from the headers.
Every change to the host is announced on stderr; nothing is done silently.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

MODULES_DIR = Path("/lib/modules")
HEADERS_ROOT = Path("/usr/src")
TRACEFS = Path("/sys/kernel/tracing")
DEBUGFS = Path("/sys/kernel/debug")


@dataclass(frozen=True)
class HeaderTree:
    """The header tree BCC will use, and how it was chosen."""

    build: Path | None
    source: Path | None
    exact: bool  # the running kernel's own headers
    detail: str

    @property
    def usable(self) -> bool:
        return self.build is not None


def _version_tuple(text: str) -> tuple[int, ...]:
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?(?:-(\d+))?", text)
    if not m:
        return ()
    return tuple(int(g) for g in m.groups() if g is not None)


def _distance(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(abs(x - y) for x, y in zip(a, b, strict=False))


def installed_header_trees(root: Path = HEADERS_ROOT) -> list[tuple[Path, Path | None]]:
    """Arch-specific Debian header trees under ``root`` and their ``-common`` siblings."""
    trees = []
    for d in sorted(root.glob("linux-headers-*")):
        if d.name.endswith("-common") or not (d / "include").is_dir():
            continue
        common = d.with_name(re.sub(r"-[a-z0-9_]+$", "-common", d.name))
        trees.append((d, common if common.is_dir() else None))
    return trees


def nearest_header_tree(release: str, root: Path = HEADERS_ROOT) -> tuple[Path, Path | None] | None:
    """The installed tree whose version is closest to ``release`` (major first)."""
    want = _version_tuple(release)
    trees = installed_header_trees(root)
    if not trees:
        return None
    return min(
        trees,
        key=lambda t: _distance(_version_tuple(t[0].name.removeprefix("linux-headers-")), want),
    )


def _announce(message: str) -> None:
    print(f"smp-profiler: {message}", file=sys.stderr)


def resolve_headers(present: bool = True, release: str | None = None) -> HeaderTree:
    """Find the header tree for BCC; with ``present``, link the nearest one into place."""
    release = release or os.uname().release
    kdir = MODULES_DIR / release
    build, source = kdir / "build", kdir / "source"
    if (build / "include").is_dir():
        target = build.resolve()
        own = release in target.name or not build.is_symlink()
        if own:
            return HeaderTree(
                build,
                source if source.exists() else None,
                True,
                f"running kernel's headers at {target}",
            )
        return HeaderTree(
            build,
            source if source.exists() else None,
            False,
            f"nearest installed headers {target.name} presented at {build} "
            f"(running {release}): only stable-ABI probes (tracepoints, uprobes) "
            "are safe",
        )
    nearest = nearest_header_tree(release)
    if nearest is None:
        return HeaderTree(
            None,
            None,
            False,
            f"no headers for {release} and none installed under {HEADERS_ROOT} "
            "(install linux-headers-amd64)",
        )
    arch, common = nearest
    if not present or os.geteuid() != 0:
        return HeaderTree(
            None, None, False, f"no headers for {release}; {arch.name} could be presented by root"
        )
    kdir.mkdir(parents=True, exist_ok=True)
    links: list[tuple[Path, Path | None]] = [(build, arch), (source, common)]
    for link, dest in links:
        if dest is None:
            continue
        if link.is_symlink():
            link.unlink()
        link.symlink_to(dest)
    _announce(
        f"presented kernel headers {arch.name} to BCC at {build} (no headers for running {release})"
    )
    return HeaderTree(
        build,
        source if common else None,
        False,
        f"nearest installed headers {arch.name} presented at {build} "
        f"(running {release}): only stable-ABI probes (tracepoints, uprobes) "
        "are safe",
    )


def _mounted(path: Path, fstype: str) -> bool:
    try:
        with open("/proc/self/mounts") as f:
            return any(
                len(parts) > 2 and parts[1] == str(path) and parts[2] == fstype
                for parts in (line.split() for line in f)
            )
    except OSError:
        return False


def ensure_tracefs(mount: bool = True) -> tuple[bool, str]:
    """Make sure tracefs (and debugfs, which older tools expect) are mounted."""
    if TRACEFS.is_dir() and not os.access(TRACEFS, os.R_OK | os.X_OK, effective_ids=True):
        return False, (
            f"tracefs at {TRACEFS} is not readable by UID {os.geteuid()} (mode "
            f"{TRACEFS.stat().st_mode & 0o777:o}): BCC reads tracepoint formats there"
        )
    if (TRACEFS / "events").is_dir():
        return True, f"tracefs at {TRACEFS}"
    if not mount or os.geteuid() != 0:
        return False, f"tracefs is not mounted at {TRACEFS} (root can mount it)"
    done = []
    for path, fstype in ((TRACEFS, "tracefs"), (DEBUGFS, "debugfs")):
        if _mounted(path, fstype):
            continue
        r = subprocess.run(
            ["mount", "-t", fstype, fstype, str(path)], capture_output=True, text=True, check=False
        )
        if r.returncode == 0:
            done.append(f"{fstype} at {path}")
    if done:
        _announce("mounted " + " and ".join(done))
    if (TRACEFS / "events").is_dir():
        return True, f"tracefs at {TRACEFS} (mounted by smp-profiler)"
    return False, f"could not mount tracefs at {TRACEFS}"


def prepare_for_bcc() -> HeaderTree:
    """Everything BCC needs before ``import bcc``: tracefs mounted, headers presented."""
    ensure_tracefs()
    return resolve_headers()
