"""Write stamps (net:net_dev_queue): the probe takes a write's first packet longer than a bare
TCP header, in the writer's own context, and no shorter packet. Where the kernel has BTF the
hook is the raw tracepoint, which reads ``skb->len`` at the offset BTF gives
(``profiler/btf.py``): a wrong offset would take every packet or none, and the second test sees
either. The offset itself is checked packet by packet against the classic tracepoint's own
length field."""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Iterator

import pytest

from profiler import btf, capabilities
from profiler.probes.sidecar import SidecarProbe

pytestmark = pytest.mark.bpf
SIZES = (1, 60, 200, 1000, 3000)  # bytes per write: short packets, long ones, several packets

CHECK_LEN = r"""
BPF_ARRAY(counts, u64, 2);   /* [0]: lengths equal, [1]: different */
TRACEPOINT_PROBE(net, net_dev_queue)
{
    u32 len = 0;
    bpf_probe_read_kernel(&len, sizeof(len), (void *)((u64)args->skbaddr + SKB_LEN_OFF));
    int i = len == args->len ? 0 : 1;
    u64 *n = counts.lookup(&i);
    if (n)
        __sync_fetch_and_add(n, 1);
    return 0;
}
"""


@pytest.fixture()
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    srv = socket.create_server(("127.0.0.1", 0))
    cli = socket.create_connection(srv.getsockname())
    peer, _ = srv.accept()
    cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        yield cli, peer
    finally:
        for s in (cli, peer, srv):
            s.close()


def _send(cli: socket.socket, peer: socket.socket, size: int) -> None:
    cli.sendall(b"x" * size)
    got = 0
    while got < size:
        got += len(peer.recv(65536))


def test_btf_skb_len_offset_matches_the_tracepoints_own_length(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    off = btf.member_offset("sk_buff", "len")
    assert off is not None, "no skb->len in /sys/kernel/btf/vmlinux"
    bpf_class, detail = capabilities.import_bcc()
    assert bpf_class is not None, detail
    with capabilities.captured_stderr():
        b = bpf_class(text=CHECK_LEN, cflags=[f"-DSKB_LEN_OFF={off}"])
    try:
        for size in SIZES * 4:
            _send(*tcp_pair, size)
        counts = b["counts"]
        equal, different = (counts[ctypes.c_int(i)].value for i in (0, 1))
    finally:
        b.cleanup()
    assert equal >= len(SIZES) * 4  # every write's packets at least (other traffic adds)
    assert different == 0


def _slots(probe: SidecarProbe) -> list[tuple[int, int]]:
    """(thread id, stamp) of every CPU's write-stamp slots."""
    table = probe._bpf["smp_xmit"]  # type: ignore[attr-defined]
    return [(c.tid[i], c.ts[i]) for c in table[ctypes.c_int(0)] for i in range(len(c.tid))]


def _send_from_thread(cli: socket.socket, peer: socket.socket, size: int) -> int:
    """Send ``size`` bytes from a fresh thread (a thread id no slot holds yet); its id."""
    tid: list[int] = []

    def run() -> None:
        tid.append(threading.get_native_id())
        _send(cli, peer, size)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    return tid[0]


@pytest.mark.parametrize("hook", ["raw", "classic"])
def test_write_stamps_take_long_packets_and_skip_bare_headers(
    tcp_pair: tuple[socket.socket, socket.socket], hook: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both hooks: the raw tracepoint this kernel gets, and the classic one a kernel without
    BTF gets (no skb->len offset)."""
    if hook == "classic":
        monkeypatch.setattr(btf, "member_offset", lambda *a, **k: None)
    on, off, why = capabilities.xmit_stamps()
    assert on and (off is not None) == (hook == "raw"), why
    probe = SidecarProbe(lambda batch: None, ringbuf_pages=16)
    try:
        raw = b"net_dev_queue" in probe._bpf.raw_tracepoint_fds  # type: ignore[attr-defined]
        assert raw == (hook == "raw")
        # a process the probe does not trace: turned away by the PID gate, no slot taken
        untraced = _send_from_thread(*tcp_pair, 200)
        probe.add_target(os.getpid(), "app")
        # 1 byte: a 67-byte packet on the loopback (Ethernet, IP, TCP with timestamps), no
        # longer than a bare TCP header can be: never a write stamp
        short = _send_from_thread(*tcp_pair, 1)
        long_ = _send_from_thread(*tcp_pair, 200)
        slots = _slots(probe)
    finally:
        probe.close()
    tids = {tid for tid, _ in slots}
    assert untraced not in tids
    assert short not in tids
    assert long_ in tids  # its stamp itself was taken (zeroed) by its traced write
