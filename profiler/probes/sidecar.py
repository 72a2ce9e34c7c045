"""The sidecar probe (bpf/sidecar.c): one span per request through a proxy or app.

User space only tells the kernel which processes to trace and in which mode (translating the
PIDs it was given when it runs in a child PID namespace), seeds the roles of connections that
were open before the probe attached (needed when downstream bytes are TLS), proves at start
that the probe sees its own socket traffic, and takes the records in batches: every poll reads
all new records of the ring buffer as one numpy structured array (profiler/probes/ringbuf.py)
whose dtype, enums and flags come from bpf/sidecar.h (profiler/probes/cheader.py: no second
definition, no BCC needed to decode). See docs/probes/sidecar.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from profiler import capabilities
from profiler.errors import CapabilityMissing, TargetNotFound
from profiler.probes import cheader, loader
from profiler.probes.ringbuf import RingReader, wake_at

HEADER = cheader.read(loader.bpf_dir() / "sidecar.h")
COMMON = cheader.read(loader.bpf_dir() / "include" / "smp_common.h")
RINGBUF_PAGES = COMMON.const("SMP_RINGBUF_PAGES")  # the one default ring size
SPAN_DTYPE = HEADER.structs["smp_span"]

Mode = Literal["proxy", "app"]
Path_ = Literal["sock", "syscalls"]
_MODES: dict[Mode, int] = {
    "proxy": HEADER.const("SMP_MODE_PROXY"),
    "app": HEADER.const("SMP_MODE_APP"),
}
MODE_SELF = HEADER.const("SMP_MODE_SELF")
PID_GATE_SLOTS = HEADER.const("SMP_PID_GATE_SLOTS")  # smp_pid_gate: a slot per tgid modulo this
ROLE_DS, ROLE_US = HEADER.const("SMP_ROLE_DS"), HEADER.const("SMP_ROLE_US")
PHASE_RESPONSE = HEADER.const("SMP_PHASE_RESPONSE")
KIND_PROXY, KIND_SERVER = HEADER.const("SMP_SPAN_PROXY"), HEADER.const("SMP_SPAN_SERVER")
KIND_UNPARSED = HEADER.const("SMP_SPAN_UNPARSED")
F_DS_H2, F_US_H2, F_MATCH_RESP, F_US_TLS = (
    HEADER.const(f"SMP_F_{n}") for n in ("DS_H2", "US_H2", "MATCH_RESP", "US_TLS")
)
F_DS_TLS, F_MATCH_RID, F_MATCH_THREAD, F_DRAINED = (
    HEADER.const(f"SMP_F_{n}") for n in ("DS_TLS", "MATCH_RID", "MATCH_THREAD", "DRAINED")
)
# the kinds of smp_h2_status's keys (bpf/sidecar.c, not the shared header)
_ST_KINDS = {1: "http", 2: "grpc"}
_ST_UNKNOWN = 3
_ST_LOCAL_H1 = 4  # an HTTP/1.1 local reply's status (code 0: unknown)
F_DS_BURST = HEADER.const("SMP_F_DS_BURST")  # HTTP/2 inside TLS downstream, per upstream stream
# HTTP/1.1 legs whose write instant is the call's own, not its first packet's (none stamped)
F_US_TX_CALL, F_DS_TX_CALL = (HEADER.const(f"SMP_F_{n}") for n in ("US_TX_CALL", "DS_TX_CALL"))
_PATHS: dict[str, int] = {
    "sock": HEADER.const("SMP_PATH_SOCK"),
    "syscalls": HEADER.const("SMP_PATH_SYSCALLS"),
}
METHODS: dict[str, str] = {
    "sock": "ebpf raw tracepoints sock:sock_{recv,send}_length + inet_sock_set_state "
    "(no syscall tracepoint), spans assembled in the kernel",
    "syscalls": "ebpf-tracepoints: socket syscalls, spans assembled in the kernel "
    "(fallback: no sock tracepoints)",
}
_ARRIVALS: dict[str, int] = {
    "sk_data_ready": HEADER.const("SMP_ARRIVAL_SK_DATA_READY"),
    "tcp_probe": HEADER.const("SMP_ARRIVAL_TCP_PROBE"),
    "none": HEADER.const("SMP_ARRIVAL_NONE"),
}
ARRIVAL_METHODS: dict[str, str] = {
    "sk_data_ready": "arrival stamps from sock:sk_data_ready (bytes queued on the socket)",
    "tcp_probe": "arrival stamps from tcp:tcp_probe data segments",
    "none": "no arrival stamps (queue legs not measured)",
}
PROC_STATS = tuple(n for n in HEADER.structs["smp_proc_stats"].names or ())
INIT_PID_NS_INO = 0xEFFFFFFC  # PROC_PID_INIT_INO: the kernel's initial PID namespace
_RID_OK = re.compile(rb"^[A-Za-z0-9._:\-]+$")
_RID_CHARS = np.zeros(256, dtype=bool)  # byte -> may appear in a request id (as _RID_OK)
_RID_CHARS[[c for c in range(256) if _RID_OK.match(bytes([c]))]] = True


def request_ids(spans: np.ndarray) -> list[str]:
    """The x-request-id of each span ('' when none, or not made of id characters).
    Vectorised: checked and decoded for the whole batch at once."""
    width = spans.dtype["rid"].shape[0]
    raw = np.ascontiguousarray(spans["rid"]).view(np.uint8).reshape(len(spans), width)
    n = np.minimum(spans["rid_len"].astype(np.int64), width)
    inside = np.arange(width)[None, :] < n[:, None]
    ok = ~np.any(inside & ~_RID_CHARS[raw], axis=1) & (n > 0)
    kept = np.where(inside & ok[:, None], raw, 0).astype(np.uint8)
    out: list[str] = kept.view(f"S{width}").ravel().astype(f"U{width}").tolist()
    return out


def _socket_inodes(pid: int) -> dict[int, int]:
    """fd -> socket inode for the process's open sockets."""
    out: dict[int, int] = {}
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return out
    for name in names:
        try:
            link = os.readlink(fd_dir / name)
        except OSError:
            continue
        if link.startswith("socket:["):
            out[int(name)] = int(link[8:-1])
    return out


def _tcp_table(pid: int) -> tuple[set[int], dict[int, int]]:
    """(listening ports, inode -> local port of established sockets) in the process's netns."""
    listening: set[int] = set()
    established: dict[int, int] = {}
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) < 10:
                continue
            port, state, inode = int(f[1].rsplit(":", 1)[1], 16), f[3], int(f[9])
            if state == "0A":
                listening.add(port)
            elif state == "01":
                established[inode] = port
    return listening, established


def existing_connection_roles(pid: int) -> dict[int, int]:
    """fd -> role for the TCP connections a process already has open: accepted on one of
    its listening ports means downstream, anything else upstream."""
    listening, established = _tcp_table(pid)
    roles = {}
    for fd, inode in _socket_inodes(pid).items():
        port = established.get(inode)
        if port is not None:
            roles[fd] = ROLE_DS if port in listening else ROLE_US
    return roles


# Program array -> the programs reached through it by tail calls, in slot order. The exit
# bodies are declared on the syscalls path only (sidecar.c), and not in probe sources from
# before them (benchmarks.probe_ab --base loads those): an array the build lacks is skipped.
TAIL_CALLS = {
    "smp_h2_progs": ("smp_h2_step", "smp_h2_hpack_step"),
    "smp_exit_progs": ("smp_exit_read", "smp_exit_write"),
}


def _set_tail_calls(bpf: Any, path: Path_) -> None:
    """The programs reached by tail calls, which BCC loads only on demand, put into their
    program arrays; each must have the type of the path's programs.

    - The HTTP/2 frame walk is a chain of tail calls of one program (smp_h2_step, one frame
      header each, so each program stays small for the verifier), with the header-block
      decoder (smp_h2_hpack_step, statuses) it hands a HEADERS frame to.
    - On the syscalls path, the bodies of the read and write exits (smp_exit_read,
      smp_exit_write): the ten sys_exit_* programs are stubs that call them, so the verifier
      checks each body once."""
    from bcc import BPF

    kind = BPF.RAW_TRACEPOINT if path == "sock" else BPF.TRACEPOINT
    for array, names in TAIL_CALLS.items():
        try:
            progs = bpf[array]
        except KeyError:
            continue
        for i, name in enumerate(names):
            progs[ctypes.c_int(i)] = ctypes.c_int(bpf.load_func(name, kind).fd)


class SidecarProbe:
    """The loaded probe. Not thread-safe: one owner polls it.

    ``path`` is ``sock`` or ``syscalls`` (default: ``capabilities.probe_path()``, the feature
    probe, or ``SMP_PROBE_PATH``). Unless ``self_test=False``, the probe must see this
    process's own loopback traffic, through the same PID translation its targets get, before
    it is handed out: a probe that is blind here raises ``CapabilityMissing``."""

    def __init__(
        self,
        on_batch: Callable[[np.ndarray], None],
        ringbuf_pages: int | None = None,
        max_conns: int = 16384,
        path: Path_ | None = None,
        self_test: bool = True,
        status_entries: int = 8192,
    ) -> None:
        if path is None:
            try:
                chosen, self.path_reason = capabilities.probe_path()
            except ValueError as e:
                raise CapabilityMissing(str(e)) from e
            path = "sock" if chosen == "sock" else "syscalls"
        else:
            self.path_reason = "chosen by the caller"
        self.path: Path_ = path
        self.arrival, self.arrival_reason = capabilities.arrival_hook(path)
        self.xmit, skb_len_off, self.xmit_reason = capabilities.xmit_stamps()
        pages = RINGBUF_PAGES if ringbuf_pages is None else ringbuf_pages
        defines = {
            "SMP_RINGBUF_PAGES": pages,
            "SMP_MAX_CONNS": max_conns,
            "SMP_PATH": _PATHS[path],
            "SMP_ARRIVAL": _ARRIVALS[self.arrival],
            "SMP_XMIT_STAMPS": int(self.xmit),
            "SMP_STATUS_ENTRIES": status_entries,
            "SMP_RB_WAKE_AT": wake_at(pages, SPAN_DTYPE.itemsize),
        }
        if skb_len_off is not None:  # the raw tracepoint (see capabilities.xmit_stamps)
            defines["SMP_SKB_LEN_OFF"] = skb_len_off
        self._bpf = loader.load("sidecar", defines, reusable=True)
        _set_tail_calls(self._bpf, path)
        self._on_batch = on_batch
        self._targets: dict[int, Mode] = {}
        self._ns_slots: dict[tuple[int, int], int] = {}
        self._gates_to_close: set[int] = set()  # of removed targets (see remove_target)
        self.dtype = SPAN_DTYPE
        self._ring = RingReader(self._bpf["smp_spans"].map_fd, pages, self.dtype)
        self._unread = self._bpf["smp_rb_unread"]
        self._unread_zero = self._unread.Leaf()
        self._own_ns = _pid_ns(os.getpid())
        if self_test:
            try:
                self.self_test()
            except BaseException:
                self.close()
                raise

    @property
    def method(self) -> str:
        return "; ".join((METHODS[self.path], ARRIVAL_METHODS[self.arrival], self.xmit_reason))

    # -- targets ------------------------------------------------------------------------
    def add_target(self, pid: int, mode: Mode | int) -> None:
        """Trace ``pid`` (as this process sees it). In the kernel's initial PID namespace
        that is the kernel's tgid; in a child namespace the probe learns the kernel's tgid
        the first time the process does socket I/O (it matches the process's own namespace
        and its tgid there: bpf_get_ns_current_pid_tgid)."""
        b = self._bpf
        code = _MODES[mode] if isinstance(mode, str) else mode
        procs = b["smp_proc"]
        procs[procs.Key(pid)] = procs.Leaf()
        if code == _MODES["proxy"]:
            seed = b["smp_seed"]
            for fd, role in existing_connection_roles(pid).items():
                seed[seed.Key((pid << 32) | fd)] = seed.Leaf(role)
        if self.path == "syscalls":  # which of its fds are sockets (smp_sockfd)
            sockfd = b["smp_sockfd"]
            for fd in _socket_inodes(pid):
                sockfd[sockfd.Key((pid << 32) | fd)] = sockfd.Leaf(1)
        target = b["smp_filter_pids"].Leaf()
        target.upid = pid
        target.mode = code
        if self._own_ns == INIT_PID_NS_INO:
            filt = b["smp_filter_pids"]
            filt[filt.Key(pid)] = target
            gate = b["smp_pid_gate"]  # after the filter: an open slot is looked up
            gate[gate.Key(pid % PID_GATE_SLOTS)] = gate.Leaf(1)
        else:
            self._learn(pid, target)
        if isinstance(mode, str):
            self._targets[pid] = mode

    def _close_gates_when_learned(self) -> None:
        """Clear the PID gate's slots of removed targets that no traced tgid maps to any
        more. Only while no target is being learned: the kernel sets a slot only then
        (smp_learn), so nothing can open one between the look at the filter and the
        clearing. While one is, the slots wait for a later removal or poll."""
        if not self._gates_to_close:
            return
        b = self._bpf
        learning = b["smp_learning"]
        if learning[learning.Key(0)].value:
            return
        slots = self._gates_to_close - {k.value % PID_GATE_SLOTS for k in b["smp_filter_pids"]}
        gate = b["smp_pid_gate"]
        for slot in slots:
            gate[gate.Key(slot)] = gate.Leaf(0)
        self._gates_to_close = set()

    def _learn(self, pid: int, target: Any) -> None:
        ns = _pid_ns_dev_ino(pid)
        ns_tgid = _ns_tgid(pid)
        if ns is None or ns_tgid is None:
            raise TargetNotFound(f"no process with PID {pid}")
        slot = self._ns_slots.get(ns)
        if slot is None:
            slot = self._free_ns_slot()
            table = self._bpf["smp_ns"]
            leaf = table.Leaf()
            leaf.dev, leaf.ino = ns
            table[table.Key(slot)] = leaf
            self._ns_slots[ns] = slot
        pending = self._bpf["smp_ns_pending"]
        key = pending.Key((slot << 32) | ns_tgid)
        if key not in pending:
            pending[key] = target
            learning = self._bpf["smp_learning"]
            learning[learning.Key(0)] = learning.Leaf(learning[learning.Key(0)].value + 1)

    def _free_ns_slot(self) -> int:
        """A slot of ``smp_ns`` for one more PID namespace. A slot is needed only while a
        target of its namespace is still pending: once every one is learned (or removed) the
        slot is emptied and reused, so pods coming and going on a kind node (every container
        its own namespace) do not use the table up; only more than ``SMP_MAX_NS`` namespaces
        with targets not yet learned at once are refused."""
        limit = int(self._bpf["smp_ns"].max_entries)
        used = set(self._ns_slots.values())
        if len(used) >= limit:
            pending = {k.value >> 32 for k in self._bpf["smp_ns_pending"]}
            table = self._bpf["smp_ns"]
            for ns, slot in list(self._ns_slots.items()):
                if slot not in pending:
                    table[table.Key(slot)] = table.Leaf()  # ino 0: BPF skips the slot
                    del self._ns_slots[ns]
                    used.discard(slot)
        for slot in range(limit):
            if slot not in used:
                return slot
        raise CapabilityMissing(
            f"targets in more than {limit} PID namespaces not yet learned (SMP_MAX_NS)"
        )

    def remove_target(self, pid: int) -> None:
        b = self._bpf
        filt = b["smp_filter_pids"]
        removed = [k for k, v in filt.items() if v.upid == pid]
        for key in removed:
            with contextlib.suppress(KeyError):
                del filt[key]
        pending = b["smp_ns_pending"]
        gone = [k for k, v in pending.items() if v.upid == pid]
        for key in gone:
            with contextlib.suppress(KeyError):
                del pending[key]
        learning = b["smp_learning"]
        if gone:
            left = max(int(learning[learning.Key(0)].value) - len(gone), 0)
            learning[learning.Key(0)] = learning.Leaf(left)
        self._gates_to_close |= {k.value % PID_GATE_SLOTS for k in removed}
        self._close_gates_when_learned()
        self._targets.pop(pid, None)
        # per-thread state of the detached process: its request order and saved arguments
        for name in ("smp_thread_fifo", "smp_ans_queue", "smp_tls_last"):
            table = b[name]
            for key in [k for k, v in table.items() if v.upid == pid]:
                with contextlib.suppress(KeyError):
                    del table[key]
        args = b["smp_args_map"]
        for key in [k for k, v in args.items() if v.upid == pid]:
            with contextlib.suppress(KeyError):
                del args[key]
        conns = b["smp_conns"]
        for key in [k for k, v in conns.items() if v.upid == pid]:
            with contextlib.suppress(KeyError):
                del conns[key]
        for name in ("smp_seed", "smp_sockfd"):
            table = b[name]
            for key in [k for k in table if k.value >> 32 == pid]:
                with contextlib.suppress(KeyError):
                    del table[key]
        procs = b["smp_proc"]
        with contextlib.suppress(KeyError):
            del procs[procs.Key(pid)]
        statuses = b["smp_h2_status"]
        for key in [k for k in statuses if k.upid == pid]:
            with contextlib.suppress(KeyError):
                del statuses[key]
        listeners = b["smp_listeners"]  # its listening ports: the next process's may differ
        for key in [k for k, v in listeners.items() if v.value == pid]:
            with contextlib.suppress(KeyError):
                del listeners[key]

    @property
    def targets(self) -> dict[int, Mode]:
        return dict(self._targets)

    def self_test(self, timeout_s: float = 2.0) -> None:
        """The probe must see this process's own loopback socket traffic (its own PID,
        through the same translation as the targets') before a capture starts; else one
        clear error, never a capture that silently counts zero."""
        me = os.getpid()
        payload = b"smp-selftest " * 8
        self.add_target(me, MODE_SELF)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                _loopback_exchange(payload)
                seen = self.proc_stats(me)
                if seen["rx_bytes"] >= len(payload) and seen["tx_bytes"] >= len(payload):
                    return
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        finally:
            self.remove_target(me)
        raise CapabilityMissing(
            f"the probe ({self.path} path) did not see this process's own socket traffic "
            f"(PID {me}, PID namespace {self._own_ns}): it would count nothing; "
            "see docs/probes/sidecar.md (PID namespaces)"
        )

    # -- data ---------------------------------------------------------------------------
    def poll(self, timeout_ms: int = 100) -> None:
        """Wait ``timeout_ms``, or less once the ring is about half full, then take every
        record that arrived, as one batch. The kernel does not wake us per record: the one
        that makes half the ring unread does (``ringbuf.wake_at``), so we sleep through the
        timeout unless a batch is there (no periodic look at the fill level: one every
        25 ms cost ~3 ms/s of CPU on an idle node here). Batches are what
        keep the cost per request low: a long timeout makes big batches at low rates and the
        wakeups bound them at high rates, before the ring runs out (a full ring's losses are
        counted as drops)."""
        if self._ring.filled() < self._ring.size // 2:
            self._ring.wait(timeout_ms / 1000)
        self.consume()
        self._close_gates_when_learned()

    def consume(self) -> None:
        self._unread[0] = self._unread_zero  # before the read: what comes after wakes us
        self._ring.forget_wakeups()  # (two CPUs may both have woken us, or records came on)
        spans = self._ring.read()
        if len(spans):
            self._on_batch(spans)

    def drain_pending(self) -> np.ndarray:
        """Requests whose response is written but that no later request or close emitted
        yet, and the unparsed bytes of connections still open (SMP_SPAN_UNPARSED records,
        their counts then zeroed so a next window starts afresh), read from the connection
        table (flag DRAINED)."""
        rows = []
        size = self.dtype.itemsize
        conns = self._bpf["smp_conns"]
        now = time.monotonic_ns()
        unparsed: list[tuple[int, int, int, int, int]] = []
        for key, c in conns.items():
            if c.upid not in self._targets:
                continue
            if c.role == ROLE_DS and c.phase == PHASE_RESPONSE:
                rows.append(ctypes.string_at(ctypes.addressof(c.span), size))
            if c.unparsed_rx or c.unparsed_tx:
                unparsed.append((c.upid, c.role, c.fd, c.unparsed_rx, c.unparsed_tx))
                c.unparsed_rx = c.unparsed_tx = 0
                with contextlib.suppress(KeyError):
                    conns[key] = c
        spans: Any = np.frombuffer(b"".join(rows), dtype=self.dtype).copy()
        if unparsed:
            extra = np.zeros(len(unparsed), dtype=self.dtype)
            for i, (upid, role, fd, rx, tx) in enumerate(unparsed):
                extra[i]["kind"] = KIND_UNPARSED
                extra[i]["tgid"] = upid
                extra[i]["ds_rx_beg"] = now
                extra[i]["ds_fd"] = -1 if role == ROLE_US else fd
                extra[i]["us_fd"] = fd if role == ROLE_US else -1
                extra[i]["req_bytes"] = min(rx, 0xFFFFFFFF)
                extra[i]["resp_bytes"] = min(tx, 0xFFFFFFFF)
            spans = np.concatenate([spans, extra])
        spans["flags"] |= F_DRAINED
        out: np.ndarray = spans
        return out

    def proc_stats(self, pid: int) -> dict[str, int]:
        procs = self._bpf["smp_proc"]
        try:
            s = procs[procs.Key(pid)]
        except KeyError:
            return dict.fromkeys(PROC_STATS, 0)
        return {name: int(getattr(s, name)) for name in PROC_STATS}

    def statuses(self, pid: int) -> dict[str, Any]:
        """The HTTP/2 response statuses the probe decoded in the kernel for ``pid``
        (sidecar.c, "statuses (HPACK)"): ``{"http": {code: n}, "grpc": {code: n},
        "unknown": n}``, codes as strings, as a JSON document keeps them."""
        return self.status_tables()[0].get(pid) or {"http": {}, "grpc": {}, "unknown": 0}

    def status_tables(self) -> tuple[dict[int, dict[str, Any]], dict[int, dict[int, int]]]:
        """One walk of the kernel's status table (the daemon reads it for all its targets at
        each snapshot): per process, its HTTP/2 ``statuses``, and ``{code: n}`` of its HTTP/1.1
        local replies (responses a proxy wrote with no upstream answer: no span carries them;
        code 0: digits not read)."""
        h2: dict[int, dict[str, Any]] = {}
        local: dict[int, dict[int, int]] = {}
        for k, v in self._bpf["smp_h2_status"].items():
            upid, code, n = int(k.upid), int(k.code), int(v.value)
            if k.kind == _ST_LOCAL_H1:
                codes = local.setdefault(upid, {})
                codes[code] = codes.get(code, 0) + n
                continue
            doc = h2.setdefault(upid, {"http": {}, "grpc": {}, "unknown": 0})
            if k.kind == _ST_UNKNOWN:
                doc["unknown"] += n
            elif k.kind in _ST_KINDS:
                bucket = doc[_ST_KINDS[k.kind]]
                bucket[str(code)] = bucket.get(str(code), 0) + n
        for doc in h2.values():
            for name in ("http", "grpc"):
                doc[name] = dict(sorted(doc[name].items(), key=lambda kv: int(kv[0])))
        return h2, local

    def drops(self) -> int:
        """Spans lost: ring-buffer reservations that failed (the ring was full)."""
        return loader.drops(self._bpf) + self._ring.discarded

    MAPS = (
        "smp_filter_pids",
        "smp_drops",
        "smp_proc",
        "smp_conns",
        "smp_rid_index",
        "smp_thread_fifo",
        "smp_seed",
        "smp_sockfd",
        "smp_ns",
        "smp_ns_pending",
        "smp_learning",
        "smp_args_map",
        "smp_fifo_init",
        "smp_scratch",
        "smp_conn_init",
        "smp_h2_streams",
        "smp_h2_handles",
        "smp_h2_conns",
        "smp_h2_stream_init",
        "smp_h2_scratch",
        "smp_ans_queue",
        "smp_ans_entries",
        "smp_ans_init",
        "smp_ans_out",
        "smp_tls_last",
        "smp_tls_init",
        "smp_h2_status",
        "smp_hp_parts",
        "smp_rb_unread",
        "smp_listeners",
    )

    def map_bytes(self) -> Iterator[tuple[str, bytes]]:
        """Every value held in the probe's maps, as raw bytes: for audits that no payload
        (an Authorization header, a cookie) is kept in the kernel."""
        for name in self.MAPS:
            table = self._bpf[name]
            for _key, value in table.items():
                values = value if isinstance(value, list) else [value]
                for v in values:
                    if isinstance(v, ctypes.Structure | ctypes.Array):
                        yield name, ctypes.string_at(ctypes.addressof(v), ctypes.sizeof(v))
                    else:
                        yield name, bytes(v)

    def conns_in_use(self) -> int:
        return len(self._bpf["smp_conns"])

    def verified_insns(self) -> dict[str, int]:
        """Program name -> instructions the kernel's verifier processed to load it (its
        budget is ``loader.VERIFIER_INSN_LIMIT`` a program)."""
        return loader.verified_insns(self._bpf)

    def close(self) -> None:
        self._ring.close()
        loader.release(self._bpf)


def _loopback_exchange(payload: bytes) -> None:
    """One TCP connection over loopback: ``payload`` written one way, read the other."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as lst:
        lst.bind(("127.0.0.1", 0))
        lst.listen(1)
        with socket.create_connection(lst.getsockname(), timeout=2) as c:
            s, _ = lst.accept()
            with s:
                c.sendall(payload)
                got = 0
                while got < len(payload):
                    chunk = s.recv(len(payload))
                    if not chunk:
                        break
                    got += len(chunk)
                s.sendall(payload[:got])
                c.recv(len(payload))


def _pid_ns(pid: int) -> int:
    """The inode of ``pid``'s PID namespace (0 when unreadable)."""
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return 0


def _pid_ns_dev_ino(pid: int) -> tuple[int, int] | None:
    """(dev as the kernel encodes it, inode) of ``pid``'s PID namespace: what
    bpf_get_ns_current_pid_tgid compares (the kernel's dev_t is major << 20 | minor)."""
    try:
        st = os.stat(f"/proc/{pid}/ns/pid")
    except OSError:
        return None
    return (os.major(st.st_dev) << 20) | os.minor(st.st_dev), st.st_ino


def _ns_tgid(pid: int) -> int | None:
    """``pid``'s tgid in its own (innermost) PID namespace: the last NStgid value."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("NStgid:"):
                    return int(line.split()[-1])
    except OSError:
        return None
    return None
