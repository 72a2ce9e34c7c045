"""Which pods are sidecar pods, of which mesh: fixtures in the shapes the meshes' injectors
and charts really produce (Istio 1.2x sidecar, gateway chart, Gateway API deployment,
waypoint, ztunnel, ambient pod; Linkerd; Consul 1.14+ dataplane and mesh gateway; Kuma 2.x),
deserialised into the kubernetes client's own V1Pod."""

from __future__ import annotations

import json

import pytest
from kubernetes.client import ApiClient, V1Pod

from profiler.discovery.kubernetes import PodSet
from profiler.discovery.meshes import classify

ISTIO_STATUS = json.dumps(
    {
        "initContainers": ["istio-init"],
        "containers": ["istio-proxy"],
        "volumes": ["workload-socket", "istio-envoy", "istio-data", "istio-podinfo"],
        "imagePullSecrets": None,
        "revision": "default",
    }
)
GATEWAY_STATUS = json.dumps(
    {"initContainers": None, "containers": ["istio-proxy"], "revision": "default"}
)
CID = "containerd://" + "ab" * 32


def pod(
    containers: dict[str, list[str]],
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    init: dict[str, list[str]] | None = None,
    native: tuple[str, ...] = (),
    name: str = "p",
) -> V1Pod:
    """A running pod; ``containers`` maps names to their args."""
    init = init or {}
    statuses = [
        {
            "name": n,
            "containerID": CID,
            "image": n,
            "imageID": "",
            "ready": True,
            "restartCount": 0,
            "state": {"running": {"startedAt": "2026-12-02T00:00:00Z"}},
        }
        for n in [*containers, *native]
    ]
    doc = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "shop",
            "uid": f"uid-{name}",
            "labels": labels or {},
            "annotations": annotations or {},
        },
        "spec": {
            "nodeName": "node-a",
            "containers": [{"name": n, "args": a} for n, a in containers.items()],
            "initContainers": [
                {"name": n, "args": a, **({"restartPolicy": "Always"} if n in native else {})}
                for n, a in init.items()
            ],
        },
        "status": {
            "phase": "Running",
            "containerStatuses": [s for s in statuses if s["name"] in containers],
            "initContainerStatuses": [s for s in statuses if s["name"] in native],
        },
    }
    obj: V1Pod = ApiClient().deserialize(json.dumps(doc), "V1Pod", "application/json")
    return obj


SIDECAR_ARGS = ["proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local"]
ROUTER_ARGS = ["proxy", "router", "--domain", "$(POD_NAMESPACE).svc.cluster.local"]

PODS: dict[str, tuple[V1Pod, str, str, set[str]]] = {
    # name: (pod, role, mesh, sidecar containers)
    "istio sidecar": (
        pod(
            {"reviews": [], "istio-proxy": SIDECAR_ARGS},
            labels={"app": "reviews", "security.istio.io/tlsMode": "istio"},
            annotations={"sidecar.istio.io/status": ISTIO_STATUS},
            init={"istio-init": ["istio-iptables", "-p", "15001"]},
        ),
        "sidecar",
        "ISTIO",
        {"istio-proxy"},
    ),
    "istio native sidecar": (
        pod(
            {"reviews": []},
            annotations={"sidecar.istio.io/status": ISTIO_STATUS},
            init={"istio-proxy": SIDECAR_ARGS},
            native=("istio-proxy",),
        ),
        "sidecar",
        "ISTIO",
        {"istio-proxy"},
    ),
    # the gateway chart injects with the "gateway" template: the same annotation as a sidecar
    "istio ingress gateway": (
        pod(
            {"istio-proxy": ROUTER_ARGS},
            labels={"app": "istio-ingressgateway", "istio": "ingressgateway"},
            annotations={
                "inject.istio.io/templates": "gateway",
                "sidecar.istio.io/status": GATEWAY_STATUS,
            },
        ),
        "gateway",
        "ISTIO",
        set(),
    ),
    "istio egress gateway by label only": (
        pod({"istio-proxy": []}, labels={"istio": "egressgateway"}),
        "gateway",
        "ISTIO",
        set(),
    ),
    "gateway api deployment": (
        pod(
            {"istio-proxy": ROUTER_ARGS},
            labels={
                "gateway.istio.io/managed": "istio.io-gateway-controller",
                "gateway.networking.k8s.io/gateway-name": "bookinfo-gateway",
                "gateway.networking.k8s.io/gateway-class-name": "istio",
            },
            annotations={"sidecar.istio.io/status": GATEWAY_STATUS},
        ),
        "gateway",
        "ISTIO",
        set(),
    ),
    "waypoint": (
        pod(
            {"istio-proxy": ["proxy", "waypoint", "--domain", "$(POD_NAMESPACE).svc"]},
            labels={
                "gateway.istio.io/managed": "istio.io-mesh-controller",
                "gateway.networking.k8s.io/gateway-name": "waypoint",
                "gateway.networking.k8s.io/gateway-class-name": "istio-waypoint",
            },
        ),
        "waypoint",
        "ISTIO",
        set(),
    ),
    "ztunnel": (
        pod(
            {"istio-proxy": ["proxy", "ztunnel"]},
            labels={"app": "ztunnel", "sidecar.istio.io/inject": "false"},
        ),
        "ztunnel",
        "ISTIO",
        set(),
    ),
    "ambient pod": (
        pod({"productpage": []}, annotations={"ambient.istio.io/redirection": "enabled"}),
        "ambient",
        "ISTIO",
        set(),
    ),
    "linkerd": (
        pod(
            {"web": [], "linkerd-proxy": []},
            annotations={"linkerd.io/proxy-version": "edge-24.11.8"},
            init={"linkerd-init": []},
        ),
        "sidecar",
        "LINKERD",
        {"linkerd-proxy"},
    ),
    "consul dataplane": (
        pod(
            {"static-server": [], "consul-dataplane": ["-addresses", "consul-server.consul"]},
            annotations={
                "consul.hashicorp.com/connect-inject": "true",
                "consul.hashicorp.com/connect-inject-status": "injected",
                "consul.hashicorp.com/connect-service": "static-server",
            },
            init={"consul-connect-inject-init": []},
        ),
        "sidecar",
        "CONSUL",
        {"consul-dataplane"},
    ),
    "consul mesh gateway": (
        pod(
            {"mesh-gateway": []},
            labels={"app": "consul", "component": "mesh-gateway"},
            annotations={
                "consul.hashicorp.com/connect-inject": "false",
                "consul.hashicorp.com/gateway-kind": "mesh-gateway",
            },
        ),
        "gateway",
        "CONSUL",
        set(),
    ),
    "kuma": (
        pod(
            {"demo-app": [], "kuma-sidecar": ["run", "--log-level=info"]},
            annotations={"kuma.io/sidecar-injected": "true", "kuma.io/mesh": "default"},
            init={"kuma-init": []},
        ),
        "sidecar",
        "KUMA",
        {"kuma-sidecar"},
    ),
    "kuma builtin gateway": (
        pod({"kuma-gateway": []}, annotations={"kuma.io/gateway": "enabled"}),
        "gateway",
        "KUMA",
        set(),
    ),
    "bare envoy named by --sidecar-names": (
        pod({"app": [], "envoy": ["-c", "/etc/envoy.yaml"]}),
        "sidecar",
        "",
        {"envoy"},
    ),
    "plain": (pod({"batch": []}), "none", "", set()),
}


@pytest.mark.parametrize("name", list(PODS))
def test_classify(name: str) -> None:
    p, role, mesh, sidecars = PODS[name]
    got = classify(p, sidecar_names=("istio-proxy", "linkerd-proxy", "envoy"))
    assert (got.role, got.mesh, set(got.sidecars)) == (role, mesh, sidecars)
    if role not in ("sidecar", "none"):
        assert got.reason.startswith(role)


def test_only_sidecar_pods_are_traced_and_the_rest_are_counted() -> None:
    ps = PodSet(sidecar_names=("istio-proxy", "linkerd-proxy", "envoy"))
    for i, (p, _, _, _) in enumerate(PODS.values()):
        p.metadata.uid, p.metadata.name = f"uid-{i}", f"pod-{i}"
    assert ps.resync([p for p, _, _, _ in PODS.values()])
    traced = {c.pod for c in ps.desired() if c.role == "sidecar"}
    want = {f"pod-{i}" for i, v in enumerate(PODS.values()) if v[1] == "sidecar"}
    assert traced == want
    assert ps.skipped() == {"gateway": 5, "waypoint": 1, "ztunnel": 1, "ambient": 1}
    meshes = {c.pod: c.mesh for c in ps.desired()}
    assert sorted(set(meshes.values())) == ["", "CONSUL", "ISTIO", "KUMA", "LINKERD"]
    # a relist without the gateways forgets them
    ps.resync([p for p, role, _, _ in PODS.values() if role == "sidecar"])
    assert ps.skipped() == {}
