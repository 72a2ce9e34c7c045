"""daemonset/: kustomize renders it, every object validates against the Kubernetes OpenAPI
schemas of two current versions, and the privilege policy holds (every added capability
commented, every host mount read-only and commented, drop ALL, no privileged)."""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2] / "daemonset"
VERSIONS = ("1.36.0", "1.37.0")
CRDS = {
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("security.openshift.io/v1", "SecurityContextConstraints"),
}
OVERLAYS = (
    ".",
    "overlays/prometheus-operator",
    "overlays/system-node-critical",
    "overlays/openshift",
)


@functools.cache
def render(path: str) -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is not installed (make setup)"
    r = subprocess.run(
        [kubectl, "kustomize", str(ROOT / path)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    return tuple(d for d in yaml.safe_load_all(r.stdout) if d)


def by_kind(docs: tuple[dict[str, Any], ...], kind: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def test_base_renders_every_object() -> None:
    kinds = sorted(d["kind"] for d in render("."))
    assert kinds == sorted(
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "PriorityClass",
            "DaemonSet",
            "Service",
        ]
    )
    assert all(
        d["metadata"].get("namespace") == "smp-profiler"
        for d in render(".")
        if d["kind"] in ("ServiceAccount", "DaemonSet", "Service")
    )


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", OVERLAYS)
def test_objects_validate_against_openapi(path: str, version: str) -> None:
    checked = 0
    for doc in render(path):
        if (doc["apiVersion"], doc["kind"]) in CRDS:
            continue
        kubernetes_validate.validate(doc, version, strict=True)
        checked += 1
    assert checked >= 7


def test_validation_catches_a_broken_object() -> None:
    ds = json.loads(json.dumps(by_kind(render("."), "DaemonSet")))
    ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFS"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, VERSIONS[-1], strict=True)


def _scrape_annotated(doc: dict[str, Any]) -> bool:
    meta = doc["spec"]["template"]["metadata"] if doc["kind"] == "DaemonSet" else doc["metadata"]
    return (meta.get("annotations") or {}).get("prometheus.io/scrape") == "true"


def test_podmonitor_overlay() -> None:
    docs = render("overlays/prometheus-operator")
    pm = by_kind(docs, "PodMonitor")
    ds = by_kind(docs, "DaemonSet")
    assert pm["apiVersion"] == "monitoring.coreos.com/v1"
    pod_labels = ds["spec"]["template"]["metadata"]["labels"]
    assert pm["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    ports = {p["name"] for p in ds["spec"]["template"]["spec"]["containers"][0]["ports"]}
    (endpoint,) = pm["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics" and "metrics" in ports
    # the agent's labels name the meshed pods: kept, never overwritten by the target's
    assert endpoint["honorLabels"] is True
    # kube-prometheus-stack picks PodMonitors by its release label
    assert pm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # one scrape path: the PodMonitor only, no annotations left for a second Prometheus
    assert not _scrape_annotated(ds) and not _scrape_annotated(by_kind(docs, "Service"))


def test_one_scrape_path_in_the_base() -> None:
    docs = render(".")
    assert _scrape_annotated(by_kind(docs, "DaemonSet"))
    assert not _scrape_annotated(by_kind(docs, "Service"))  # else scraped twice


@pytest.mark.parametrize("path", OVERLAYS)
def test_placement_rules(path: str) -> None:
    docs = render(path)
    ds = by_kind(docs, "DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    # Linux nodes only, every taint tolerated
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert {"operator": "Exists"} in spec["tolerations"]
    # optional host paths have no type: a node without them still starts the pod
    for v in spec["volumes"]:
        if "hostPath" in v and v["hostPath"]["path"] != "/sys/fs/cgroup":
            assert "type" not in v["hostPath"], v
    # the host's headers are under /host, /lib/modules is the container's own
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/lib/modules"]["name"]]
    env = {e["name"]: e.get("value") for e in c["env"]}
    root = env["SMP_HOST_ROOT"]
    for host in ("/lib/modules", "/usr/src"):
        m = mounts[root + host]
        assert volumes[m["name"]]["hostPath"]["path"] == host and m["readOnly"] is True
    assert c["securityContext"]["seLinuxOptions"]["type"] == "spc_t"
    # probes: a startup probe on the health endpoint, the cheap readiness
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    classes = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PriorityClass"}
    if path == "overlays/system-node-critical":
        assert spec["priorityClassName"] == "system-node-critical" and not classes
        quota = by_kind(docs, "ResourceQuota")
        assert quota["metadata"]["namespace"] == ds["metadata"]["namespace"]
        (expr,) = quota["spec"]["scopeSelector"]["matchExpressions"]
        assert expr == {
            "operator": "In",
            "scopeName": "PriorityClass",
            "values": ["system-node-critical"],
        }
    else:
        pc = classes[spec["priorityClassName"]]
        assert pc["preemptionPolicy"] == "Never"  # never evicts a user's pod
        assert 0 < pc["value"] < 1_000_000_000  # below the system classes


def test_openshift_scc_admits_exactly_the_daemonset() -> None:
    docs = render("overlays/openshift")
    scc = by_kind(docs, "SecurityContextConstraints")
    spec = by_kind(docs, "DaemonSet")["spec"]["template"]["spec"]
    sc = spec["containers"][0]["securityContext"]
    assert sorted(scc["allowedCapabilities"]) == sorted(sc["capabilities"]["add"])
    assert scc["allowHostPID"] is True and spec["hostPID"] is True
    assert scc["allowPrivilegedContainer"] is False and scc["allowHostNetwork"] is False
    assert scc["seLinuxContext"]["type"] == "RunAsAny"  # the pod asks for spc_t
    roles = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ClusterRole"}
    (rule,) = roles["smp-profiler-scc"]["rules"]
    assert rule["verbs"] == ["use"] and rule["resourceNames"] == [scc["metadata"]["name"]]
    bindings = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    scc_binding = next(b for b in bindings if b["roleRef"]["name"] == "smp-profiler-scc")
    assert scc_binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "smp-profiler", "namespace": "smp-profiler"}
    ]


def test_rbac_is_read_only_on_pods() -> None:
    role = by_kind(render("."), "ClusterRole")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
    ]


def _pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = by_kind(render("."), "DaemonSet")["spec"]["template"]["spec"]
    return spec


def test_daemonset_privilege_policy() -> None:
    spec = _pod_spec()
    (c,) = spec["containers"]
    sc = c["securityContext"]
    assert spec["hostPID"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    added = set(sc["capabilities"]["add"])
    assert added <= {"BPF", "PERFMON", "SYS_RESOURCE", "SYS_PTRACE"}
    assert "SYS_ADMIN" not in added and not sc.get("privileged", False)
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    host = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    assert set(host.values()) == {
        "/sys/kernel/btf",
        "/sys/kernel/tracing",
        "/sys/kernel/debug",
        "/lib/modules",
        "/usr/src",
        "/sys/fs/cgroup",
    }
    for m in c["volumeMounts"]:
        if m["name"] in host:
            assert m.get("readOnly") is True, f"host mount {m['name']} is writable"
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"requests", "limits"} <= c["resources"].keys()
    assert {"operator": "Exists"} in spec["tolerations"]
    ann = by_kind(render("."), "DaemonSet")["spec"]["template"]["metadata"]["annotations"]
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == "9464"


def _commented(lines: list[str], i: int) -> bool:
    """A line has a comment at its end or on the line(s) just above it."""
    return "#" in lines[i] or lines[i - 1].strip().startswith("#")


def test_every_privilege_is_commented_in_the_source() -> None:
    lines = (ROOT / "base" / "daemonset.yaml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "add:")
    caps = []
    for i in range(start + 1, len(lines)):
        s = lines[i].strip()
        if s.startswith("#"):
            continue
        if not s.startswith("- "):
            break
        caps.append(s[2:].split("#")[0].strip())
        assert _commented(lines, i), f"capability {s} has no comment saying why"
    assert caps == ["BPF", "PERFMON", "SYS_RESOURCE", "SYS_PTRACE"]
    host = {v["name"] for v in _pod_spec()["volumes"] if "hostPath" in v}
    mounts = [i for i, line in enumerate(lines) if re.match(r"\s+- name: ([\w-]+)", line)]
    commented = {
        re.match(r"\s+- name: ([\w-]+)", lines[i]).group(1)  # type: ignore[union-attr]
        for i in mounts
        if "#" in lines[i] and "mountPath" in lines[i + 1]
    }
    assert host <= commented, f"host mounts without a comment: {sorted(host - commented)}"
    for key in ("hostPID: true", "readOnlyRootFilesystem: true", "runAsUser: 0"):
        i = next(i for i, line in enumerate(lines) if key in line)
        assert _commented(lines, i), f"'{key}' has no comment"


def _dashboard_exprs() -> list[str]:
    dash = json.loads((ROOT / "grafana-dashboard.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def test_dashboard_queries_use_the_declared_metrics() -> None:
    from profiler.daemon.metrics import SPECS

    known = {s.name for s in SPECS}
    known |= {s.name + sfx for s in SPECS if s.type == "histogram" for sfx in ("_bucket",)}
    exprs = _dashboard_exprs()
    assert len(exprs) >= 8
    label_names = {n for s in SPECS for n in s.labels}
    used = {m for e in exprs for m in re.findall(r"\b(smp_[a-z_]+)", e)} - label_names
    assert used <= known, f"unknown metrics: {sorted(used - known)}"
    assert {"smp_sidecar_leg_duration_seconds_bucket", "smp_sidecar_cpu_seconds_total"} <= used
    for e in exprs:
        if "histogram_quantile" in e:  # merged histograms, never averaged percentiles
            assert re.search(r"histogram_quantile\(0\.\d+, sum by \(le[,)]", e), e


def test_containerfile_uses_debian_bcc() -> None:
    text = (ROOT / "Containerfile").read_text()
    froms = re.findall(r"(?m)^FROM (\S+)", text)
    assert froms and all(f.startswith("docker.io/library/debian:") for f in froms)
    assert "python3-bpfcc" in text
    # a header tree for the running architecture, headers only (no compiler in the image)
    assert "linux-headers-$arch" in text and "dpkg-deb -x" in text
    assert "--platform linux/amd64,linux/arm64" in text
    assert not re.search(r"pip install[^\n]*\bbcc\b", text)  # PyPI's "bcc" is another project
    assert re.search(r'(?m)^ENTRYPOINT \["smp-profiler"\]', text)
