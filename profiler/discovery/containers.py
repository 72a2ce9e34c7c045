"""Container and pod identity from a kubelet-style cgroup path (pure string parsing).

The forms kubelet and the runtimes create, for cgroup v1 (per hierarchy) and v2 alike:

- systemd driver: ``/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/
  cri-containerd-<id>.scope`` (``crio-<id>.scope``, ``docker-<id>.scope``); the pod uid has its
  dashes written as underscores; Guaranteed pods sit directly under ``kubepods.slice``; kind and
  nested kubelets prefix ``kubelet-`` (``kubelet-kubepods-...``).
- cgroupfs driver: ``/kubepods/burstable/pod<uid>/<id>`` (``/kubepods/pod<uid>/<id>`` for
  Guaranteed), where the runtime is not visible in the path (docker, containerd); CRI-O
  names its directory ``crio-<id>`` (and its monitor ``crio-conmon-<id>``, skipped).
- the runtime's cgroupfs mode under a systemd-style parent (containerd with
  ``SystemdCgroup = false`` and a kubelet on the systemd driver, k3s, some EKS/kind set-ups):
  one directory per container named ``kubepods-<qos>-pod<uid>.slice:cri-containerd:<id>``
  (``:crio:``, ``:docker:``), at the hierarchy's root or under
  ``/system.slice/containerd.service/``; a pod's containers are siblings there.

A path may be given relative to its hierarchy (as in ``/proc/<pid>/cgroup``, even with the
``/..`` prefix a cgroup namespace adds) or as a file-system path under a cgroup mount.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_QOS = ("burstable", "besteffort")
_ID = r"[0-9a-f]{12,64}"
# Runtime scope names of the systemd driver; CRI-O's "crio-conmon-<id>" is its monitor, skipped.
_SCOPE = re.compile(rf"^(cri-containerd|crio|docker)-({_ID})(?:\.scope)?$")
_COLON = re.compile(
    rf"^(?:kubelet-)?kubepods(?:-(burstable|besteffort))?-pod([0-9a-f_-]{{32,36}})\.slice"
    rf":(cri-containerd|crio|docker):({_ID})$"
)
_RUNTIME = {"cri-containerd": "containerd", "crio": "cri-o", "docker": "docker"}
_POD_SLICE = re.compile(
    r"^(?:kubelet-)?kubepods(?:-(burstable|besteffort))?-pod([0-9a-f_-]{32,36})\.slice$"
)
_POD_DIR = re.compile(r"^pod([0-9a-f-]{32,36})$")
_BARE_ID = re.compile(rf"^{_ID}$")


@dataclass(frozen=True)
class ContainerRef:
    """One container as its cgroup path names it."""

    pod_uid: str  # with dashes, as in the Pod's metadata.uid
    qos_class: str  # "guaranteed", "burstable" or "besteffort"
    container_id: str  # the runtime's id (hex), without a "containerd://" prefix
    runtime: str | None  # "containerd", "cri-o", "docker"; None for the cgroupfs driver
    cgroup: str  # the path that was parsed


def _pod_of(part: str, parent: str) -> tuple[str, str] | None:
    """(uid, qos) when ``part`` is a pod cgroup's name; ``parent`` is the name above it."""
    m = _POD_SLICE.match(part)
    if m:
        return m.group(2).replace("_", "-"), m.group(1) or "guaranteed"
    m = _POD_DIR.match(part)
    if m:
        return m.group(1), parent if parent in _QOS else "guaranteed"
    return None


def parse_container_cgroup(path: str) -> ContainerRef | None:
    """The container a cgroup path belongs to, or None when it is not a container's cgroup.

    A process of a container may sit in a sub-cgroup of the container's own, and a reader in
    another cgroup namespace sees only the tail of the path (``/../../kubepods-besteffort-
    pod<uid>.slice/cri-containerd-<id>.scope``): the pod and container parts are looked for
    anywhere in the path.
    """
    parts = [p for p in path.split("/") if p and p != ".."]
    for part in parts:
        m = _COLON.match(part)
        if m:
            uid = m.group(2).replace("_", "-")
            return ContainerRef(uid, m.group(1) or "guaranteed", m.group(4),
                                _RUNTIME[m.group(3)], path)  # fmt: skip
    for i in range(len(parts) - 1):
        pod = _pod_of(parts[i], parts[i - 1] if i > 0 else "")
        if pod is None:
            continue
        child = parts[i + 1]
        m = _SCOPE.match(child)
        if m:
            return ContainerRef(pod[0], pod[1], m.group(2), _RUNTIME[m.group(1)], path)
        if _BARE_ID.match(child):
            return ContainerRef(pod[0], pod[1], child, None, path)
        return None
    return None


def container_id_of_name(name: str) -> str | None:
    """The container id a cgroup directory name carries (``crio-<id>.scope``, ``<id>``,
    ``kubepods-...-pod<uid>.slice:cri-containerd:<id>``)."""
    m = _SCOPE.match(name)
    if m:
        return m.group(2)
    m = _COLON.match(name)
    if m:
        return m.group(4)
    return name if _BARE_ID.match(name) else None


def is_pod_cgroup_name(name: str, pod_uid: str) -> bool:
    """Whether a cgroup directory name is the pod cgroup of ``pod_uid`` (either driver)."""
    pod = _pod_of(name, "")
    return pod is not None and pod[0] == pod_uid.lower()
