"""What BCC needs from the host before it can compile a probe: kernel headers and tracefs.

BCC compiles probes against ``/lib/modules/$(uname -r)/build``, or the tree named by
``BCC_KERNEL_SOURCE``. Where the running kernel ships no headers there (COS, Bottlerocket,
Talos, Flatcar, custom kernels, or a container whose /lib/modules is its own), we point BCC at
another tree through ``BCC_KERNEL_SOURCE``: the host's own headers when a DaemonSet mounts them
(``SMP_HOST_ROOT``), else the nearest installed Debian tree (the image's, or the one ``make
setup`` installs). The probes rely only on stable ABIs (tracepoints, uprobes), whose layouts
come from the running kernel's tracefs ``format`` files and BTF rather than from the headers.
Nothing under /lib/modules or /usr/src is written (they may be read-only); a Debian split tree
is merged by symlinks in a scratch directory. Every choice not BCC's own is announced on stderr.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

MODULES_DIR = Path("/lib/modules")
HEADERS_ROOT = Path("/usr/src")
TRACEFS = Path("/sys/kernel/tracing")
DEBUGFS = Path("/sys/kernel/debug")
RUNTIME_DIR = Path("/run/smp-profiler")
HOST_ROOT_ENV = "SMP_HOST_ROOT"
BCC_KERNEL_SOURCE = "BCC_KERNEL_SOURCE"  # libbcc (>= 0.10) compiles against this tree when set


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


def installed_header_trees(root: Path | None = None) -> list[tuple[Path, Path | None]]:
    """Arch-specific Debian header trees under ``root`` (/usr/src) and their ``-common``
    siblings."""
    root = root or HEADERS_ROOT
    trees = []
    for d in sorted(root.glob("linux-headers-*")):
        if d.name.endswith("-common") or not (d / "include").is_dir():
            continue
        common = d.with_name(re.sub(r"-[a-z0-9_]+$", "-common", d.name))
        trees.append((d, common if common.is_dir() else None))
    return trees


def nearest_header_tree(release: str, root: Path | None = None) -> tuple[Path, Path | None] | None:
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


_presented: tuple[str, HeaderTree] | None = None  # the tree this process set BCC_KERNEL_SOURCE to


def host_root() -> Path | None:
    """Where the host's file system is mounted (the DaemonSet: ``SMP_HOST_ROOT=/host``)."""
    value = os.environ.get(HOST_ROOT_ENV)
    return Path(value) if value else None


def resolve_in_root(root: Path, path: str) -> Path:
    """``path`` as the host sees it, with every symlink resolved inside ``root`` (absolute
    link targets are the host's, not this container's): ``/lib/modules/<r>/build`` ->
    ``<root>/usr/src/linux-headers-<r>``."""
    parts = [p for p in path.split("/") if p]
    done: list[str] = []
    for _ in range(40):  # symlink hops, as the kernel's ELOOP limit
        if not parts:
            break
        name = parts.pop(0)
        if name == "..":
            if done:
                done.pop()
            continue
        if name == ".":
            continue
        here = root.joinpath(*done, name)
        if here.is_symlink():
            target = os.readlink(here)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p] + parts
            continue
        done.append(name)
    return root.joinpath(*done)


def _has_headers(d: Path | None) -> bool:
    return d is not None and (d / "include").is_dir()


def _own_tree(release: str) -> HeaderTree | None:
    """The tree BCC finds by itself at ``/lib/modules/<release>/build``."""
    kdir = MODULES_DIR / release
    build, source = kdir / "build", kdir / "source"
    if not _has_headers(build):
        return None
    target = build.resolve()
    exact = release in target.name or not build.is_symlink()
    what = "running kernel's headers" if exact else f"installed headers {target.name}"
    return HeaderTree(
        build,
        source if source.exists() else None,
        exact,
        f"{what} at {target}"
        + ("" if exact else f" (running {release}): only stable-ABI probes are safe"),
    )


def _host_tree(release: str, root: Path) -> tuple[Path, Path | None] | None:
    """The host's own headers for the running kernel, seen through ``root``."""
    build = resolve_in_root(root, f"/lib/modules/{release}/build")
    if not _has_headers(build):
        return None
    source = resolve_in_root(root, f"/lib/modules/{release}/source")
    return build, source if source.is_dir() and source != build else None


def _merge(dest: Path, sources: list[Path]) -> None:
    """Lay ``sources`` over each other at ``dest`` with symlinks (the first wins): a name
    in one source is a link to it; a directory in several becomes a directory, merged."""
    dest.mkdir(parents=True, exist_ok=True)
    names: dict[str, list[Path]] = {}
    for src in sources:
        for entry in sorted(src.iterdir()):
            names.setdefault(entry.name, []).append(entry)
    for name, entries in names.items():
        dirs = [e for e in entries if e.is_dir()]
        if len(dirs) > 1:
            _merge(dest / name, dirs)
        else:
            (dest / name).symlink_to(entries[0])


def _scratch_dirs() -> list[Path]:
    return [RUNTIME_DIR / "kernel-headers", Path(tempfile.gettempdir()) / "smp-kernel-headers"]


def present_tree(build: Path, source: Path | None, release: str) -> Path:
    """A single directory BCC can compile against (``BCC_KERNEL_SOURCE``): ``build`` itself
    when it is a whole tree, else Debian's split pair (``-amd64`` generated headers over
    ``-common``) merged by symlinks in a scratch directory. Nothing under /lib/modules or
    /usr/src is written: they may be read-only (a container, an immutable node image)."""
    if source is None:
        return build
    errors = []
    for scratch in _scratch_dirs():
        dest = scratch / f"{release}-{build.name}"
        try:
            if (dest / "include").is_dir():
                _world_readable(dest)
                return dest
            tmp = Path(tempfile.mkdtemp(prefix=".merge-", dir=_mkdirs(scratch)))
            _merge(tmp, [build, source])
            tmp.chmod(TREE_MODE)
            try:
                tmp.rename(dest)
            except OSError:  # another process merged it meanwhile
                shutil.rmtree(tmp, ignore_errors=True)
            return dest
        except OSError as e:
            errors.append(f"{scratch}: {e.strerror or e}")
    raise OSError(errno.EROFS, "no writable scratch directory: " + "; ".join(errors))


# The merged tree is links to public headers: readable by all, as /usr/src is, so that a
# capture by another user with CAP_BPF (docs: least privilege) can compile against a tree root
# merged first. mkdtemp makes 0700.
TREE_MODE = 0o755


def _world_readable(tree: Path) -> None:
    """Open up a tree an earlier version left 0700 (mkdtemp's mode), where this process may
    (its owner); anything else is left as it is."""
    with contextlib.suppress(OSError):
        st = tree.stat()
        if st.st_mode & 0o777 != TREE_MODE and st.st_uid == os.geteuid():
            tree.chmod(TREE_MODE)


def _mkdirs(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    return d


def resolve_headers(present: bool = True, release: str | None = None) -> HeaderTree:
    """Find the header tree for BCC; with ``present``, point BCC at it (``BCC_KERNEL_SOURCE``)
    when BCC would not find it by itself. In order: a ``BCC_KERNEL_SOURCE`` already set; the
    running kernel's tree where BCC looks (``/lib/modules/<release>/build``); the host's own
    tree under ``SMP_HOST_ROOT`` (the DaemonSet mounts the host's /lib/modules and /usr/src
    there); the nearest installed Debian tree (the image's, or the one ``make setup``
    installs). Never raises: a tree that cannot be used is a reason in ``detail``."""
    global _presented
    release = release or os.uname().release
    given = os.environ.get(BCC_KERNEL_SOURCE)
    if given and _presented is not None and given == str(_presented[1].build):
        if _presented[0] == release:
            return _presented[1]
        given = None  # set by this process for another release: choose again
    if given:
        ok = _has_headers(Path(given))
        detail = f"{BCC_KERNEL_SOURCE}={given}" + ("" if ok else " has no include/ directory")
        return HeaderTree(Path(given) if ok else None, None, False, detail)
    own = _own_tree(release)
    if own is not None and own.exact:
        return own
    chosen: tuple[Path, Path | None] | None = None
    exact = False
    root = host_root()
    if root is not None:
        chosen = _host_tree(release, root)
        exact = chosen is not None
    if chosen is None and own is not None:
        return own
    if chosen is None:
        chosen = nearest_header_tree(release)
    if chosen is None:
        where = f"{HEADERS_ROOT}" + (f" or the host's {root}/lib/modules" if root else "")
        return HeaderTree(
            None,
            None,
            False,
            f"no headers for {release} and none installed under {where} "
            "(install linux-headers-amd64)",
        )
    build, source = chosen
    what = (
        f"host's headers for {release} at {build}"
        if exact
        else f"nearest installed headers {build.name} (running {release}): only stable-ABI "
        "probes (tracepoints, uprobes) are safe"
    )
    if not present:
        return HeaderTree(build, source, exact, what)
    try:
        tree = present_tree(build, source, release)
    except OSError as e:
        return HeaderTree(None, None, exact, f"{what}, but cannot present them to BCC: {e}")
    os.environ[BCC_KERNEL_SOURCE] = str(tree)
    if not exact:
        _announce(f"compiling against {build.name} ({BCC_KERNEL_SOURCE}={tree}; running {release})")
    chosen_tree = HeaderTree(
        tree, source, exact, f"{what}, presented as {BCC_KERNEL_SOURCE}={tree}"
    )
    _presented = (release, chosen_tree)
    return chosen_tree


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
