"""A traced process's socket bytes (``rx_bytes``/``tx_bytes`` of ``struct smp_proc_stats``)
are exactly its socket bytes on both probe paths: the sock path sees sockets only, the
syscalls path sees every fd and must tell sockets from files and pipes (``smp_sockfd``).
Before: the syscalls path counted only connections with an entry, so an app's non-HTTP
bytes (and its outbound connections) counted 0 there, and 100+ on the sock path."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from profiler.probes.sidecar import SidecarProbe

pytestmark = [pytest.mark.bpf]

# The traced "app": sockets of every origin (accepted, connected, a socketpair open before the
# probe attached) with non-HTTP bytes, and file and pipe I/O that are not socket bytes.
_APP = r"""
import os, socket, sys, tempfile
upstream_port = int(sys.argv[1])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0)); srv.listen(1)
a, b = socket.socketpair()                     # open before the probe attaches
print(srv.getsockname()[1], flush=True)
sys.stdin.readline()                           # attached
with tempfile.TemporaryFile() as f:            # a file: 1000 out, 1000 in, not socket bytes
    os.write(f.fileno(), b"f" * 1000); os.lseek(f.fileno(), 0, 0); os.read(f.fileno(), 4096)
r, w = os.pipe()                               # a pipe: 500 each way, not socket bytes
os.write(w, b"p" * 500); os.read(r, 4096)
up = socket.create_connection(("127.0.0.1", upstream_port))  # connected: tx 300, rx 30
up.sendall(b"u" * 300)
got = b""
while len(got) < 30:
    got += up.recv(4096)
c, _ = srv.accept()                            # accepted: rx 200, tx 200
got = b""
while len(got) < 200:
    got += c.recv(4096)
c.sendall(got)
a.sendall(b"s" * 70)                           # the socketpair: tx 70, rx 70
got = b""
while len(got) < 70:
    got += b.recv(4096)
print("done", flush=True)
sys.stdin.readline()
"""
RX, TX = 30 + 200 + 70, 300 + 200 + 70


def test_app_socket_bytes_are_counted_files_and_pipes_are_not() -> None:
    upstream = socket.socket()
    upstream.bind(("127.0.0.1", 0))
    upstream.listen(1)
    app = subprocess.Popen(
        [sys.executable, "-c", _APP, str(upstream.getsockname()[1])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    probe = SidecarProbe(lambda batch: None)
    try:
        # the path the feature probe picks; CI runs this file again with the fallback forced
        assert probe.path == (os.environ.get("SMP_PROBE_PATH") or "sock")
        assert app.stdout and app.stdin
        port = int(app.stdout.readline())
        probe.add_target(app.pid, "app")
        app.stdin.write("go\n")
        app.stdin.flush()
        u, _ = upstream.accept()
        got = b""
        while len(got) < 300:
            got += u.recv(4096)
        u.sendall(b"r" * 30)
        with socket.create_connection(("127.0.0.1", port)) as d:
            d.sendall(b"d" * 200)
            echo = b""
            while len(echo) < 200:
                echo += d.recv(4096)
            assert app.stdout.readline().strip() == "done"
        deadline = time.monotonic() + 5
        while probe.proc_stats(app.pid)["tx_bytes"] < TX and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)  # nothing more may come in
        stats = probe.proc_stats(app.pid)
        assert (stats["rx_bytes"], stats["tx_bytes"]) == (RX, TX)
        # none of it was a request: all of it counted as unparsed, never silent
        assert stats["unparsed_bytes"] == RX + TX
        u.close()
    finally:
        probe.close()
        app.kill()
        app.wait()
        upstream.close()
