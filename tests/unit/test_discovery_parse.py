"""Container and pod identity from the cgroup paths kubelet and the runtimes really write."""

from __future__ import annotations

from pathlib import Path

import pytest

from profiler.discovery import ContainerRef, parse_container_cgroup
from profiler.discovery.containers import container_id_of_name, is_pod_cgroup_name

UID = "8a6a1b3e-4a43-4b3c-9a0e-5f2f43f6c7d1"
UID_ = UID.replace("-", "_")
CID = "3f1b0c1d2e3f405162738495a6b7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f"

CASES = [
    # containerd, systemd driver, cgroup v2 (/proc/<pid>/cgroup "0::" line)
    (
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
        f"cri-containerd-{CID}.scope",
        "burstable",
        "containerd",
    ),
    # CRI-O, Guaranteed pod (directly under kubepods.slice)
    (f"/kubepods.slice/kubepods-pod{UID_}.slice/crio-{CID}.scope", "guaranteed", "cri-o"),
    # docker (dockershim / cri-dockerd), BestEffort
    (
        f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/"
        f"docker-{CID}.scope",
        "besteffort",
        "docker",
    ),
    # cgroupfs driver, v1 "memory" hierarchy line and v2 alike
    (f"/kubepods/burstable/pod{UID}/{CID}", "burstable", None),
    (f"/kubepods/besteffort/pod{UID}/{CID}", "besteffort", None),
    (f"/kubepods/pod{UID}/{CID}", "guaranteed", None),
    # a file-system path under a v1 mount
    (f"/sys/fs/cgroup/memory/kubepods/burstable/pod{UID}/{CID}", "burstable", None),
    # kind: the kubelet runs nested and prefixes its slices
    (
        f"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/"
        f"kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope",
        "besteffort",
        "containerd",
    ),
    # seen from inside another cgroup namespace
    (
        f"/../../kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
        f"cri-containerd-{CID}.scope",
        "burstable",
        "containerd",
    ),
    # seen from a sibling pod's cgroup namespace: only the tail of the path
    (
        f"/../../kubepods-burstable-pod{UID_}.slice/cri-containerd-{CID}.scope",
        "burstable",
        "containerd",
    ),
    # a process in a sub-cgroup of its container (e.g. systemd inside the container)
    (f"/kubepods/burstable/pod{UID}/{CID}/init.scope", "burstable", None),
    # CRI-O with the cgroupfs driver: crio-<id>, no .scope (v1 and v2 alike)
    (f"/kubepods/burstable/pod{UID}/crio-{CID}", "burstable", "cri-o"),
    (f"/kubepods/pod{UID}/crio-{CID}", "guaranteed", "cri-o"),
    # containerd's cgroupfs mode under a systemd-style parent (SystemdCgroup = false with a
    # kubelet on the systemd driver; k3s): one flat directory per container, as written in
    # /proc/<pid>/cgroup on v1 (name=systemd under containerd.service, memory at the root)
    (
        f"/system.slice/containerd.service/kubepods-besteffort-pod{UID_}.slice"
        f":cri-containerd:{CID}",
        "besteffort",
        "containerd",
    ),
    (f"/kubepods-besteffort-pod{UID_}.slice:cri-containerd:{CID}", "besteffort", "containerd"),
    # ... and on v2 ("0::"), with the uid's dashes kept
    (
        f"/system.slice/containerd.service/kubepods-burstable-pod{UID}.slice:cri-containerd:{CID}",
        "burstable",
        "containerd",
    ),
    (f"/kubepods-pod{UID_}.slice:crio:{CID}", "guaranteed", "cri-o"),
    (f"/kubepods-burstable-pod{UID_}.slice:docker:{CID}", "burstable", "docker"),
]


@pytest.mark.parametrize(("path", "qos", "runtime"), CASES)
def test_parse_container_cgroup_forms(path: str, qos: str, runtime: str | None) -> None:
    ref = parse_container_cgroup(path)
    assert ref == ContainerRef(UID, qos, CID, runtime, path)


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/system.slice/containerd.service",
        "/user.slice/user-0.slice/session-1.scope",
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice",
        f"/kubepods/burstable/pod{UID}",
        "/kubepods.slice/kubepods-burstable.slice",
        # CRI-O's conmon monitor sits next to the container: not a container
        f"/kubepods.slice/kubepods-pod{UID_}.slice/crio-conmon-{CID}.scope",
        f"/kubepods/burstable/pod{UID}/crio-conmon-{CID}",
        # inside a container's cgroup namespace only the container is left: no pod to name
        f"/../crio-{CID}.scope",
        # the flat form without a runtime
        f"/kubepods-besteffort-pod{UID_}.slice:{CID}",
        # a docker container outside Kubernetes
        f"/system.slice/docker-{CID}.scope",
        f"/kubepods/burstable/pod{UID}/not-an-id",
    ],
)
def test_parse_container_cgroup_rejects(path: str) -> None:
    assert parse_container_cgroup(path) is None


def test_container_id_of_name() -> None:
    assert container_id_of_name(f"cri-containerd-{CID}.scope") == CID
    assert container_id_of_name(f"crio-{CID}.scope") == CID
    assert container_id_of_name(CID) == CID
    assert container_id_of_name(f"crio-conmon-{CID}.scope") is None
    assert container_id_of_name(f"crio-{CID}") == CID
    assert container_id_of_name(f"crio-conmon-{CID}") is None
    assert container_id_of_name(f"kubepods-besteffort-pod{UID_}.slice:cri-containerd:{CID}") == CID
    assert container_id_of_name("kubepods.slice") is None


def test_is_pod_cgroup_name_both_drivers() -> None:
    assert is_pod_cgroup_name(f"kubepods-burstable-pod{UID_}.slice", UID)
    assert is_pod_cgroup_name(f"kubepods-pod{UID_}.slice", UID)
    assert is_pod_cgroup_name(f"pod{UID}", UID)
    assert not is_pod_cgroup_name(f"pod{UID}", UID.replace("8", "9"))


def test_pod_container_dirs_of_the_flat_form_keep_to_one_pod(tmp_path: Path) -> None:
    """Flat containers of two pods side by side: a container's pod is its own uid's only."""
    from profiler.discovery.processes import pod_container_dirs

    other = UID.replace("8a6a", "9b7b")
    names = [
        f"kubepods-besteffort-pod{UID_}.slice:cri-containerd:{'a' * 64}",
        f"kubepods-besteffort-pod{UID_}.slice:cri-containerd:{'b' * 64}",
        f"kubepods-besteffort-pod{other.replace('-', '_')}.slice:cri-containerd:{'c' * 64}",
        "system.slice",
    ]
    for n in names:
        (tmp_path / n).mkdir()
    got = pod_container_dirs(tmp_path / names[0])
    assert [d.name for d in got] == sorted(names[:2])
    # the nested forms: every container sibling under the pod's cgroup
    pod = tmp_path / "kubepods" / "burstable" / f"pod{UID}"
    for n in (f"crio-{'a' * 64}", f"crio-conmon-{'a' * 64}", "b" * 64):
        (pod / n).mkdir(parents=True)
    got = pod_container_dirs(pod / f"crio-{'a' * 64}")
    assert [d.name for d in got] == ["b" * 64, f"crio-{'a' * 64}"]
