"""Feature probes: each check tries the real thing and says why it failed.

The same answers serve ``smp-profiler doctor``, the probe loader and the test markers, so a
test skip, a refused capture and the doctor table always agree. Kernel versions are never
consulted; only what the kernel does when asked.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from profiler import btf, kernel
from profiler.errors import PermissionDenied

CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 12, 21, 38, 39
_SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine(), 321)
_BPF_MAP_CREATE = 0
_MAP_ARRAY, _MAP_RINGBUF = 2, 27


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, object]:
        return asdict(self)


# Checks that must pass for a capture (kprobes and fentry are reported, never required).
REQUIRED = ("root", "bpf_syscall", "bcc", "bcc_compile", "tracepoints", "ringbuf", "tracefs")


def effective_caps() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def _has(caps: int, *names: int) -> bool:
    return all(caps & (1 << c) for c in names)


def check_root() -> Check:
    """Privileges for a capture: root, or CAP_BPF+CAP_PERFMON with tracefs readable (UID 0
    owns tracefs, mode 0700; another UID also needs CAP_DAC_READ_SEARCH to read it)."""
    caps = effective_caps()
    if os.geteuid() == 0 and _has(caps, CAP_SYS_ADMIN):
        return Check("root", True, "running as root")
    if not _has(caps, CAP_BPF, CAP_PERFMON):
        return Check("root", False, "not root and no CAP_BPF+CAP_PERFMON: run with sudo")
    tracefs = kernel.TRACEFS
    if tracefs.is_dir() and not os.access(tracefs, os.R_OK | os.X_OK, effective_ids=True):
        return Check(
            "root",
            False,
            f"CAP_BPF and CAP_PERFMON, but UID {os.geteuid()} cannot read {tracefs}: "
            "add CAP_DAC_READ_SEARCH or run as root",
        )
    return Check("root", True, f"CAP_BPF and CAP_PERFMON (UID {os.geteuid()})")


ADMIN_CAPS = (CAP_SYS_ADMIN, CAP_NET_ADMIN)


def require_bpf(action: str) -> None:
    """Raise PermissionDenied (exit 77) unless this process may load and attach probes."""
    root = check_root()
    if not root.ok:
        raise PermissionDenied(f"{action} loads BPF probes: {root.detail}")


def require_admin(action: str) -> None:
    """Raise PermissionDenied (exit 77) unless root with CAP_SYS_ADMIN and CAP_NET_ADMIN:
    entering network namespaces, iptables, cgroups and signalling the testbed's processes."""
    if os.geteuid() != 0 or not _has(effective_caps(), *ADMIN_CAPS):
        raise PermissionDenied(
            f"{action} needs root with CAP_SYS_ADMIN and CAP_NET_ADMIN "
            "(network namespaces, iptables, cgroups): run with sudo"
        )


def _bpf_map_create(map_type: int, key: int, value: int, entries: int) -> int:
    attr = (ctypes.c_uint32 * 32)()
    attr[0], attr[1], attr[2], attr[3] = map_type, key, value, entries
    libc = ctypes.CDLL(None, use_errno=True)
    fd = int(libc.syscall(_SYS_BPF, _BPF_MAP_CREATE, ctypes.byref(attr), ctypes.sizeof(attr)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    os.close(fd)
    return fd


def check_bpf_syscall() -> Check:
    try:
        _bpf_map_create(_MAP_ARRAY, 4, 8, 1)
    except OSError as e:
        return Check("bpf_syscall", False, f"bpf(BPF_MAP_CREATE) failed: {e.strerror}")
    return Check("bpf_syscall", True, "bpf() creates maps")


def check_ringbuf() -> Check:
    try:
        _bpf_map_create(_MAP_RINGBUF, 0, 0, 4096)
    except OSError as e:
        return Check("ringbuf", False, f"BPF ring buffer map refused: {e.strerror}")
    return Check("ringbuf", True, "BPF_MAP_TYPE_RINGBUF available")


def check_btf() -> Check:
    p = Path("/sys/kernel/btf/vmlinux")
    if p.exists() and os.access(p, os.R_OK):
        return Check("btf", True, f"{p} ({p.stat().st_size // 1024} KiB)")
    return Check("btf", False, f"{p} missing: kernel built without CONFIG_DEBUG_INFO_BTF")


def check_tracefs() -> Check:
    ok, detail = kernel.ensure_tracefs()
    return Check("tracefs", ok, detail)


def check_cgroup_v2() -> Check:
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and parts[2] == "cgroup2":
                return Check("cgroup_v2", True, f"cgroup2 at {parts[1]}")
    return Check("cgroup_v2", False, "no cgroup2 mount")


def check_kernel_headers() -> Check:
    tree = kernel.resolve_headers()
    return Check("kernel_headers", tree.usable, tree.detail)


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Redirect fd 2 (BCC and libbpf write there) and hand back what was written."""
    out: list[str] = []
    with tempfile.TemporaryFile(mode="w+") as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            out.extend(line.strip() for line in tmp if line.strip())


def _reason(exc: BaseException, noise: list[str]) -> str:
    errors = [line for line in noise if "error" in line.lower() or "fail" in line.lower()]
    text = (errors[-1] if errors else str(exc)).strip()
    return text[:160]


_PROBE_TEXT = """
int smp_cap_tp(void *ctx) { return 0; }
int smp_cap_up(struct pt_regs *ctx) { return 0; }
int smp_cap_kp(struct pt_regs *ctx) { return 0; }
"""
_FENTRY_TEXT = "KFUNC_PROBE(do_sys_openat2) { return 0; }"


def _attach_checks(bpf_class: type) -> list[Check]:
    checks: list[Check] = []
    noise: list[str] = []
    try:
        with captured_stderr() as noise:
            b = bpf_class(text=_PROBE_TEXT)
    except Exception as e:
        detail = f"BCC could not compile a program: {_reason(e, noise)}"
        return [Check("bcc_compile", False, detail)] + [
            Check(n, False, "needs bcc_compile")
            for n in ("tracepoints", "uprobes", "kprobes", "fentry")
        ]
    checks.append(Check("bcc_compile", True, "compiled and loaded a test program"))

    def attempt(name: str, ok_detail: str, fn: Callable[[], object]) -> None:
        try:
            with captured_stderr() as noise:
                fn()
            checks.append(Check(name, True, ok_detail))
        except Exception as e:
            checks.append(Check(name, False, _reason(e, noise)))

    attempt(
        "tracepoints",
        "attached to syscalls:sys_enter_getppid",
        lambda: b.attach_tracepoint(tp="syscalls:sys_enter_getppid", fn_name="smp_cap_tp"),
    )
    attempt(
        "uprobes",
        "attached a uprobe to libc getppid",
        lambda: b.attach_uprobe(name="c", sym="getppid", fn_name="smp_cap_up"),
    )
    attempt(
        "kprobes",
        "attached a kprobe",
        lambda: b.attach_kprobe(event=b.get_syscall_fnname("getppid"), fn_name="smp_cap_kp"),
    )
    b.cleanup()

    def fentry() -> None:
        f = bpf_class(text=_FENTRY_TEXT)
        try:
            f.attach_kfunc(fn_name="do_sys_openat2")
        finally:
            f.cleanup()

    attempt("fentry", "attached an fentry program to do_sys_openat2", fentry)
    if not checks[-1].ok:
        checks[-1] = Check("fentry", False, f"fentry refused: {checks[-1].detail}")
    for i, c in enumerate(checks):
        if c.name == "kprobes" and not c.ok:
            checks[i] = Check("kprobes", False, f"kprobe refused: {c.detail}")
    return checks


_SOCK_PATH_TEXT = """
#include <asm/ptrace.h>
RAW_TRACEPOINT_PROBE(sock_recv_length)
{
    struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
    return regs->orig_ax == 0xffff;
}
RAW_TRACEPOINT_PROBE(sock_send_length) { return 0; }
RAW_TRACEPOINT_PROBE(inet_sock_set_state) { return 0; }
"""
PROBE_PATH_ENV = "SMP_PROBE_PATH"  # sock | syscalls: forces the sidecar probe's hooks
PROBE_PATHS = ("sock", "syscalls")


def check_sock_path(bpf_class: type) -> Check:
    """Can the sidecar probe's fast path load here: raw tracepoints sock_recv_length,
    sock_send_length (Linux >= 6.3) and inet_sock_set_state, reading the syscall's user
    registers (bpf_get_current_task_btf + bpf_task_pt_regs)? Tried, never a version check."""
    noise: list[str] = []
    try:
        with captured_stderr() as noise:
            b = bpf_class(text=_SOCK_PATH_TEXT)
    except Exception as e:
        return Check(
            "sock_tracepoints", False, f"sock raw tracepoints refused: {_reason(e, noise)}"
        )
    b.cleanup()
    return Check(
        "sock_tracepoints", True, "raw tracepoints sock_{recv,send}_length with user registers"
    )


_path_cache: dict[str, tuple[str, str]] = {}


def probe_path() -> tuple[str, str]:
    """(path, why) for the sidecar probe: ``sock`` where its feature probe passes, else
    ``syscalls``; ``SMP_PROBE_PATH=sock|syscalls`` forces one (CI runs the suite on both).
    Raises ValueError for any other value of the variable."""
    forced = os.environ.get(PROBE_PATH_ENV, "").strip()
    if forced:
        if forced not in PROBE_PATHS:
            raise ValueError(
                f"{PROBE_PATH_ENV}={forced!r}: expected one of {', '.join(PROBE_PATHS)}"
            )
        return forced, f"forced by {PROBE_PATH_ENV}"
    if "auto" not in _path_cache:
        bpf_class, detail = import_bcc()
        if bpf_class is None:
            _path_cache["auto"] = ("syscalls", detail)
        else:
            c = check_sock_path(bpf_class)
            _path_cache["auto"] = ("sock", c.detail) if c.ok else ("syscalls", c.detail)
    return _path_cache["auto"]


ARRIVAL_HOOKS = ("sk_data_ready", "tcp_probe", "none")


def arrival_hook(path: str) -> tuple[str, str]:
    """(hook, why): where the sidecar probe's arrival stamps (bytes reaching a socket before
    the sidecar reads them) come from on probe ``path``: ``sk_data_ready`` (raw tracepoint,
    keyed by the sk the sock path keys connections by), else ``tcp_probe`` data segments
    (with ``tcp_rcv_space_adjust`` naming the sk a syscall reads and ``inet_sock_set_state``
    the sockets accepted on a traced listener, on the syscalls path), else
    ``none`` (queue legs are then not measured). By the kernel's tracepoint list."""
    events = kernel.TRACEFS / "events"
    if path == "sock" and (events / "sock" / "sk_data_ready").is_dir():
        return "sk_data_ready", "raw tracepoint sock:sk_data_ready"
    need = ["tcp:tcp_probe"]
    if path != "sock":  # the sock path has inet_sock_set_state already
        need += ["tcp:tcp_rcv_space_adjust", "sock:inet_sock_set_state"]
    if all((events / n.replace(":", "/")).is_dir() for n in need):
        return "tcp_probe", "tracepoint " + " + ".join(need)
    return "none", "no sock:sk_data_ready or tcp:tcp_probe tracepoint: queue legs not measured"


def xmit_stamps() -> tuple[bool, int | None, str]:
    """(on, skb_len_offset, why): can writes be stamped when their first packet is queued to a
    device (net:net_dev_queue)? By the kernel's tracepoint list. ``skb_len_offset`` is where
    ``struct sk_buff``'s ``len`` lies on this kernel (BTF): the probe then takes the raw
    tracepoint, which reads the length itself, not the classic one, whose record the kernel
    fills for every packet of the node (device name included). None: the classic one."""
    if not (kernel.TRACEFS / "events" / "net" / "net_dev_queue").is_dir():
        return (
            False,
            None,
            "write instants: the socket call's own (no net:net_dev_queue tracepoint)",
        )
    off = btf.member_offset("sk_buff", "len")
    hook = (
        f"raw tracepoint net:net_dev_queue, skb->len at byte {off} by BTF"
        if off is not None
        else "net:net_dev_queue"
    )
    return True, off, f"write instants: first packet queued to a device ({hook})"


def import_bcc() -> tuple[type | None, str]:
    """Import Debian's BCC after tracefs and headers are in place (BCC reads both at import)."""
    kernel.prepare_for_bcc()
    try:
        with captured_stderr():
            from bcc import BPF
    except Exception as e:
        return None, f"cannot import bcc ({e}): install Debian's python3-bpfcc"
    return BPF, "bcc imported"


def run_all() -> list[Check]:
    """Every check, in the order ``doctor`` shows them."""
    root = check_root()
    checks = [root, check_bpf_syscall(), check_btf()]
    tracefs = check_tracefs()
    headers = check_kernel_headers()
    bpf_class, detail = import_bcc()
    checks.append(Check("bcc", bpf_class is not None, detail))
    if bpf_class is None or not root.ok:
        why = "needs bcc" if bpf_class is None else "needs root"
        attach = [
            Check(n, False, why)
            for n in ("bcc_compile", "tracepoints", "uprobes", "kprobes", "fentry")
        ]
    else:
        attach = _attach_checks(bpf_class)
    by_name = {c.name: c for c in attach}
    checks.append(by_name["bcc_compile"])
    checks.append(headers)
    checks += [by_name[n] for n in ("tracepoints", "uprobes", "kprobes", "fentry")]
    if bpf_class is None or not root.ok:
        checks.append(Check("sock_tracepoints", False, "needs bcc and root"))
    else:
        checks.append(check_sock_path(bpf_class))
    checks += [check_ringbuf(), tracefs, check_cgroup_v2()]
    return checks


def capture_possible(checks: list[Check]) -> bool:
    ok = {c.name: c.ok for c in checks}
    return all(ok.get(n, False) for n in REQUIRED)


def missing(checks: list[Check], names: tuple[str, ...] = REQUIRED) -> list[Check]:
    return [c for c in checks if c.name in names and not c.ok]
