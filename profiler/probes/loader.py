"""Compile and load a probe from ``bpf/`` with BCC, after the host is made ready for it.

Options reach the C as ``-D`` macros; the defaults live in the C (``#ifndef``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
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


def load(
    probe: str, defines: Mapping[str, int | str] | None = None, *, reusable: bool = False
) -> Any:
    """Compile ``bpf/<probe>.c`` and return the BCC ``BPF`` object (programs auto-attached).
    Give it back with :func:`release`. ``reusable``: the caller keeps no state of its own in
    the object, so a released one of the same build may be handed out again (see REUSE)."""
    root = capabilities.check_root()
    if not root.ok:
        raise PermissionDenied(root.detail)
    bpf_class, detail = capabilities.import_bcc()
    if bpf_class is None:
        raise CapabilityMissing(detail)
    src = bpf_dir() / f"{probe}.c"
    if not src.is_file():
        raise CapabilityMissing(f"probe source {src} is missing (broken install?)")
    flags = cflags(defines)
    key = _build_key(src, flags) if reusable and REUSE["on"] else None
    if key is not None and _pool.get(key):
        bpf = _pool[key].pop()
        try:
            _attach(bpf)
        except Exception:  # a kept object that cannot attach: built anew
            bpf.cleanup()
        else:
            return bpf
    noise: list[str] = []
    try:
        with capabilities.captured_stderr() as noise:
            bpf = bpf_class(src_file=str(src), cflags=flags)
    except Exception as e:
        errors = [n for n in noise if "error" in n.lower()] or noise or [str(e)]
        raise CapabilityMissing(f"probe {probe} failed to compile or load: {errors[0]}") from e
    if key is not None and _poolable(bpf):
        bpf.smp_build_key = key
        bpf.smp_attached = [*((b"raw", tp) for tp in bpf.raw_tracepoint_fds),
                            *((b"tp", tp) for tp in bpf.tracepoint_fds)]  # fmt: skip
    return bpf


# -- reuse within one process (the test suite) ---------------------------------------------
# The integration tests load the same few probe builds dozens of times in one process (the
# main suite ran 5.5 min shorter without those loads, the fallback part 4.8), and each load
# compiles it again (~3.6 s on the sock path here) and has the kernel verify it (~4 s). With
# REUSE["on"] (tests/integration/conftest.py sets it, in the test process only) release()
# keeps a released object, its programs detached, its ring read to the end and every map but
# the program arrays emptied, and the next load() of the same build (the same sources, flags
# and kernel headers) in this process takes it and attaches it again: as new to its maps as a
# fresh load, without the compiler and the verifier. Off everywhere else: a node loads its
# probe once, and the CLI's processes (the tests run them too) load and unload as on a node.
REUSE = {"on": False}
_pool: dict[str, list[Any]] = {}


def _build_key(src: Path, flags: list[str]) -> str:
    h = hashlib.sha256()
    for path in sorted(src.parent.glob("*.[ch]")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    h.update("\0".join([str(src), *flags, os.environ.get("BCC_KERNEL_SOURCE", "")]).encode())
    return h.hexdigest()


def _poolable(bpf: Any) -> bool:
    """Only tracepoints are attached (detached and attached again by name) and no reader
    BCC owns is open on it."""
    others = (bpf.kprobe_fds, bpf.uprobe_fds, bpf.kfunc_entry_fds, bpf.kfunc_exit_fds,
              bpf.lsm_fds, bpf.perf_buffers, bpf.open_perf_events)  # fmt: skip
    return not any(others) and bpf._ringbuf_manager is None


def _attach(bpf: Any) -> None:
    for kind, tp in bpf.smp_attached:
        if kind == b"raw":
            bpf.attach_raw_tracepoint(tp=tp, fn_name=b"raw_tracepoint__" + tp)
        else:
            bpf.attach_tracepoint(tp=tp, fn_name=b"tracepoint__" + tp.replace(b":", b"__"))


def release(bpf: Any) -> None:
    """Done with a probe from :func:`load`: unloaded, or kept for reuse (REUSE)."""
    key = getattr(bpf, "smp_build_key", None)
    if key is None or not REUSE["on"]:
        bpf.cleanup()
        return
    if any(kept is bpf for kept in _pool.get(key, [])):
        return  # released twice: kept once, or two probes would share it
    try:
        for tp in list(bpf.raw_tracepoint_fds):
            bpf.detach_raw_tracepoint(tp)
        for tp in list(bpf.tracepoint_fds):
            bpf.detach_tracepoint(tp)
        time.sleep(0.01)  # a program that was running as it was detached ends
        empty_maps(bpf)
    except Exception:  # not as new: unloaded instead
        bpf.cleanup()
        return
    _pool.setdefault(key, []).append(bpf)


def table_names(bpf: Any) -> list[bytes]:
    """Every map the object's source declares."""
    import ctypes

    from bcc.libbcc import lib

    # libbcc's C API; BCC's Python declares neither (a pointer passed as an int crashes)
    lib.bpf_num_tables.restype = ctypes.c_size_t
    lib.bpf_num_tables.argtypes = [ctypes.c_void_p]
    lib.bpf_table_name.restype = ctypes.c_char_p
    lib.bpf_table_name.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return [lib.bpf_table_name(bpf.module, i) for i in range(lib.bpf_num_tables(bpf.module))]


def empty_maps(bpf: Any) -> None:
    """Every map as a new load has it: hashes without entries, arrays all zeroes, rings read
    to the end. Program arrays keep their programs (a probe's tail calls)."""
    from bcc import table as bt

    from profiler.probes.ringbuf import skip_unread

    for name in table_names(bpf):
        t = bpf[name]
        if isinstance(t, bt.ProgArray):
            continue
        if isinstance(t, bt.RingBuf):
            skip_unread(t.map_fd)
        elif isinstance(t, bt.PerCpuArray):
            for i in range(t.max_entries):
                t[t.Key(i)] = t.Leaf()
        elif isinstance(t, bt.ArrayBase):
            n = t.max_entries
            keys = (t.Key * n)(*range(n))
            t.items_update_batch(keys, (t.Leaf * n)())
        else:
            t.clear()


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
