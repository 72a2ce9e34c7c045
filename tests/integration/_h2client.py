"""An HTTP/2 (prior knowledge) client for the tests: ``python _h2client.py HOST PORT CONNS N``.

Opens CONNS connections, makes 2 requests on each, prints ``warm``, waits for a line on
stdin, then makes N more per connection (up to 8 at a time), each with x-request-id
``p<local port>-s<stream id>``, and prints ``done <json>``.
"""

from __future__ import annotations

import json
import selectors
import socket
import sys

import h2.config
import h2.connection
import h2.events


def main() -> int:
    host, port, conns, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    sel = selectors.DefaultSelector()
    state = []
    for _ in range(conns):
        s = socket.create_connection((host, port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        h = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        h.initiate_connection()
        s.sendall(h.data_to_send())
        c = {"sock": s, "h2": h, "inflight": 0, "todo": 0, "port": s.getsockname()[1]}
        sel.register(s, selectors.EVENT_READ, c)
        state.append(c)
    statuses: dict[str, int] = {}

    def start(c: dict) -> None:  # type: ignore[type-arg]
        while c["inflight"] < 8 and c["todo"] > 0:
            sid = c["h2"].get_next_available_stream_id()
            headers = [(":method", "GET"), (":path", "/"), (":scheme", "http"),
                       (":authority", f"{host}:{port}"),
                       ("x-request-id", f"p{c['port']}-s{sid}")]  # fmt: skip
            c["h2"].send_headers(sid, headers, end_stream=True)
            c["inflight"] += 1
            c["todo"] -= 1
        c["sock"].sendall(c["h2"].data_to_send())

    def run(per_conn: int) -> None:
        for c in state:
            c["todo"] = per_conn
            start(c)
        while any(c["inflight"] or c["todo"] for c in state):
            for key, _ in sel.select(10):
                c = key.data
                data = c["sock"].recv(65536)
                if not data:
                    raise SystemExit("connection closed")
                for ev in c["h2"].receive_data(data):
                    if isinstance(ev, h2.events.ResponseReceived):
                        st = dict(ev.headers).get(b":status", b"?").decode()
                        statuses[st] = statuses.get(st, 0) + 1
                    elif isinstance(ev, h2.events.DataReceived):
                        c["h2"].acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        c["inflight"] -= 1
                start(c)

    run(2)
    print("warm", flush=True)
    sys.stdin.readline()
    statuses.clear()
    run(n)
    print("done " + json.dumps({"statuses": statuses}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
