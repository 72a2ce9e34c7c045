"""Build, check and tear down one local node: two pods, the app, Envoy sidecars, capture.

``Testbed.up(cfg)`` either returns a running node or raises with everything it made removed.
``down`` works from names derived from the testbed's name, so it also cleans a crashed run.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from profiler.capabilities import Check, effective_caps
from profiler.errors import PermissionDenied, SmpError, TestbedError
from profiler.testbed import cgroups, envoy, netns
from profiler.testbed.accesslog import AccessLogEntry, read_access_log
from profiler.testbed.config import (
    ADMIN_PORT,
    INBOUND_PORT,
    OUTBOUND_PORT,
    Names,
    TestbedConfig,
    container_id,
    pod_uid,
)
from profiler.testbed.iptables import rules
from profiler.testbed.state import STATE_FILE, PodState, TestbedState, read_state

PODS = ("server", "client")
_TOOLS = ("ip", "iptables-restore", "nsenter", "setpriv")
_CAPS = (12, 21)  # CAP_NET_ADMIN, CAP_SYS_ADMIN


def _containers(cfg_sidecar: bool, pod: str, client_sidecar: bool) -> list[str]:
    if pod == "server":
        return ["app", "istio-proxy"] if cfg_sidecar else ["app"]
    return ["client", "istio-proxy"] if client_sidecar else ["client"]


def _wait(what: str, ok: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path,
          timeout: float, why: Callable[[str], str]) -> None:  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = log.read_text(errors="replace") if log.exists() else ""
            raise TestbedError(f"{what} exited at start: {why(text)}")
        if ok():
            return
        time.sleep(0.02)
    raise TestbedError(f"{what} not ready after {timeout:.0f}s (see {log})")


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:240] if lines else "no output"


class Testbed:
    """A running (or described) local node; ``state`` is what testbed.json holds."""

    __test__ = False  # not a pytest test class

    def __init__(self, state: TestbedState) -> None:
        self.state = state
        self._procs: list[subprocess.Popen[bytes]] = []

    # ----- building -------------------------------------------------------------------

    @classmethod
    def up(cls, cfg: TestbedConfig) -> Testbed:
        """Build the node; on any failure remove what was made and raise one clear error."""
        cfg.validate()
        caps = effective_caps()
        if os.geteuid() != 0 or not all(caps & (1 << c) for c in _CAPS):
            raise PermissionDenied(
                "the testbed needs root with CAP_NET_ADMIN and CAP_SYS_ADMIN "
                "(network namespaces, iptables, cgroups): run with sudo"
            )
        for tool in _TOOLS:
            if shutil.which(tool) is None:
                raise TestbedError(f"{tool} is not installed (make setup)")
        binary = envoy.envoy_binary() if cfg.sidecar == "envoy" or cfg.client_sidecar else None
        state_dir = cfg.resolved_state_dir.absolute()
        state_dir.mkdir(parents=True, exist_ok=True)
        _refuse_leftovers(cfg.name, state_dir)
        tb = cls(_initial_state(cfg, state_dir))
        t0 = time.monotonic()
        try:
            tb.state.write()
            tb._build(cfg, binary)
        except BaseException as e:
            with contextlib.suppress(Exception):
                tb.down()
            if isinstance(e, SmpError):
                raise
            if isinstance(e, OSError):
                raise TestbedError(f"testbed up failed: {e}") from None
            raise
        tb.state.status = "up"
        tb.state.up_seconds = round(time.monotonic() - t0, 3)
        tb.state.write()
        return tb

    def _build(self, cfg: TestbedConfig, binary: Path | None) -> None:
        st, names = self.state, Names(cfg.name)
        root = cgroups.unified_root()
        created: list[str] = []
        for pod in (st.server, st.client):
            for cg in pod.cgroups.values():
                created += [str(p) for p in cgroups.make_dirs(Path(cg), root)]
                st.created_cgroups = created
        st.write()
        prefix = ipaddress.IPv4Network(st.subnet).prefixlen
        netns.create_bridge(st.bridge, f"{st.bridge_ip}/{prefix}")
        for pod in (st.server, st.client):
            netns.create_pod_netns(pod.netns, st.bridge, pod.veth_host,
                                   names.veth_peer(pod.name), f"{pod.ip}/{prefix}")  # fmt: skip
        if cfg.sidecar == "envoy":
            self._capture(st.server.netns, inbound=True)
        if cfg.client_sidecar:
            self._capture(st.client.netns, inbound=False)
        tls = self._certs(Path(st.state_dir)) if cfg.mtls else {}
        self._start_app(cfg)
        if binary is not None:
            st.envoy_version = _envoy_version(binary)
        for pod, inbound in ((st.server, True), (st.client, False)):
            if pod.envoy_pid is None and "istio-proxy" in pod.cgroups and binary is not None:
                config = envoy.bootstrap(pod.name, pod.ip, inbound=inbound, app_port=cfg.app_port,
                                         h2c_port=cfg.h2c_port, grpc_port=cfg.grpc_port,
                                         echo_port=cfg.echo_port,
                                         tls=tls.get(pod.name), patch=cfg.envoy_patch,
                                         fault_delay_s=cfg.fault_delay_s)  # fmt: skip
                self._start_envoy(pod, binary, config, cfg)

    def _capture(self, ns: str, inbound: bool) -> None:
        netns.run([*netns.exec_prefix(ns), "iptables-restore"], input_text=rules(inbound))

    def _certs(self, state_dir: Path) -> dict[str, dict[str, str]]:
        from profiler.testbed import certs

        out = state_dir / "pki"
        out.mkdir(exist_ok=True)
        ca = certs.make_ca(out)
        return {p: certs.make_leaf(out, ca, p, "cluster.local") for p in PODS}

    def _spawn(self, pod: PodState, container: str, argv: list[str], out: Path,
               err: Path, mode: str = "wb") -> subprocess.Popen[bytes]:  # fmt: skip
        procs = Path(pod.cgroups[container]) / "cgroup.procs"
        wrapper = ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(procs)]
        with open(out, mode) as o, open(err, mode) if err != out else o as e:  # fresh logs
            p = subprocess.Popen([*wrapper, *netns.exec_prefix(pod.netns), *argv],
                                 stdin=subprocess.DEVNULL, stdout=o, stderr=e,
                                 start_new_session=True)  # fmt: skip
        self._procs.append(p)
        return p

    def _start_app(self, cfg: TestbedConfig) -> None:
        pod, d = self.state.server, Path(self.state.state_dir)
        log = d / "app.log"
        argv = [sys.executable, "-m", "profiler.testbed.app", "--port", str(cfg.app_port),
                "--delay", f"{cfg.app_delay_s}s", "--size", str(cfg.response_size)]  # fmt: skip
        ports = [cfg.app_port]
        if cfg.h2c_port is not None:
            argv += ["--h2c-port", str(cfg.h2c_port)]
            ports.append(cfg.h2c_port)
        for flag, port in (("--grpc-port", cfg.grpc_port), ("--echo-port", cfg.echo_port)):
            if port is not None:
                argv += [flag, str(port)]
                ports.append(port)
        p = self._spawn(pod, "app", argv, log, log)
        pod.app_pid = p.pid
        self.state.write()

        def listening() -> bool:
            for port in ports:
                try:
                    with netns.socket_in(pod.netns) as s:
                        s.settimeout(0.5)
                        if s.connect_ex(("127.0.0.1", port)) != 0:
                            return False
                except TestbedError:
                    return False
            return True

        _wait("the app", listening, p, log, cfg.ready_timeout_s, _last_line)

    def _start_envoy(self, pod: PodState, binary: Path, config: dict[str, Any],
                     cfg: TestbedConfig, mode: str = "wb") -> None:  # fmt: skip
        d = Path(self.state.state_dir)
        assert pod.access_log is not None and pod.envoy_log is not None
        (d / f"{pod.name}-envoy.json").write_text(_json(config))
        argv = envoy.command(binary, config, cfg.concurrency)
        p = self._spawn(pod, "istio-proxy", argv, Path(pod.access_log), Path(pod.envoy_log),
                        mode)  # fmt: skip
        pod.envoy_pid = p.pid
        self.state.write()

        def ready() -> bool:
            try:
                status, body = netns.http_get(pod.netns, "127.0.0.1", ADMIN_PORT, "/ready")
            except OSError:
                return False
            return status == 200 and body.strip() == b"LIVE"  # Envoy, not the app on its port

        what = f"Envoy ({pod.name} sidecar)"
        _wait(what, ready, p, Path(pod.envoy_log), cfg.ready_timeout_s, envoy.startup_error)

    # ----- using ----------------------------------------------------------------------

    @classmethod
    def load(cls, state_dir: Path) -> Testbed:
        return cls(read_state(state_dir))

    def client_cmd(self, argv: list[str]) -> list[str]:
        """``argv`` run in the client pod: its netns and its ``client`` container's cgroup."""
        procs = Path(self.state.client.cgroups["client"]) / "cgroup.procs"
        wrapper = ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(procs)]
        return [*wrapper, *netns.exec_prefix(self.state.client.netns), *argv]

    def run_in_client(self, argv: list[str], **popen_kw: Any) -> subprocess.CompletedProcess[Any]:
        popen_kw.setdefault("timeout", 120)
        return subprocess.run(self.client_cmd(argv), check=False, **popen_kw)

    def restart_envoy(self, pod: str = "server", ready_timeout_s: float = 20.0) -> int:
        """Kill a pod's Envoy (SIGKILL, as a crashed sidecar container) and start it again
        with the same bootstrap and options in the same cgroup; the new PID once it is ready.
        Its logs are appended to."""
        p = self.state.server if pod == "server" else self.state.client
        if p.envoy_pid is None:
            raise TestbedError(f"the {pod} pod has no Envoy sidecar")
        old = p.envoy_pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(old, 9)
        for proc in [x for x in self._procs if x.pid == old]:
            proc.wait(timeout=10)  # ours: reap it
            self._procs.remove(proc)
        deadline = time.monotonic() + 10
        while _running(old) and time.monotonic() < deadline:  # another process's child
            time.sleep(0.02)
        config_file = Path(self.state.state_dir) / f"{p.name}-envoy.json"
        try:
            config = json.loads(config_file.read_text())
        except (OSError, ValueError) as e:
            raise TestbedError(f"cannot read the Envoy bootstrap {config_file}: {e}") from None
        cfg = TestbedConfig(name=self.state.name, concurrency=self.state.concurrency,
                            ready_timeout_s=ready_timeout_s)  # fmt: skip
        self._start_envoy(p, envoy.envoy_binary(), config, cfg, mode="ab")
        assert p.envoy_pid is not None
        return p.envoy_pid

    def envoy_admin(self, path: str, pod: str = "server") -> str:
        """GET a path of a sidecar's admin interface (e.g. ``/stats?filter=ssl``)."""
        p = self.state.server if pod == "server" else self.state.client
        if p.envoy_pid is None:
            raise TestbedError(f"the {pod} pod has no Envoy sidecar")
        status, body = netns.http_get(p.netns, "127.0.0.1", ADMIN_PORT, path)
        if status != 200:
            raise TestbedError(f"Envoy admin {path} answered {status}")
        return body.decode()

    def wait_access_log(
        self, n: int, pod: str = "server", timeout: float = 5.0
    ) -> list[AccessLogEntry]:
        """The sidecar's access log once it has ``n`` entries (Envoy flushes every 200 ms), or
        what it has after ``timeout``."""
        p = self.state.server if pod == "server" else self.state.client
        if p.access_log is None:
            raise TestbedError(f"the {pod} pod has no Envoy sidecar, hence no access log")
        deadline = time.monotonic() + timeout
        while True:
            entries = read_access_log(p.access_log)
            if len(entries) >= n or time.monotonic() > deadline:
                return entries
            time.sleep(0.05)

    def app_stats(self) -> dict[str, int]:
        """The app's own counters (GET /__stats on 127.0.0.1, which no sidecar intercepts)."""
        import json

        port = self.state.ports["app"]
        _, body = netns.http_get(self.state.server.netns, "127.0.0.1", port, "/__stats")
        doc: dict[str, int] = json.loads(body)
        return doc

    def status(self) -> list[Check]:
        """Every part of the node, checked now."""
        st, checks = self.state, []
        checks.append(Check("bridge", netns.link_exists(st.bridge), st.bridge))
        for pod in (st.server, st.client):
            checks.append(Check(f"{pod.name}.netns", netns.netns_exists(pod.netns), pod.netns))
            for c, cg in pod.cgroups.items():
                checks.append(Check(f"{pod.name}.{c}.cgroup", Path(cg).is_dir(), cg))
            for what, pid, c in (("app", pod.app_pid, "app"), ("envoy", pod.envoy_pid,
                                                              "istio-proxy")):  # fmt: skip
                if pid is not None:
                    ok, detail = _pid_in(pid, pod.cgroups[c])
                    checks.append(Check(f"{pod.name}.{what}", ok, detail))
            if pod.envoy_pid is not None:
                try:
                    ok = netns.http_get(pod.netns, "127.0.0.1", ADMIN_PORT, "/ready")[0] == 200
                    checks.append(Check(f"{pod.name}.envoy.ready", ok, "admin /ready"))
                except OSError as e:
                    checks.append(Check(f"{pod.name}.envoy.ready", False, str(e)))
        return checks

    # ----- tearing down ---------------------------------------------------------------

    def down(self) -> list[str]:
        """Remove everything; safe to call twice. Returns what was removed.

        A state dir given by the caller keeps its logs (testbed.json goes); the default one
        under /run/smp-profiler (a tmpfs) is removed whole, access logs included.
        """
        removed = teardown(self.state.name, self.state)
        for p in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=2)
        self._procs.clear()
        d = Path(self.state.state_dir)
        if d == TestbedConfig(name=self.state.name).resolved_state_dir and d.is_dir():
            shutil.rmtree(d, ignore_errors=True)
            removed.append(f"state dir {d}")
        else:
            with contextlib.suppress(FileNotFoundError):
                (d / STATE_FILE).unlink()
        return removed


def teardown(name: str, state: TestbedState | None = None) -> list[str]:
    """Remove every object a testbed called ``name`` can have made (from names, not state)."""
    names, removed = Names(name), []
    root = cgroups.unified_root()
    for pod in PODS:
        uid = pod_uid(name, pod)
        pod_cg = cgroups.pod_slice(root, uid)
        scopes = [cgroups.container_scope(pod_cg, container_id(name, pod, c))
                  for c in ("app", "client", "istio-proxy")]  # fmt: skip
        for cg in scopes:
            if cgroups.kill_all(cg):
                removed.append(f"processes of {cg.name}")
        for pid in netns.netns_pids(names.netns(pod)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
                removed.append(f"process {pid} in {names.netns(pod)}")
        for cg in [*scopes, pod_cg]:
            if cgroups.remove(cg):
                removed.append(f"cgroup {cg.relative_to(root)}")
        if netns.delete_netns(names.netns(pod)):
            removed.append(f"netns {names.netns(pod)}")
        if netns.delete_link(names.veth_host(pod)):
            removed.append(f"veth {names.veth_host(pod)}")
    if netns.delete_link(names.bridge):
        removed.append(f"bridge {names.bridge}")
    for d in reversed(state.created_cgroups if state else []):
        if cgroups.remove_if_empty(Path(d)):
            removed.append(f"cgroup {Path(d).relative_to(root)}")
    return removed


def leftovers(name: str) -> list[str]:
    """Kernel objects of a testbed called ``name`` that exist now."""
    names, root, found = Names(name), cgroups.unified_root(), []
    if netns.link_exists(names.bridge):
        found.append(f"bridge {names.bridge}")
    for pod in PODS:
        if netns.netns_exists(names.netns(pod)):
            found.append(f"netns {names.netns(pod)}")
        if netns.link_exists(names.veth_host(pod)):
            found.append(f"veth {names.veth_host(pod)}")
        if cgroups.pod_slice(root, pod_uid(name, pod)).exists():
            found.append(f"cgroup of the {pod} pod")
    return found


def _refuse_leftovers(name: str, state_dir: Path) -> None:
    found = leftovers(name)
    if found:
        raise TestbedError(
            f"a testbed named '{name}' is already up or left over from a crashed run "
            f"({found[0]}): run 'smp-profiler testbed down --name {name}' first"
        )


def _initial_state(cfg: TestbedConfig, state_dir: Path) -> TestbedState:
    net, names = cfg.network, Names(cfg.name)
    for iface, addr in netns.host_addresses():
        if ipaddress.IPv4Interface(addr).ip in net:
            raise TestbedError(f"subnet {net} is already used by {iface} ({addr}): "
                               "choose another --name")  # fmt: skip
    hosts = list(net.hosts())
    root = cgroups.unified_root()
    sidecar = cfg.sidecar == "envoy"
    pods = {}
    for pod, ip in zip(PODS, (hosts[1], hosts[2]), strict=True):
        uid = pod_uid(cfg.name, pod)
        has_envoy = sidecar if pod == "server" else cfg.client_sidecar
        cgs = {c: str(cgroups.container_scope(cgroups.pod_slice(root, uid),
                                              container_id(cfg.name, pod, c)))
               for c in _containers(sidecar, pod, cfg.client_sidecar)}  # fmt: skip
        pods[pod] = PodState(
            name=pod, netns=names.netns(pod), ip=str(ip), uid=uid,
            veth_host=names.veth_host(pod), cgroups=cgs,
            access_log=str(state_dir / f"{pod}-access.log") if has_envoy else None,
            envoy_log=str(state_dir / f"{pod}-envoy.log") if has_envoy else None,
            admin=f"127.0.0.1:{ADMIN_PORT}" if has_envoy else None,
        )  # fmt: skip
    url = f"http://{pods['server'].ip}:{cfg.app_port}/"
    pods["server"].url = url
    ports = {"app": cfg.app_port, "inbound": INBOUND_PORT, "outbound": OUTBOUND_PORT,
             "admin": ADMIN_PORT}  # fmt: skip
    if cfg.h2c_port is not None:
        pods["server"].h2c_url = f"http://{pods['server'].ip}:{cfg.h2c_port}/"
        ports["h2c"] = cfg.h2c_port
    for what, port in (("grpc", cfg.grpc_port), ("echo", cfg.echo_port)):
        if port is not None:
            ports[what] = port
    for p in pods.values():
        if p.access_log:
            Path(p.access_log).write_bytes(b"")  # a fresh log per up
    return TestbedState(
        name=cfg.name, status="building", state_dir=str(state_dir), subnet=str(net),
        bridge=names.bridge, bridge_ip=str(hosts[0]), sidecar=cfg.sidecar,
        client_sidecar=cfg.client_sidecar, mtls=cfg.mtls, concurrency=cfg.concurrency,
        app_delay_s=cfg.app_delay_s, response_size=cfg.response_size,
        ports=ports,
        server=pods["server"], client=pods["client"], url=url,
        access_log=pods["server"].access_log,
    )  # fmt: skip


def _running(pid: int) -> bool:
    """A process that has not exited (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _pid_in(pid: int, cg: str) -> tuple[bool, str]:
    try:
        text = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False, f"pid {pid} is not running"
    rel = "/" + str(Path(cg).relative_to(cgroups.unified_root()))
    ok = any(line.startswith("0::") and line[3:] == rel for line in text.splitlines())
    return ok, f"pid {pid} in {rel}" if ok else f"pid {pid} is not in {rel}"


def _envoy_version(binary: Path) -> str | None:
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                             timeout=10).stdout  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    parts = out.split("version:")
    return parts[1].strip().split("/")[1] if len(parts) > 1 and "/" in parts[1] else None


def _json(doc: dict[str, Any]) -> str:
    import json

    return json.dumps(doc, indent=2) + "\n"
