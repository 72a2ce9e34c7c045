"""The DaemonSet's agent as it would run on a headerless node, with the testbed as the node.

The container is built as the rendered manifest (``kubectl kustomize daemonset/``) says: a
private mount namespace whose root is read-only (an empty tmpfs remounted read-only, with
the image's /usr, the code and the interpreter bound read-only), every volume of the pod
spec mounted where the manifest mounts it (hostPaths from this host, read-only where the
manifest says so; emptyDirs as tmpfs), the host's /lib/modules EMPTY and read-only (COS,
Bottlerocket, Talos: no headers for the running kernel), the manifest's env, ``runAsUser``
and nothing but its capabilities (setpriv: bounding set, no_new_privs). The pods come from a
stand-in API server through a kubeconfig, as in-cluster.

It must be Ready within 30 s and count the requests sent through the testbed's Envoy; and
without CAP_PERFMON it must stay up, alive, and say why it is not ready.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from _apiserver import api_server, pod_json
from _prom import http_get, metrics_url, scrape
from _testbed import send_requests

from profiler.discovery.cgroups import cgroup2_mount
from profiler.discovery.containers import container_id_of_name

pytestmark = [pytest.mark.bpf, pytest.mark.testbed, pytest.mark.envoy]
ROOT = Path(__file__).resolve().parents[2]
ISTIO = {"sidecar.istio.io/status": json.dumps({"containers": ["istio-proxy"]})}


def rendered_pod_spec() -> dict[str, Any]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is not installed (make setup)"
    out = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "daemonset")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    (ds,) = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "DaemonSet"]
    spec: dict[str, Any] = ds["spec"]["template"]["spec"]
    return spec


def container_script(
    spec: dict[str, Any],
    newroot: Path,
    kubeconfig: Path,
    argv: list[str],
    drop: set[str],
    own_proc: bool = False,
) -> str:
    """A shell script (run under ``unshare --mount``) that lays the container out as the
    manifest mounts it, then runs ``argv`` chrooted with only the manifest's capabilities
    (minus ``drop``). ``own_proc``: /proc is a fresh procfs of the PID namespace the script
    runs in (hostPID on a node that is itself a container), not the host's."""
    (c,) = spec["containers"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    r = shlex.quote(str(newroot))
    lines = [
        "set -eu",
        f"mount -t tmpfs -o mode=755 rootfs {r}",
        f"cd {r} && mkdir -p usr etc proc sys dev run var tmp root work kube",
        f"ln -s usr/bin {r}/bin && ln -s usr/lib {r}/lib && ln -s usr/lib64 {r}/lib64",
        f"ln -s usr/sbin {r}/sbin",
    ]

    def bind(src: str, dst: str, ro: bool = True, recursive: bool = False) -> None:
        d = shlex.quote(f"{newroot}{dst}")
        lines.append(f"mkdir -p {d}")
        lines.append(f"mount {'--rbind' if recursive else '--bind'} {shlex.quote(src)} {d}")
        if ro:
            lines.append(f"mount -o remount,bind,ro {d}")

    # the image: Debian's /usr and /etc, the interpreter and the code (with its venv)
    bind("/usr", "/usr")
    bind("/etc", "/etc")
    pyenv = Path(sys.base_prefix).resolve()  # the interpreter the venv was made from
    bind(str(pyenv), str(pyenv))
    bind(str(ROOT), str(ROOT))
    # what every container gets: /proc (hostPID: the host's), /sys read-only, /dev
    if own_proc:
        lines.append(f"mkdir -p {r}/proc && mount -t proc proc {r}/proc")
    else:
        bind("/proc", "/proc", ro=False)
    bind("/proc/sys", "/proc/sys")
    bind("/sys", "/sys")
    bind("/dev", "/dev", ro=False)
    bind(str(kubeconfig.parent), "/kube")
    # the pod's volumes, where and how the manifest mounts them
    for m in c["volumeMounts"]:
        v = volumes[m["name"]]
        dst = m["mountPath"]
        if "emptyDir" in v:
            lines.append(f"mkdir -p {r}{dst} && mount -t tmpfs -o mode=1777 {m['name']} {r}{dst}")
        elif v["hostPath"]["path"] == "/lib/modules":
            # a headerless node: its /lib/modules is empty and read-only
            lines.append(f"mkdir -p {r}{dst} && mount -t tmpfs -o ro,size=1m hostmods {r}{dst}")
        else:
            host = v["hostPath"]["path"]
            bind(host, dst, ro=m.get("readOnly", False), recursive=host == "/sys/fs/cgroup")
    lines.append(f"mount -o remount,ro {r}")  # readOnlyRootFilesystem
    sc = c["securityContext"]
    caps = [x.lower() for x in sc["capabilities"]["add"] if x not in drop]
    env = {"PATH": "/usr/bin:/bin", "HOME": "/root"}
    env |= {e["name"]: e["value"] for e in c["env"] if "value" in e}
    env["NODE_NAME"] = "node-a"  # the downward API
    setpriv = [
        "setpriv",
        f"--reuid={sc['runAsUser']}",
        f"--regid={sc['runAsUser']}",
        "--clear-groups",
        "--inh-caps=-all",
        "--ambient-caps=-all",
        "--bounding-set=-all," + ",".join("+" + x for x in caps),
    ]
    if sc["allowPrivilegeEscalation"] is False:
        setpriv.append("--no-new-privs")
    envs = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    cmd = " ".join(shlex.quote(x) for x in [*setpriv, "--", *argv])
    lines.append(f"exec chroot {r} env -i {envs} {cmd}")
    return "\n".join(lines)


@contextmanager
def deployed_agent(
    tmp_path: Path,
    kubeconfig: Path,
    drop: set[str] = frozenset(),
    pidns: int | None = None,
    prelude: str = "",
) -> Iterator[tuple[subprocess.Popen[bytes], Path, Callable[[], str]]]:
    """The agent as deployed; ``pidns``: the PID (here) of a process whose PID namespace the
    agent runs in, with that namespace's /proc (a kind/k3d node is such a namespace);
    ``prelude``: Python run in the agent's interpreter before the CLI (a fault to inject)."""
    spec = rendered_pod_spec()
    (c,) = spec["containers"]
    newroot = Path(tempfile.mkdtemp(prefix="smp-pod-root-"))
    cli = ["-m", "profiler.cli"]
    if prelude:
        cli = [
            "-c",
            f"{prelude}\nimport runpy; runpy.run_module('profiler.cli', run_name='__main__')",
        ]
    argv = [sys.executable, *cli, *c["args"]]
    argv = [a for a in argv if not a.startswith("--metrics-port")]
    argv += ["--metrics-port", "0", "--metrics-address", "127.0.0.1", "--interval", "0.5"]
    argv += ["--kubeconfig", f"/kube/{kubeconfig.name}"]
    script = container_script(spec, newroot, kubeconfig, argv, set(drop), pidns is not None)
    log = tmp_path / "agent.log"
    # The agent's own pod cgroup (unified hierarchy), entered before a private cgroup
    # namespace is made, as runtimes do on cgroup v2: the sidecars' /proc/<pid>/cgroup then
    # read "/../..." from inside, and their cgroups are found by container id in /host.
    own = Path(cgroup2_mount()) / f"smp-agent-pod-{secrets.token_hex(4)}"
    own.mkdir()
    unshare = ["unshare", "--mount", "--cgroup", "--propagation", "private", "sh", "-c", script]
    enter = f"echo $$ > {shlex.quote(str(own / 'cgroup.procs'))} && exec " + shlex.join(unshare)
    # nsenter forks the shell into the namespace and waits for it: the agent is found (and
    # signalled) by its cgroup, where this process sees its PID
    nsenter = [] if pidns is None else ["nsenter", f"--target={pidns}", "--pid", "--"]
    with log.open("w") as err:
        proc = subprocess.Popen(
            [*nsenter, "sh", "-c", enter], stdout=subprocess.DEVNULL, stderr=err, cwd="/"
        )
    try:
        url = metrics_url(proc, log)
        yield proc, log, lambda: url
    finally:
        if proc.poll() is None:
            for pid in (own / "cgroup.procs").read_text().split() if pidns else []:
                os.kill(int(pid), signal.SIGTERM)  # the agent itself, not nsenter
            if pidns is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        newroot.rmdir()  # the tmpfs was the namespace's: the directory is empty
        for _ in range(100):  # the agent has exited: its cgroup empties
            try:
                own.rmdir()
                break
            except OSError:
                time.sleep(0.05)


def _reviews(tb: Any) -> dict[str, Any]:
    server = tb.state.server
    ids = {c: container_id_of_name(Path(p).name) for c, p in server.cgroups.items()}
    return pod_json(
        "reviews-1",
        "shop",
        server.uid,
        {c: f"containerd://{i}" for c, i in ids.items()},
        annotations=ISTIO,
    )


def _ready_and_counts(
    tb: Any, tmp_path: Path, pidns: int | None = None, n: int = 23
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Start the agent as deployed; Ready within 30 s; exactly ``n`` requests counted."""
    with api_server() as api:
        api.put(_reviews(tb))
        (tmp_path / "kube").mkdir()
        kubeconfig = api.kubeconfig(tmp_path / "kube" / "config")
        t0 = time.monotonic()
        with deployed_agent(tmp_path, kubeconfig, pidns=pidns) as (proc, log, url):
            while http_get(url() + "/readyz")[0] != 200:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() - t0 < 30, (http_get(url() + "/readyz"), log.read_text())
                time.sleep(0.1)
            ready_s = time.monotonic() - t0
            print(f"ready after {ready_s:.1f} s")
            text = log.read_text()
            # the host had no headers: the image's tree, merged in the pod's /tmp
            assert "BCC_KERNEL_SOURCE=/tmp/" in text, text
            key = (
                "smp_sidecar_requests_total",
                (
                    ("k8s_container_name", "istio-proxy"),
                    ("k8s_namespace_name", "shop"),
                    ("k8s_pod_name", "reviews-1"),
                    ("smp_mesh_type", "ISTIO"),
                ),
            )
            deadline = time.monotonic() + 30
            while key not in scrape(url()):
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            assert [r["status"] for r in send_requests(tb, n, f"k{n}")] == [200] * n
            while scrape(url()).get(key) != n:
                assert time.monotonic() < deadline, (scrape(url()).get(key), log.read_text())
                time.sleep(0.2)
            time.sleep(1.0)  # two more snapshots: nothing counted twice
            m = scrape(url())
            assert m[key] == n
            assert m["smp_agent_up", (("k8s_node_name", "node-a"), ("reason", "ready"))] == 1
            assert m["smp_probe_events_dropped_total", (("k8s_node_name", "node-a"),)] == 0
        assert proc.returncode == 0, log.read_text()
        assert "Traceback" not in log.read_text()
        return m


def _wait_for_sample(
    proc: subprocess.Popen[bytes], log: Path, url: str, key: Any, deadline: float
) -> None:
    """Until /metrics has the sample ``key`` (name, labels); fails if the agent exits first."""
    while key not in scrape(url):
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, (http_get(url + "/readyz"), log.read_text())
        time.sleep(0.1)


def test_ready_in_30_s_and_counts_requests(
    testbed_factory: Callable[..., Any], tmp_path: Path
) -> None:
    _ready_and_counts(testbed_factory(), tmp_path)


@contextmanager
def pid_namespace() -> Iterator[int]:
    """A PID namespace below the initial one, as a kind/k3d/minikube node container is:
    ``unshare --pid --fork --mount-proc``; yields the PID (here) of its init process. Killing
    unshare kills that init (``--kill-child``), and with it every process of the namespace."""
    holder = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "sleep", "600"]
    )
    children = Path(f"/proc/{holder.pid}/task/{holder.pid}/children")
    deadline = time.monotonic() + 10
    while not children.read_text().split():
        assert time.monotonic() < deadline, "unshare never forked"
        time.sleep(0.01)
    try:
        yield int(children.read_text().split()[0])
    finally:
        holder.kill()  # unshare --fork waits out a SIGTERM
        holder.wait(timeout=10)


@pytest.fixture
def child_pid_namespace() -> Iterator[int]:
    with pid_namespace() as init:
        yield init


def test_node_is_a_container_counts_requests_in_its_pid_namespace(
    testbed_factory: Callable[..., Any],
    tmp_path: Path,
    child_pid_namespace: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """kind/k3d/minikube: the node is a container, so the agent (hostPID: the node's PID
    namespace) and the pods live in a child PID namespace; each container (Envoy, the app)
    has its own namespace below that one, as runc makes it, its process PID 1 there. The
    agent's /proc and the cgroups' process lists give PIDs of the node's namespace; BPF sees
    the kernel's. Every request is counted (before the probe's namespace translation: 0,
    and Ready)."""
    from profiler.testbed import netns
    from profiler.testbed.node import Testbed

    def spawn(self: Testbed, pod: Any, container: str, argv: list[str], out: Path,
              err: Path, mode: str = "wb") -> subprocess.Popen[bytes]:  # fmt: skip
        # the testbed's own spawn, in a container's PID namespace under the node's: nsenter
        # and unshare fork into them and stay outside the pod's cgroup; the shell enters it
        procs = Path(pod.cgroups[container]) / "cgroup.procs"
        into = ["nsenter", f"--target={child_pid_namespace}", "--pid", "--"]
        into += ["unshare", "--pid", "--fork", "--kill-child", "--"]
        wrapper = ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(procs)]
        with open(out, mode) as o, open(err, mode) if err != out else o as e:
            p = subprocess.Popen([*into, *wrapper, *netns.exec_prefix(pod.netns), *argv],
                                 stdin=subprocess.DEVNULL, stdout=o, stderr=e,
                                 start_new_session=True)  # fmt: skip
        self._procs.append(p)
        return p

    monkeypatch.setattr(Testbed, "_spawn", spawn)
    tb = testbed_factory()
    server = tb.state.server
    node_ns = os.stat(f"/proc/{child_pid_namespace}/ns/pid").st_ino
    seen = set()
    for container in ("istio-proxy", "app"):  # really there: PID 1 of its own namespace
        (pid,) = [
            int(x) for x in (Path(server.cgroups[container]) / "cgroup.procs").read_text().split()
        ]
        seen.add(os.stat(f"/proc/{pid}/ns/pid").st_ino)
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        nstgid = next(ln for ln in status if ln.startswith("NStgid:")).split()
        assert len(nstgid) == 4 and nstgid[-1] == "1", nstgid  # kernel, node, container
    assert len(seen) == 2 and node_ns not in seen
    _ready_and_counts(tb, tmp_path, pidns=child_pid_namespace, n=23)


def test_without_cap_perfmon_it_stays_up_and_says_why(
    testbed_factory: Callable[..., Any], tmp_path: Path
) -> None:
    tb = testbed_factory()
    with api_server() as api:
        api.put(_reviews(tb))
        (tmp_path / "kube").mkdir()
        kubeconfig = api.kubeconfig(tmp_path / "kube" / "config")
        with deployed_agent(tmp_path, kubeconfig, drop={"PERFMON"}) as (proc, log, url):
            assert http_get(url() + "/healthz")[0] == 200  # at once
            deadline = time.monotonic() + 30
            up = ("k8s_node_name", "node-a"), ("reason", "capability_missing")
            while ("smp_agent_up", up) not in scrape(url()):  # the sample, not its HELP
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            code, why = http_get(url() + "/readyz")
            assert code == 503 and "cannot load the probes" in why, why
            assert "CAP_PERFMON" in why  # the capability check's own words
            m = scrape(url())
            assert m["smp_agent_up", up] == 0
            assert m["smp_probe_load_failures_total", ()] >= 1
            time.sleep(3)  # it stays up, alive, and keeps saying so
            assert proc.poll() is None, log.read_text()
            assert http_get(url() + "/healthz")[0] == 200
            assert http_get(url() + "/readyz")[0] == 503
        assert proc.returncode == 0, log.read_text()
        assert "Traceback" not in log.read_text()


def test_without_the_nodes_pid_namespace_it_says_why_instead_of_counting_zero(
    testbed_factory: Callable[..., Any],
    tmp_path: Path,
    child_pid_namespace: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No hostPID (or a namespace beside the node's): the pods' cgroups list their processes
    as 0, /proc has none of them. The agent must not be Ready counting zero: /readyz 503 and
    ``smp_agent_up{reason="pids_not_visible"}`` naming the container and hostPID."""
    from profiler.testbed.node import Testbed

    original = Testbed._spawn

    def spawn(self: Testbed, pod: Any, container: str, argv: list[str], out: Path,
              err: Path, mode: str = "wb") -> subprocess.Popen[bytes]:  # fmt: skip
        into = ["nsenter", f"--target={child_pid_namespace}", "--pid", "--"]
        return original(self, pod, container, [*into, *argv], out, err, mode)

    monkeypatch.setattr(Testbed, "_spawn", spawn)
    tb = testbed_factory()
    # the agent's own namespace, a sibling of the pods'
    with pid_namespace() as agent_ns, api_server() as api:
        api.put(_reviews(tb))
        (tmp_path / "kube").mkdir()
        kubeconfig = api.kubeconfig(tmp_path / "kube" / "config")
        with deployed_agent(tmp_path, kubeconfig, pidns=agent_ns) as (proc, log, url):
            up = ("k8s_node_name", "node-a"), ("reason", "pids_not_visible")
            deadline = time.monotonic() + 30
            _wait_for_sample(proc, log, url(), ("smp_agent_up", up), deadline)
            code, why = http_get(url() + "/readyz")
            assert code == 503, why
            assert "shop/reviews-1/istio-proxy" in why and "hostPID" in why, why
            assert scrape(url())["smp_agent_up", up] == 0
        assert proc.returncode == 0, log.read_text()
        assert "Traceback" not in log.read_text()
        assert "cannot trace PID 0" not in log.read_text()


def test_a_blind_probe_is_not_ready_and_says_why(
    testbed_factory: Callable[..., Any],
    tmp_path: Path,
    child_pid_namespace: int,
) -> None:
    """The probe's start-up self-test fails (here: the agent wrongly believes its PID
    namespace is the kernel's, so it would filter on PIDs BPF never sees): the agent stays
    up, not Ready, with the self-test's sentence, instead of Ready counting zero."""
    tb = testbed_factory()
    wrong = (
        "import os, profiler.probes.sidecar as s\n"
        "s.INIT_PID_NS_INO = os.stat('/proc/self/ns/pid').st_ino"
    )
    with api_server() as api:
        api.put(_reviews(tb))
        (tmp_path / "kube").mkdir()
        kubeconfig = api.kubeconfig(tmp_path / "kube" / "config")
        with deployed_agent(tmp_path, kubeconfig, pidns=child_pid_namespace, prelude=wrong) as (
            proc,
            log,
            url,
        ):
            deadline = time.monotonic() + 30
            up = ("k8s_node_name", "node-a"), ("reason", "probe_load_failed")
            _wait_for_sample(proc, log, url(), ("smp_agent_up", up), deadline)
            code, why = http_get(url() + "/readyz")
            assert code == 503, why
            assert "did not see this process's own socket traffic" in why, why
            assert http_get(url() + "/healthz")[0] == 200
            assert scrape(url())["smp_probe_load_failures_total", ()] >= 1
        assert proc.returncode == 0, log.read_text()
        assert "Traceback" not in log.read_text()
