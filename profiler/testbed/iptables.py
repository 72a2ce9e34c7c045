"""Istio's traffic capture (istio-iptables), as an iptables-restore script for a pod netns.

Inbound TCP is redirected to Envoy's 15006, outbound TCP to 15001; Envoy's own traffic
(UID/GID 1337) returns untouched, and so does traffic to 127.0.0.1 (Envoy -> app).
The rules live in the pod's network namespace and vanish with it.
"""

from __future__ import annotations

from profiler.testbed.config import ENVOY_UID, INBOUND_PORT, OUTBOUND_PORT


def rules(inbound: bool, exclude_inbound_ports: tuple[int, ...] = ()) -> str:
    """The nat table: ISTIO_INBOUND (when ``inbound``), ISTIO_OUTPUT and their redirects."""
    u = ENVOY_UID
    out = ["*nat", ":ISTIO_INBOUND - [0:0]", ":ISTIO_IN_REDIRECT - [0:0]",
           ":ISTIO_OUTPUT - [0:0]", ":ISTIO_REDIRECT - [0:0]"]  # fmt: skip
    if inbound:
        out.append("-A PREROUTING -p tcp -j ISTIO_INBOUND")
        out += [f"-A ISTIO_INBOUND -p tcp --dport {p} -j RETURN" for p in exclude_inbound_ports]
        out.append("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT")
    out += [
        f"-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {INBOUND_PORT}",
        "-A OUTPUT -p tcp -j ISTIO_OUTPUT",
        "-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN",
        f"-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --uid-owner {u} -j ISTIO_IN_REDIRECT",
        f"-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner {u} -j RETURN",
        f"-A ISTIO_OUTPUT -m owner --uid-owner {u} -j RETURN",
        f"-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --gid-owner {u} -j ISTIO_IN_REDIRECT",
        f"-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner {u} -j RETURN",
        f"-A ISTIO_OUTPUT -m owner --gid-owner {u} -j RETURN",
        "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
        f"-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {OUTBOUND_PORT}",
        "COMMIT",
    ]
    return "\n".join(out) + "\n"
