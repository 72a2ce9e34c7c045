"""Compile and load a probe from ``bpf/`` with BCC, after the host is made ready for it.

Options reach the C as ``-D`` macros; the defaults live in the C (``#ifndef``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from profiler import capabilities
from profiler.errors import CapabilityMissing, PermissionDenied

_PACKAGED = Path(__file__).resolve().parent.parent / "_bpf"
_SOURCE_TREE = Path(__file__).resolve().parent.parent.parent / "bpf"


def bpf_dir() -> Path:
    """Where the probe sources are: inside the wheel, or the repository's ``bpf/``."""
    return _PACKAGED if _PACKAGED.is_dir() else _SOURCE_TREE


def cflags(defines: Mapping[str, int | str] | None = None) -> list[str]:
    d = bpf_dir()
    flags = [f"-I{d}", f"-I{d / 'include'}"]
    for key, value in (defines or {}).items():
        flags.append(f"-D{key}={value}")
    return flags


def load(probe: str, defines: Mapping[str, int | str] | None = None) -> Any:
    """Compile ``bpf/<probe>.c`` and return the BCC ``BPF`` object (programs auto-attached)."""
    root = capabilities.check_root()
    if not root.ok:
        raise PermissionDenied(root.detail)
    bpf_class, detail = capabilities.import_bcc()
    if bpf_class is None:
        raise CapabilityMissing(detail)
    src = bpf_dir() / f"{probe}.c"
    if not src.is_file():
        raise CapabilityMissing(f"probe source {src} is missing (broken install?)")
    noise: list[str] = []
    try:
        with capabilities.captured_stderr() as noise:
            return bpf_class(src_file=str(src), cflags=cflags(defines))
    except Exception as e:
        errors = [n for n in noise if "error" in n.lower()] or noise or [str(e)]
        raise CapabilityMissing(f"probe {probe} failed to compile or load: {errors[0]}") from e


def fill_pid_filter(bpf: Any, pids: Iterable[int]) -> None:
    """Put the thread-group ids to trace into the probe's in-kernel filter map."""
    table = bpf["smp_filter_pids"]
    for pid in pids:
        table[table.Key(pid)] = table.Leaf(1)


def drops(bpf: Any) -> int:
    """Ring-buffer reservations that failed, summed over CPUs."""
    table = bpf["smp_drops"]
    return int(table.sum(table.Key(0)).value)


BPF_STATS_SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")


# The verifier's budget per program load (BPF_COMPLEXITY_LIMIT_INSNS, since Linux 5.2): a
# program whose paths take more instructions to check fails to load with E2BIG.
VERIFIER_INSN_LIMIT = 1_000_000


def fdinfo_numbers(text: str) -> dict[str, int]:
    """The numeric fields of a BPF program's ``/proc/<pid>/fdinfo/<fd>`` text."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        with contextlib.suppress(ValueError):
            values[key] = int(value.strip())
    return values


def parse_fdinfo(text: str) -> tuple[int, int]:
    """(run_cnt, run_time_ns) from a BPF program's fdinfo text; zeros when the kernel prints
    no counters (they count only while ``bpf_stats_enabled`` is 1)."""
    values = fdinfo_numbers(text)
    return values.get("run_cnt", 0), values.get("run_time_ns", 0)


def _fdinfos(bpf: Any) -> Iterator[tuple[str, str]]:
    """(program name, fdinfo text) for every program ``bpf`` has loaded, from this process's
    fdinfo of the program fds BCC keeps."""
    for name, fn in bpf.funcs.items():
        key = name.decode() if isinstance(name, bytes) else str(name)
        try:
            yield key, Path(f"/proc/self/fdinfo/{int(fn.fd)}").read_text()
        except OSError:
            continue


def prog_stats(bpf: Any) -> dict[str, tuple[int, int]]:
    """Program name -> (run_cnt, run_time_ns) for every program ``bpf`` has loaded. Kernel
    time spent running the programs, which is charged to the traced processes' syscalls, not
    to this process."""
    return {name: parse_fdinfo(text) for name, text in _fdinfos(bpf)}


def verified_insns(bpf: Any) -> dict[str, int]:
    """Program name -> instructions the verifier processed to load it (fdinfo's
    ``verified_insns``, Linux 5.16+; programs whose kernel does not say are left out), to
    compare with ``VERIFIER_INSN_LIMIT``."""
    out: dict[str, int] = {}
    for name, text in _fdinfos(bpf):
        n = fdinfo_numbers(text).get("verified_insns")
        if n is not None:
            out[name] = n
    return out


@contextlib.contextmanager
def bpf_stats_enabled() -> Iterator[bool]:
    """Turn on the kernel's per-program run-time accounting (``kernel.bpf_stats_enabled``)
    for the block and put the previous value back after. Yields whether it is on; it costs
    two clock reads per program run while on, so it is never left enabled."""
    try:
        before = BPF_STATS_SYSCTL.read_text().strip()
    except OSError:
        yield False
        return
    try:
        if before != "1":
            BPF_STATS_SYSCTL.write_text("1\n")
    except OSError:
        yield False
        return
    try:
        yield True
    finally:
        if before != "1":
            with contextlib.suppress(OSError):
                BPF_STATS_SYSCTL.write_text(before + "\n")
