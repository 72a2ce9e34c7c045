"""Pods coming and going on a node that is a container (kind, k3d): every container has its
own PID namespace, so the probe's per-namespace learning slots (``SMP_MAX_NS``, 4) must be
reused once a namespace's targets are learned, or the agent stops tracing new pods after the
second meshed pod (before: the fifth namespace raised "more than 4 PID namespaces")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.bpf]
ROOT = Path(__file__).resolve().parents[2]
PODS = 7  # namespaces, one after the other: more than SMP_MAX_NS

# Run as PID 1 of a child namespace (the node). For each "container": a loopback echo server
# as PID 1 of its own namespace below, traced by the PID seen here, one exchange of
# 100 + i bytes; all stay attached and alive (distinct namespaces) until the end.
_DRIVER = r"""
import json, os, socket, subprocess, sys, time
from profiler.probes.sidecar import SidecarProbe

SERVER = '''
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(1)
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
data = c.recv(65536)
c.sendall(data); c.recv(1)
import time; time.sleep(60)  # the namespace lives on: its inode is not reused
'''
probe = SidecarProbe(lambda batch: None)
out, servers = [], []
for i in range(int(sys.argv[1])):
    argv = ["unshare", "--pid", "--fork", "--kill-child", sys.executable, "-c", SERVER]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    port = int(p.stdout.readline())
    (pid,) = [int(x) for x in open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()]
    ns = os.stat(f"/proc/{pid}/ns/pid").st_ino
    probe.add_target(pid, "app")
    payload = b"x" * (100 + i)
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.sendall(payload)
        got = b""
        while len(got) < len(payload):
            got += c.recv(65536)
        deadline = time.monotonic() + 5
        while probe.proc_stats(pid)["rx_bytes"] < len(payload) and time.monotonic() < deadline:
            time.sleep(0.02)
        stats = probe.proc_stats(pid)
    servers.append((p, pid))
    out.append({"pid": pid, "ns": ns, "sent": len(payload), "rx": stats["rx_bytes"],
                "tx": stats["tx_bytes"]})
for p, pid in servers:  # still attached, all of them: learned ones need no slot
    probe.remove_target(pid)
    p.kill(); p.wait()
probe.close()
print(json.dumps({"me": os.getpid(), "pods": out}))
"""


def test_learning_slots_are_reused_as_pods_come_and_go() -> None:
    r = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", _DRIVER, str(PODS)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout.splitlines()[-1])
    assert doc["me"] == 1  # the profiler is in a child namespace: the learning path
    pods = doc["pods"]
    assert len({p["ns"] for p in pods}) == PODS  # every one its own namespace
    # each counted exactly its own bytes: no slot left pointing at an old namespace
    assert [(p["rx"], p["tx"]) for p in pods] == [(p["sent"], p["sent"]) for p in pods]
