"""A released probe handed out again (``loader.REUSE``, on for the integration tests so
that they do not compile and verify the same build ~100 times): it must come back as a new
load has it, every map empty and its ring read to the end, detached while it waits, and
attached and tracing once taken. A map the emptying missed would carry one test's
connections, requests or counts into the next one's probe."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from profiler.probes import loader
from profiler.probes.sidecar import SidecarProbe, request_ids

pytestmark = pytest.mark.bpf


RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


def _request(rid: str) -> bytes:
    return f"GET / HTTP/1.1\r\nhost: x\r\nx-request-id: {rid}\r\n\r\n".encode()


def _exchange(rid: str) -> None:
    """An HTTP/1.1 request and its response over loopback, both ends in this process."""
    with socket.socket() as lst:
        lst.bind(("127.0.0.1", 0))
        lst.listen(1)
        with socket.create_connection(lst.getsockname(), timeout=2) as c:
            s, _ = lst.accept()
            with s:
                req = _request(rid)
                c.sendall(req)
                assert s.recv(4096) == req
                s.sendall(RESPONSE)
                assert c.recv(4096) == RESPONSE


def _set(value: Any) -> bool:
    """Not all zeroes (ctypes gives a plain int for an integer element of a batch)."""
    return bool(value) if isinstance(value, int) else any(bytes(value))


def _dirty(bpf: Any) -> dict[str, int]:
    """Map name -> entries that are not as a new load has them (hash entries, array slots
    not all zero, ring bytes unread); program arrays are left out (they keep their
    programs)."""
    from bcc import table as bt  # here: a node without BCC skips with its reason (conftest)

    out = {}
    for raw in loader.table_names(bpf):
        name = raw.decode()
        t = bpf[raw]
        if isinstance(t, bt.ProgArray):
            continue
        if isinstance(t, bt.RingBuf):
            from profiler.probes.ringbuf import RingReader

            ring = RingReader(t.map_fd, int(t.max_entries) // 4096, np.dtype("u1"))
            n = ring.filled()
            ring.close()
        elif isinstance(t, bt.PerCpuArray):
            n = sum(_set(t[t.Key(i)]) for i in range(t.max_entries))
        elif isinstance(t, bt.ArrayBase):
            n = sum(_set(v) for _, v in t.items_lookup_batch())
        else:
            n = len(list(t.keys()))
        if n:
            out[name] = n
    return out


@pytest.fixture
def reuse(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(loader.REUSE, "on", True)
    yield


def test_a_released_probe_comes_back_empty_detached_and_then_traces(reuse: None) -> None:
    got: list[np.ndarray] = []
    first = SidecarProbe(got.append, ringbuf_pages=16)
    bpf = first._bpf  # type: ignore[attr-defined]
    attached = (set(bpf.raw_tracepoint_fds), set(bpf.tracepoint_fds))
    assert any(attached)
    first.add_target(os.getpid(), "proxy")
    for i in range(3):
        _exchange(f"reuse-{i}")
    dirty = _dirty(bpf)  # what the emptying has to undo: else this test proves nothing
    assert {"smp_filter_pids", "smp_proc", "smp_listeners", "smp_pid_gate"} <= dirty.keys(), dirty
    first.close()
    first.close()  # twice: kept once (two probes must never share one object)
    assert sum(kept is bpf for kept in loader._pool[bpf.smp_build_key]) == 1
    assert not bpf.raw_tracepoint_fds and not bpf.tracepoint_fds  # detached while kept
    assert _dirty(bpf) == {}

    second = SidecarProbe(got.append, ringbuf_pages=16, self_test=False)
    try:
        assert second._bpf is bpf  # type: ignore[attr-defined]
        assert (set(bpf.raw_tracepoint_fds), set(bpf.tracepoint_fds)) == attached
        assert _dirty(bpf) == {}
        got.clear()
        second.add_target(os.getpid(), "proxy")
        _exchange("after-reuse")
        # attached, and counting from zero: both ends are this process, so each way moved
        # the request and the response once (a kept count, or a detached probe, differs)
        stats = second.proc_stats(os.getpid())
        moved = len(_request("after-reuse")) + len(RESPONSE)
        assert (stats["rx_bytes"], stats["tx_bytes"]) == (moved, moved), stats
        second.consume()
        ids = request_ids(np.concatenate([*got, second.drain_pending()]))
        assert not any(i.startswith("reuse-") for i in ids), ids
    finally:
        second.close()


def test_other_builds_and_reuse_off_load_anew(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(loader.REUSE, "on", True)
    a = SidecarProbe(lambda b: None, ringbuf_pages=16, self_test=False)
    kept = a._bpf  # type: ignore[attr-defined]
    a.close()
    b = SidecarProbe(lambda b: None, ringbuf_pages=32, self_test=False)  # another build
    try:
        assert b._bpf is not kept  # type: ignore[attr-defined]
    finally:
        b.close()
    monkeypatch.setitem(loader.REUSE, "on", False)
    c = SidecarProbe(lambda b: None, ringbuf_pages=16, self_test=False)
    try:
        assert c._bpf is not kept  # type: ignore[attr-defined]
    finally:
        c.close()
