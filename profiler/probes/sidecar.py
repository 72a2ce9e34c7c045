"""The sidecar probe (bpf/sidecar.c): one span per request through a proxy or app.

User space only tells the kernel which processes to trace and in which mode, seeds the roles
of connections that were open before the probe attached (needed when downstream bytes are
TLS), and takes the records in batches: every poll reads all new records of the ring buffer
as one numpy structured array (profiler/probes/ringbuf.py) whose dtype is the C struct smp_span
of bpf/sidecar.h as BCC decodes it (no second definition). See docs/probes/sidecar.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from profiler.probes import loader
from profiler.probes.ringbuf import RingReader

Mode = Literal["proxy", "app"]
_MODES: dict[Mode, int] = {"proxy": 1, "app": 2}
ROLE_DS, ROLE_US = 1, 2
KIND_PROXY, KIND_SERVER = 1, 2
F_DS_TLS, F_MATCH_RID, F_MATCH_THREAD, F_DRAINED = 0x1, 0x2, 0x4, 0x8
_RID_OK = re.compile(rb"^[A-Za-z0-9._:\-]+$")


def request_ids(spans: np.ndarray) -> list[str]:
    """The x-request-id of each span ('' when none, or not made of id characters)."""
    raw = np.ascontiguousarray(spans["rid"]).view(f"S{spans.dtype['rid'].shape[0]}")
    out = []
    for value, n in zip(raw.ravel().tolist(), spans["rid_len"].tolist(), strict=True):
        b = value[:n]
        out.append(b.decode() if b and _RID_OK.match(b) else "")
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


def _set_h2_walk(bpf: Any) -> None:
    """The HTTP/2 frame walk is a chain of tail calls of one program (smp_h2_step, one frame
    header each): BCC loads it on demand, user space puts it in the program array."""
    from bcc import BPF

    fn = bpf.load_func("smp_h2_step", BPF.TRACEPOINT)
    progs = bpf["smp_h2_progs"]
    progs[ctypes.c_int(0)] = ctypes.c_int(fn.fd)


class SidecarProbe:
    """The loaded probe. Not thread-safe: one owner polls it."""

    def __init__(
        self,
        on_batch: Callable[[np.ndarray], None],
        ringbuf_pages: int = 256,
        max_conns: int = 16384,
    ) -> None:
        self._bpf = loader.load(
            "sidecar",
            {"SMP_RINGBUF_PAGES": ringbuf_pages, "SMP_MAX_CONNS": max_conns}
            | ({"SMP_DEBUG_LOCAL": 1} if os.environ.get("SMP_DEBUG_LOCAL") else {}),
        )
        _set_h2_walk(self._bpf)
        self._on_batch = on_batch
        self._targets: dict[int, Mode] = {}
        # struct smp_span, from the connection table's value type (BCC builds it from C)
        span_type = dict(self._bpf["smp_conns"].Leaf._fields_)["span"]
        self.dtype = np.dtype(span_type)
        self._span_size = ctypes.sizeof(span_type)
        self._ring = RingReader(self._bpf["smp_spans"].map_fd, ringbuf_pages, self.dtype)

    # -- targets ------------------------------------------------------------------------
    def add_target(self, pid: int, mode: Mode) -> None:
        b = self._bpf
        procs = b["smp_proc"]
        procs[procs.Key(pid)] = procs.Leaf()
        if mode == "proxy":
            conns = b["smp_conns"]
            for fd, role in existing_connection_roles(pid).items():
                leaf = conns.Leaf()
                leaf.role = role
                conns[conns.Key((pid << 32) | fd)] = leaf
        filt = b["smp_filter_pids"]
        filt[filt.Key(pid)] = filt.Leaf(_MODES[mode])
        self._targets[pid] = mode

    def remove_target(self, pid: int) -> None:
        filt = self._bpf["smp_filter_pids"]
        with contextlib.suppress(KeyError):
            del filt[filt.Key(pid)]
        self._targets.pop(pid, None)
        # per-thread state of the detached process: its request order and saved arguments
        fifo = self._bpf["smp_thread_fifo"]
        for key in [k for k, v in fifo.items() if v.tgid == pid]:
            with contextlib.suppress(KeyError):
                del fifo[key]
        args = self._bpf["smp_args_map"]
        for key in [k for k in args if k.value >> 32 == pid]:
            with contextlib.suppress(KeyError):
                del args[key]
        conns = self._bpf["smp_conns"]
        for key in [k for k in conns if k.value >> 32 == pid]:
            with contextlib.suppress(KeyError):
                del conns[key]
        procs = self._bpf["smp_proc"]
        with contextlib.suppress(KeyError):
            del procs[procs.Key(pid)]

    @property
    def targets(self) -> dict[int, Mode]:
        return dict(self._targets)

    # -- data ---------------------------------------------------------------------------
    def poll(self, timeout_ms: int = 100) -> None:
        """Wait ``timeout_ms``, then take every record that arrived, as one batch. The
        kernel does not wake us per record (BPF_RB_NO_WAKEUP): batches are what keep the
        cost per request low, and the ring holds 100 ms of records at tens of thousands of
        requests per second (a full ring's losses are counted as drops)."""
        if timeout_ms > 0:
            time.sleep(timeout_ms / 1000)
        self.consume()

    def consume(self) -> None:
        spans = self._ring.read()
        if len(spans):
            self._on_batch(spans)

    def drain_pending(self) -> np.ndarray:
        """Requests whose response is written but that no later request or close emitted
        yet, read from the connection table (flag DRAINED)."""
        rows = []
        for key, c in self._bpf["smp_conns"].items():
            if c.role == ROLE_DS and c.phase == 2 and (key.value >> 32) in self._targets:
                rows.append(ctypes.string_at(ctypes.addressof(c.span), self._span_size))
        spans: Any = np.frombuffer(b"".join(rows), dtype=self.dtype).copy()
        spans["flags"] |= F_DRAINED
        out: np.ndarray = spans
        return out

    PROC_STATS = (
        "rx_bytes",
        "tx_bytes",
        "spans",
        "local_replies",
        "unparsed_rx",
        "unparsed_tx",
        "unparsed_conns",
        "h2_resets",
        "h2_desyncs",
        "stale_answers",
    )

    def proc_stats(self, pid: int) -> dict[str, int]:
        """The process's counters (struct smp_proc_stats): bytes, spans, local replies, and
        what no span explains (unparsed bytes and connections, HTTP/2 resets and desyncs)."""
        procs = self._bpf["smp_proc"]
        try:
            s = procs[procs.Key(pid)]
        except KeyError:
            return dict.fromkeys(self.PROC_STATS, 0)
        return {name: int(getattr(s, name)) for name in self.PROC_STATS}

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
        "smp_fifo_init",
        "smp_args_map",
        "smp_scratch",
        "smp_conn_init",
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

    def close(self) -> None:
        self._ring.close()
        self._bpf.cleanup()
