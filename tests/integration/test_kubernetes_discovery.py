"""The pod-watch handler driven with the kubernetes client's own models, mapped to real
cgroups and processes (kubelet-style paths under the unified hierarchy)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from _kubepods import Pod, kubelet_pod, named_binary, node_root
from kubernetes.client import (
    V1Container,
    V1ContainerState,
    V1ContainerStateRunning,
    V1ContainerStateWaiting,
    V1ContainerStatus,
    V1ObjectMeta,
    V1Pod,
    V1PodSpec,
    V1PodStatus,
)

from profiler.discovery.kubernetes import PodSet, resolve_targets

pytestmark = pytest.mark.testbed

ISTIO_STATUS = json.dumps(
    {
        "initContainers": ["istio-init"],
        "containers": ["istio-proxy"],
        "volumes": ["istio-envoy", "istio-data", "istio-podinfo", "istio-token"],
        "imagePullSecrets": None,
        "revision": "default",
    }
)
SCHEME = {"containerd": "containerd", "cri-o": "cri-o", "docker": "docker"}


def v1pod(
    pod: Pod,
    name: str,
    annotations: dict[str, str] | None = None,
    waiting: tuple[str, ...] = (),
    native: tuple[str, ...] = (),
    phase: str = "Running",
) -> V1Pod:
    """A V1Pod as the API server returns it for the pod built in cgroups."""
    scheme = SCHEME.get(pod.runtime, "containerd")

    def status(cname: str) -> V1ContainerStatus:
        c = pod.containers[cname]
        if cname in waiting:
            state = V1ContainerState(waiting=V1ContainerStateWaiting(reason="ContainerCreating"))
            cid = None
        else:
            state = V1ContainerState(running=V1ContainerStateRunning())
            cid = f"{scheme}://{c.container_id}"
        return V1ContainerStatus(
            name=cname,
            container_id=cid,
            image="example/" + cname,
            image_id="",
            ready=cid is not None,
            restart_count=0,
            state=state,
        )

    names = [n for n in pod.containers if n != "POD"]
    regular = [n for n in names if n not in native]
    return V1Pod(
        metadata=V1ObjectMeta(
            name=name, namespace="shop", uid=pod.uid, annotations=annotations or {}
        ),
        spec=V1PodSpec(
            node_name="node-a",
            containers=[V1Container(name=n) for n in regular],
            init_containers=[V1Container(name=n, restart_policy="Always") for n in native] or None,
        ),
        status=V1PodStatus(
            phase=phase,
            container_statuses=[status(n) for n in regular],
            init_container_statuses=[status(n) for n in native] or None,
        ),
    )


@pytest.fixture
def root() -> Iterator[Path]:
    with node_root("smp-k8s") as r:
        yield r


def test_istio_linkerd_plain_pods_then_delete_and_restart(root: Path) -> None:
    with (
        kubelet_pod(root, runtime="containerd") as istio,
        kubelet_pod(root, runtime="cri-o", qos="guaranteed") as linkerd,
        kubelet_pod(root, runtime="cgroupfs") as plain,
    ):
        # istio-proxy holds pilot-agent and Envoy: only Envoy is the sidecar target
        proxy = istio.add_container("istio-proxy", [named_binary("pilot-agent"), "600"])
        envoy_pid = istio.add_process("istio-proxy", [named_binary("envoy"), "600"])
        app = istio.add_container("reviews", [named_binary("app"), "600"], n=2)
        l5d = linkerd.add_container("linkerd-proxy", [named_binary("linkerd2-proxy"), "600"])
        web = linkerd.add_container("web", [named_binary("web"), "600"])
        plain.add_container("batch", [named_binary("batch"), "600"])

        ps = PodSet()
        assert ps.on_event(
            "ADDED", v1pod(istio, "reviews-1", {"sidecar.istio.io/status": ISTIO_STATUS})
        )
        assert ps.on_event(
            "ADDED", v1pod(linkerd, "web-1", {"linkerd.io/proxy-version": "edge-24.11.8"})
        )
        assert not ps.on_event("ADDED", v1pod(plain, "batch-1"))
        desired = {(c.pod, c.container): c for c in ps.desired()}
        assert set(desired) == {
            ("reviews-1", "istio-proxy"),
            ("reviews-1", "reviews"),
            ("web-1", "linkerd-proxy"),
            ("web-1", "web"),
        }
        assert desired["web-1", "linkerd-proxy"].runtime == "cri-o"
        assert desired["reviews-1", "reviews"].role == "app"

        targets = resolve_targets(ps.desired(), cgroup_root=str(root))
        expected = {envoy_pid: ("sidecar", "reviews-1", "istio-proxy")}
        expected |= {p: ("app", "reviews-1", "reviews") for p in app.pids}
        expected[l5d.pids[0]] = ("sidecar", "web-1", "linkerd-proxy")
        expected[web.pids[0]] = ("app", "web-1", "web")
        got = {pid: (t.role, t.labels["pod"], t.labels["container"]) for pid, t in targets.items()}
        assert got == expected
        assert proxy.procs[0].pid not in targets  # pilot-agent
        assert all(t.labels["namespace"] == "shop" and len(t.labels) == 4 for t in targets.values())
        # the mesh comes from the pod's injection annotation, on its apps' series too
        meshes = {t.labels["pod"]: t.labels["mesh"] for t in targets.values()}
        assert meshes == {"reviews-1": "ISTIO", "web-1": "LINKERD"}

        # deletion: the Linkerd pod goes away
        assert ps.on_event("DELETED", v1pod(linkerd, "web-1"))
        assert {c.pod for c in ps.desired()} == {"reviews-1"}

        # the istio-proxy container restarts: new container id, new PID, old one gone
        istio.remove_container("istio-proxy")
        istio.add_container("istio-proxy", [named_binary("envoy"), "600"])
        new_pid = istio.containers["istio-proxy"].pids[0]
        pod_obj = v1pod(istio, "reviews-1", {"sidecar.istio.io/status": ISTIO_STATUS})
        assert ps.on_event("MODIFIED", pod_obj)
        assert not ps.on_event("MODIFIED", pod_obj)  # no change, no reconcile
        targets = resolve_targets(ps.desired(), cgroup_root=str(root))
        sidecars = [p for p, t in targets.items() if t.role == "sidecar"]
        assert sidecars == [new_pid]
        assert envoy_pid not in targets


def test_resync_waiting_native_sidecar_and_finished_pods(root: Path) -> None:
    with kubelet_pod(root) as pod:
        pod.add_container("istio-proxy", [named_binary("envoy"), "600"])
        pod.add_container("app", [named_binary("app"), "600"])
        pod.add_container("late", [named_binary("late"), "600"])
        ps = PodSet()
        ann = {"sidecar.istio.io/status": ISTIO_STATUS}
        # Istio's native-sidecar mode: istio-proxy is an init container that keeps running
        native = v1pod(pod, "p", ann, waiting=("late",), native=("istio-proxy",))
        assert ps.resync([native])
        got = {c.container: c.role for c in ps.desired()}
        assert got == {"istio-proxy": "sidecar", "app": "app"}  # "late" has no container yet
        assert {
            t.labels["container"] for t in resolve_targets(ps.desired(), str(root)).values()
        } == {
            "istio-proxy",
            "app",
        }
        # a configured name picks a sidecar without any annotation
        custom = PodSet(sidecar_names=("late",))
        custom.on_event("ADDED", v1pod(pod, "p"))
        assert {c.container: c.role for c in custom.desired()}["late"] == "sidecar"
        # ... with no mesh: a bare proxy is not Istio because of its name
        assert {c.mesh for c in custom.desired()} == {""}
        # the pod completes: nothing left to trace; a relist without it empties the set
        assert ps.on_event("MODIFIED", v1pod(pod, "p", ann, phase="Succeeded"))
        assert ps.desired() == []
        assert not ps.resync([])
