"""Network namespaces, veth pairs and the host bridge, through ``ip``; sockets inside a netns."""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import threading
from pathlib import Path

from profiler.errors import TestbedError

NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000


def run(argv: list[str], input_text: str | None = None, check: bool = True) -> str:
    """Run a tool; a failure becomes a TestbedError naming the command and its stderr."""
    try:
        r = subprocess.run(argv, input=input_text, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise TestbedError(f"{argv[0]} is not installed (make setup)") from None
    except subprocess.TimeoutExpired:
        raise TestbedError(f"'{' '.join(argv)}' timed out") from None
    if check and r.returncode != 0:
        err = (r.stderr.strip().splitlines() or ["exit code " + str(r.returncode)])[-1]
        raise TestbedError(f"'{' '.join(argv[:6])}' failed: {err}")
    return r.stdout


def netns_exists(ns: str) -> bool:
    return (NETNS_DIR / ns).exists()


def link_exists(dev: str) -> bool:
    return Path("/sys/class/net", dev).exists()


def list_netns() -> list[str]:
    return sorted(p.name for p in NETNS_DIR.iterdir()) if NETNS_DIR.is_dir() else []


def host_addresses() -> list[tuple[str, str]]:
    """(interface, address/prefix) of every IPv4 address on the host."""
    out = run(["ip", "-o", "-4", "addr", "show"], check=False)
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] == "inet":
            rows.append((parts[1], parts[3]))
    return rows


def create_bridge(bridge: str, address: str) -> None:
    run(["ip", "link", "add", bridge, "type", "bridge"])
    run(["ip", "addr", "add", address, "dev", bridge])
    run(["ip", "link", "set", bridge, "up"])


def create_pod_netns(ns: str, bridge: str, veth_host: str, veth_peer: str, address: str) -> None:
    """A netns with lo up and eth0 (a veth whose other end is on the bridge)."""
    run(["ip", "netns", "add", ns])
    run(["ip", "link", "add", veth_host, "type", "veth", "peer", "name", veth_peer])
    run(["ip", "link", "set", veth_host, "master", bridge, "up"])
    run(["ip", "link", "set", veth_peer, "netns", ns])
    inside = ["ip", "-n", ns]
    run([*inside, "link", "set", veth_peer, "name", "eth0"])
    run([*inside, "addr", "add", address, "dev", "eth0"])
    run([*inside, "link", "set", "eth0", "up"])
    run([*inside, "link", "set", "lo", "up"])


def delete_netns(ns: str) -> bool:
    if not netns_exists(ns):
        return False
    run(["ip", "netns", "delete", ns], check=False)
    return True


def delete_link(dev: str) -> bool:
    if not link_exists(dev):
        return False
    run(["ip", "link", "delete", dev], check=False)
    return True


def netns_pids(ns: str) -> list[int]:
    if not netns_exists(ns):
        return []
    out = run(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def exec_prefix(ns: str) -> list[str]:
    """Prefix that runs a command in the pod's network namespace (same mount namespace)."""
    return ["nsenter", f"--net={NETNS_DIR / ns}", "--"]


def socket_in(ns: str, family: int = socket.AF_INET) -> socket.socket:
    """A TCP socket created inside ``ns`` (setns in a throwaway thread; the socket keeps it)."""
    result: list[socket.socket | BaseException] = []

    def work() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(NETNS_DIR / ns, os.O_RDONLY)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            result.append(socket.socket(family, socket.SOCK_STREAM))
        except BaseException as e:
            result.append(e)

    t = threading.Thread(target=work, name=f"setns-{ns}")
    t.start()
    t.join()
    if isinstance(result[0], BaseException):
        raise TestbedError(f"cannot open a socket in netns {ns}: {result[0]}")
    return result[0]


def http_get(ns: str, host: str, port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """One HTTP/1.1 GET from inside ``ns``: (status, body). OSError when unreachable."""
    import http.client

    sock = socket_in(ns)
    sock.settimeout(timeout)
    try:
        sock.connect((host, port))
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.sock = sock
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        sock.close()
