"""Which mesh a pod belongs to, and in what role, from the evidence its manifest carries.

A pod is only a *sidecar* pod when its mesh injected a per-pod proxy next to an app: Istio's
``sidecar.istio.io/status``, Linkerd's ``linkerd.io/proxy-version``, Consul's
``consul.hashicorp.com/connect-inject-status: injected``, Kuma's ``kuma.io/sidecar-injected``.
Istio runs the same ``istio-proxy`` container (pilot-agent) in other roles that are not
sidecars and must not be measured as one: ingress/egress gateways (``proxy router``),
waypoints (``proxy waypoint``) and ztunnel (a per-node proxy, ``proxy ztunnel``). A pod in
Istio's ambient mode has no sidecar at all (ztunnel and waypoints carry its traffic): it is
reported as unsupported, with the reason, never traced as if it had one.

The mesh type is only what the evidence says (SMP's names: ISTIO, LINKERD, CONSUL, KUMA);
a container counted as a sidecar only by ``--sidecar-names`` (a bare Envoy) has none (``""``).
Pure functions on ``V1Pod``-shaped objects (the kubernetes client's models).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

PodRole = Literal["sidecar", "gateway", "waypoint", "ztunnel", "ambient", "none"]

ISTIO_STATUS = "sidecar.istio.io/status"
LINKERD_VERSION = "linkerd.io/proxy-version"
CONSUL_INJECTED = "consul.hashicorp.com/connect-inject-status"
KUMA_INJECTED = "kuma.io/sidecar-injected"
KUMA_GATEWAY = "kuma.io/gateway"
AMBIENT_REDIRECTION = "ambient.istio.io/redirection"
DATAPLANE_MODE = "istio.io/dataplane-mode"

# the sidecar container each mesh's injector adds
SIDECAR_CONTAINER = {
    "ISTIO": "istio-proxy",
    "LINKERD": "linkerd-proxy",
    "CONSUL": "consul-dataplane",
    "KUMA": "kuma-sidecar",
}
# Consul before 1.14 (consul-k8s < 1.0) ran Envoy in a container of its own
_CONSUL_LEGACY = "envoy-sidecar"
# pilot-agent's second argument: the role of the Envoy it starts
_PILOT_ROLES: dict[str, PodRole] = {
    "sidecar": "sidecar",
    "router": "gateway",
    "waypoint": "waypoint",
    "ztunnel": "ztunnel",
}
_ISTIO_GATEWAY_LABELS = ("ingressgateway", "egressgateway", "eastwestgateway")
_CONSUL_GATEWAYS = ("mesh-gateway", "ingress-gateway", "terminating-gateway", "api-gateway")


@dataclass(frozen=True)
class PodMesh:
    """What a pod is to the mesh: ``role``, the ``mesh`` (SMP type name, ``""`` unknown), the
    container names that are its sidecars and, when it is not traced, why."""

    role: PodRole
    mesh: str
    sidecars: frozenset[str]
    reason: str = ""


def _containers(spec: Any) -> list[Any]:
    if spec is None:
        return []
    native = [
        c
        for c in (getattr(spec, "init_containers", None) or [])
        if getattr(c, "restart_policy", None) == "Always"  # native sidecars keep running
    ]
    return [*(getattr(spec, "containers", None) or []), *native]


def _pilot_role(container: Any) -> PodRole | None:
    """The role pilot-agent gives Envoy (``proxy sidecar|router|waypoint|ztunnel``)."""
    args: Sequence[str] = getattr(container, "args", None) or []
    for i, a in enumerate(args[:-1]):
        if a == "proxy":
            return _PILOT_ROLES.get(args[i + 1])
    return None


def _istio_status(annotations: Mapping[str, str]) -> set[str]:
    try:
        doc = json.loads(annotations[ISTIO_STATUS])
        return {n for n in (doc.get("containers") or []) if isinstance(n, str)}
    except (ValueError, AttributeError, TypeError):
        return set()


def classify(pod: Any, sidecar_names: Sequence[str] = ()) -> PodMesh:
    """The pod's role and mesh. ``sidecar_names`` are extra container names to count as
    sidecars (``--sidecar-names``), with no mesh unless the annotations name one."""
    meta, spec = pod.metadata, pod.spec
    labels: Mapping[str, str] = meta.labels or {}
    ann: Mapping[str, str] = meta.annotations or {}
    containers = _containers(spec)
    by_name = {c.name: c for c in containers}
    status = getattr(pod, "status", None)
    names = set(by_name) | {
        s.name for s in (getattr(status, "container_statuses", None) or []) if s is not None
    }

    # Istio's non-sidecar proxies first: they run the sidecar's container name
    if labels.get("app") == "ztunnel" or (
        "istio-proxy" in by_name and _pilot_role(by_name["istio-proxy"]) == "ztunnel"
    ):
        return PodMesh("ztunnel", "ISTIO", frozenset(), "ztunnel: Istio's per-node proxy")
    gateway_class = labels.get("gateway.networking.k8s.io/gateway-class-name", "")
    role = _pilot_role(by_name["istio-proxy"]) if "istio-proxy" in by_name else None
    if role == "waypoint" or gateway_class == "istio-waypoint":
        return PodMesh("waypoint", "ISTIO", frozenset(), "waypoint: Istio ambient's L7 proxy")
    if (
        role == "gateway"
        or labels.get("istio") in _ISTIO_GATEWAY_LABELS
        or (gateway_class and "gateway.istio.io/managed" in labels)
    ):
        return PodMesh("gateway", "ISTIO", frozenset(), "gateway: a mesh edge proxy")
    if labels.get("component") in _CONSUL_GATEWAYS and "consul.hashicorp.com/" in " ".join(ann):
        return PodMesh("gateway", "CONSUL", frozenset(), "gateway: a mesh edge proxy")
    if ann.get(KUMA_GATEWAY) == "enabled":
        return PodMesh("gateway", "KUMA", frozenset(), "gateway: a mesh edge proxy")

    found: dict[str, set[str]] = {}
    if ISTIO_STATUS in ann:
        found["ISTIO"] = (_istio_status(ann) | {"istio-proxy"}) & names
    if LINKERD_VERSION in ann:
        found["LINKERD"] = {"linkerd-proxy"} & names
    if ann.get(CONSUL_INJECTED) == "injected":
        found["CONSUL"] = {"consul-dataplane", _CONSUL_LEGACY} & names
    if ann.get(KUMA_INJECTED) == "true":
        found["KUMA"] = {"kuma-sidecar"} & names
    found = {m: c for m, c in found.items() if c}
    extra = set(sidecar_names) & names - {c for cs in found.values() for c in cs}
    if found or extra:
        mesh = next(iter(found)) if len(found) == 1 else ""
        sidecars = frozenset(extra.union(*found.values()))
        return PodMesh("sidecar", mesh, sidecars)
    if ann.get(AMBIENT_REDIRECTION) == "enabled" or labels.get(DATAPLANE_MODE) == "ambient":
        return PodMesh(
            "ambient",
            "ISTIO",
            frozenset(),
            "ambient: no sidecar (ztunnel and waypoints carry the traffic); not measured",
        )
    return PodMesh("none", "", frozenset())
