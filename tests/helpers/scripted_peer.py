"""A proxy (or app) whose every socket call is scripted, for the sidecar probe's state-machine
tests: the test drives it one step at a time over stdin/stdout, so the calls the probe sees
(which syscall, how many bytes, in which order, with which gaps) are known exactly.

    python tests/helpers/scripted_peer.py      -> prints {"port": P} (its listening port)

then one JSON command per line on stdin, one JSON answer per line on stdout:

    {"op": "accept", "conn": "ds"}                     a downstream connection
    {"op": "connect", "port": P, "conn": "us"}         an upstream connection
    (connection names are free: "ds", "ds2", "us", "us2" ...)
    {"op": "read", "conn": "ds"|"us", "call": C, "n": 65536, "nonblock": false}
        C: read | readv | recv | recvfrom | recvmsg; answer {"n": bytes} or {"eagain": true};
        what was read is kept (per connection) for a later "forward"
    {"op": "write", "conn": "ds"|"us", "call": C, "data": "forward" | "<text>",
     "parts": 1, "gap_ms": 0}                          ("hex": "<bytes in hex>" for data)
        C: write | writev | send | sendto | sendmsg; "forward" writes what was read on
        connection "src" (default: "us" for "ds", "ds" for "us") since its last forward;
        "parts" > 1 splits it into that many calls, "gap_ms" apart
    {"op": "close", "conn": "ds"|"us"}
    {"op": "exit"}
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time


def _read(s: socket.socket, call: str, n: int) -> bytes:
    fd = s.fileno()
    if call == "read":
        return os.read(fd, n)
    if call == "readv":
        buf = bytearray(n)
        got = os.readv(fd, [buf])
        return bytes(buf[:got])
    if call == "recv":
        return s.recv(n)
    if call == "recvfrom":
        return s.recvfrom(n)[0]
    if call == "recvmsg":
        return s.recvmsg(n)[0]
    raise ValueError(call)


def _write(s: socket.socket, call: str, data: bytes) -> int:
    fd = s.fileno()
    if call == "write":
        return os.write(fd, data)
    if call == "writev":
        half = len(data) // 2
        return os.writev(fd, [data[:half], data[half:]])
    if call == "send":
        return s.send(data)
    if call == "sendto":
        return s.sendto(data, 0, s.getpeername())
    if call == "sendmsg":
        return s.sendmsg([data])
    raise ValueError(call)


def main() -> int:
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(8)
    print(json.dumps({"port": lst.getsockname()[1], "pid": os.getpid()}), flush=True)
    conns: dict[str, socket.socket] = {}
    pending: dict[str, bytes] = {}  # read on a conn, not yet forwarded
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        answer: dict[str, object] = {"ok": True}
        if op == "accept":
            conns[cmd.get("conn", "ds")], _ = lst.accept()
        elif op == "connect":
            conns[cmd.get("conn", "us")] = socket.create_connection(("127.0.0.1", cmd["port"]))
        elif op == "read":
            s = conns[cmd["conn"]]
            s.setblocking(not cmd.get("nonblock", False))
            try:
                data = _read(s, cmd.get("call", "recv"), cmd.get("n", 65536))
            except BlockingIOError:
                answer["eagain"] = True
            else:
                pending[cmd["conn"]] = pending.get(cmd["conn"], b"") + data
                answer["n"] = len(data)
            s.setblocking(True)
        elif op == "write":
            s = conns[cmd["conn"]]
            other = cmd.get("src") or ("us" if cmd["conn"] == "ds" else "ds")
            if "hex" in cmd:
                data = bytes.fromhex(cmd["hex"])
            elif cmd["data"] == "forward":
                data, pending[other] = pending.get(other, b""), b""
            else:
                data = cmd["data"].encode()
            parts = max(int(cmd.get("parts", 1)), 1)
            step = -(-len(data) // parts)
            sent = 0
            for i in range(parts):
                chunk = data[i * step : (i + 1) * step]
                if i and cmd.get("gap_ms"):
                    time.sleep(cmd["gap_ms"] / 1000)
                while chunk:
                    k = _write(s, cmd.get("call", "send"), chunk)
                    sent += k
                    chunk = chunk[k:]
            answer["n"] = sent
        elif op == "close":
            conns.pop(cmd["conn"]).close()
        elif op == "exit":
            break
        print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
