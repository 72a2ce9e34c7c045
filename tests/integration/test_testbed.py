"""The local testbed on this machine: real netns, veth, bridge, cgroup v2, iptables, Envoy."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _testbed import send_requests

from profiler.errors import TestbedError
from profiler.testbed import Testbed, envoy_binary, leftovers
from profiler.testbed.cgroups import unified_root
from profiler.testbed.config import Names, derived_subnet
from profiler.testbed.envoy import bootstrap

pytestmark = [pytest.mark.testbed, pytest.mark.envoy]
N = 23
CLI = [sys.executable, "-m", "profiler.cli"]
SCOPE = re.compile(
    r"^0::/kubepods\.slice/kubepods-burstable\.slice/kubepods-burstable-pod[0-9a-f_]{36}\.slice"
    r"/cri-containerd-[0-9a-f]{64}\.scope$"
)
Factory = Callable[..., Testbed]


def _host_snapshot(name: str) -> dict[str, list[str]]:
    """Host netns, links and iptables that could be this testbed's (other developers may
    build their own testbeds on the same machine meanwhile, so only ours are compared)."""
    names = Names(name)
    ours = (f"smp-{name}-", names.bridge, names.veth_host("server"), names.veth_host("client"),
            "ISTIO", str(derived_subnet(name).network_address)[:-1])  # fmt: skip

    def out(*argv: str) -> list[str]:
        text = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        return [ln for ln in text.splitlines() if any(o in ln for o in ours)]

    return {
        "netns": out("ip", "netns", "list"),
        "links": out("ip", "-o", "link", "show"),
        "addresses": out("ip", "-o", "addr", "show"),
        "iptables": out("iptables-save") + out("iptables-save", "-t", "nat"),
    }


def _cgroups_of(pods: list[str]) -> list[str]:
    root = unified_root() / "kubepods.slice"
    if not root.exists():
        return []
    return [str(p) for p in root.rglob("*") if p.is_dir() and any(u in str(p) for u in pods)]


def test_envoy_accepts_generated_configs() -> None:
    tls = {"ca": "x", "cert": "x", "key": "x"}
    for inbound in (True, False):
        cfg = bootstrap("server", "10.0.0.2", inbound=inbound, app_port=8080)
        r = subprocess.run(
            [str(envoy_binary()), "--mode", "validate", "--config-yaml", json.dumps(cfg)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert r.returncode == 0, r.stdout[-500:] + r.stderr[-500:]
    bad = bootstrap("server", "10.0.0.2", inbound=True, app_port=8080, tls=tls)
    r = subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "--config-yaml", json.dumps(bad)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode != 0  # not PEM: Envoy really reads the inline certificates


def test_23_requests_through_both_sidecars(testbed_factory: Factory) -> None:
    name = f"t{secrets.token_hex(3)}"
    before = _host_snapshot(name)
    assert before == {"netns": [], "links": [], "addresses": [], "iptables": []}
    t0 = time.monotonic()
    tb = testbed_factory(name=name, client_sidecar=True, app_delay_s=0.001)
    up_s = time.monotonic() - t0
    st = tb.state
    assert st.status == "up" and Path(st.state_dir, "testbed.json").is_file()
    assert json.loads(Path(st.state_dir, "testbed.json").read_text())["url"] == st.url
    assert all(c.ok for c in tb.status()), [c for c in tb.status() if not c.ok]
    during = _host_snapshot(name)
    assert len(during["netns"]) == 2 and len(during["links"]) == 3  # bridge + 2 veths
    assert during["iptables"] == []  # the capture lives in the pods' netns, not the host's
    # kubelet-looking cgroups, each process in its own container's scope
    for pid in (st.server.app_pid, st.server.envoy_pid, st.client.envoy_pid):
        assert pid is not None
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        assert any(SCOPE.match(ln) for ln in lines), lines
    assert Path(f"/proc/{st.server.app_pid}/comm").read_text().strip() == "smp-app"
    status = Path(f"/proc/{st.server.envoy_pid}/status").read_text()
    assert re.search(r"^Uid:\s+1337\s+1337", status, re.M)  # like istio-proxy
    assert re.search(r"^CapEff:\s+0+$", status, re.M)

    replies = send_requests(tb, N, "both")
    assert [r["status"] for r in replies] == [200] * N
    assert [r["echo"] for r in replies] == [r["id"] for r in replies]
    assert all(r["server"] == "envoy" and r["len"] == 128 for r in replies)
    assert tb.app_stats()["requests"] == N

    for pod, direction in (("server", "inbound"), ("client", "outbound")):
        entries = tb.wait_access_log(N, pod=pod)
        assert len(entries) == N
        assert [e.request_id for e in entries] == [f"both-{i}" for i in range(N)]
        for e in entries:
            assert e.direction == direction and e.response_code == 200 and e.path == "/"
            assert e.request_proxy_us is not None and e.request_proxy_us >= 0
            assert e.response_proxy_us is not None and e.response_proxy_us >= 0
            assert e.upstream_us is not None and e.total_us is not None
            assert e.upstream_us >= 1000  # the app's 1 ms service time is upstream of Envoy
            assert e.total_us >= e.upstream_us
    t0 = time.monotonic()
    tb.down()
    down_s = time.monotonic() - t0
    tb.down()  # twice is fine
    assert _host_snapshot(name) == before
    assert _cgroups_of([st.server.uid.replace("-", "_"), st.client.uid.replace("-", "_")]) == []
    for d in st.created_cgroups:  # the shared parents go too, unless another pod still uses them
        assert not Path(d).exists() or any(p.is_dir() for p in Path(d).iterdir())
    assert not Path(st.state_dir, "testbed.json").exists()
    print(f"\ntestbed up {up_s:.2f}s, down {down_s:.2f}s")


def test_baseline_has_no_envoy_in_the_path(testbed_factory: Factory) -> None:
    tb = testbed_factory(sidecar="none")
    st = tb.state
    assert st.server.envoy_pid is None and st.client.envoy_pid is None
    assert st.access_log is None and list(st.server.cgroups) == ["app"]
    replies = send_requests(tb, N, "base")
    assert [r["status"] for r in replies] == [200] * N
    assert [r["echo"] for r in replies] == [r["id"] for r in replies]
    assert all(r["server"] is None for r in replies)  # Envoy adds "server: envoy"
    assert tb.app_stats()["requests"] == N
    assert list(Path(st.state_dir).glob("*access.log")) == []
    nat = subprocess.run(
        ["ip", "netns", "exec", st.server.netns, "iptables-save", "-t", "nat"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "REDIRECT" not in nat
    envoys = [p for p in Path("/proc").glob("[0-9]*") if _comm(p) == "envoy"]
    in_pods = [p for p in envoys if _netns_of(p) in {_netns_inode(st.server.netns),
                                                      _netns_inode(st.client.netns)}]  # fmt: skip
    assert in_pods == []


def _comm(p: Path) -> str:
    try:
        return (p / "comm").read_text().strip()
    except OSError:
        return ""


def _netns_of(p: Path) -> int:
    try:
        return os.stat(p / "ns" / "net").st_ino
    except OSError:
        return -1


def _netns_inode(name: str) -> int:
    return os.stat(f"/run/netns/{name}").st_ino


def test_mtls_between_sidecars(testbed_factory: Factory) -> None:
    tb = testbed_factory(client_sidecar=True, mtls=True)
    replies = send_requests(tb, 5, "tls")
    assert [r["status"] for r in replies] == [200] * 5
    server = tb.envoy_admin("/stats?filter=ssl.handshake")
    client = tb.envoy_admin("/stats?filter=ssl.handshake", pod="client")
    assert int(re.search(r"listener\.0\.0\.0\.0_15006\.ssl\.handshake: (\d+)", server)[1]) >= 1  # type: ignore[index]
    assert int(re.search(r"cluster\.passthrough\.ssl\.handshake: (\d+)", client)[1]) >= 1  # type: ignore[index]
    # plaintext to the server pod (as UID 1337, so the client's capture lets it through) fails
    plain = tb.run_in_client(
        ["setpriv", "--reuid=1337", "--regid=1337", "--clear-groups",
         "curl", "-sS", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}", tb.state.url],
        capture_output=True, text=True,
    )  # fmt: skip
    assert plain.returncode != 0 or plain.stdout != "200"
    # the app's h2c port, HTTP/2 end to end through both sidecars
    assert tb.state.server.h2c_url is not None
    for i in range(3):
        r = tb.run_in_client(
            ["curl", "-sS", "--http2-prior-knowledge", "-H", f"x-request-id: h2c-{i}",
             "-o", "/dev/null", "-w", "%{http_code} %{http_version}", tb.state.server.h2c_url],
            capture_output=True, text=True,
        )  # fmt: skip
        assert (r.returncode, r.stdout) == (0, "200 2"), r.stderr
    entries = tb.wait_access_log(8)
    assert [e.request_id for e in entries] == [f"tls-{i}" for i in range(5)] + [
        f"h2c-{i}" for i in range(3)]  # fmt: skip
    assert {e.protocol for e in entries[5:]} == {"HTTP/2"}
    assert {e.upstream_host for e in entries[5:]} == {"127.0.0.1:8081"}
    assert tb.app_stats()["requests"] == 8


def test_port_in_use_leaves_nothing(testbed_factory: Factory) -> None:
    name = f"t{secrets.token_hex(3)}"
    with pytest.raises(TestbedError) as e:
        testbed_factory(name=name, app_port=15006)  # the app takes Envoy's inbound port first
    msg = str(e.value)
    assert "\n" not in msg and "15006" in msg and "in use" in msg.lower(), msg
    assert leftovers(name) == []


def test_rejected_envoy_config_leaves_nothing(testbed_factory: Factory) -> None:
    name = f"t{secrets.token_hex(3)}"
    patch = {"static_resources": {"clusters": [{"name": "app", "type": "NO_SUCH_TYPE"}]}}
    with pytest.raises(TestbedError) as e:
        testbed_factory(name=name, envoy_patch=patch)
    msg = str(e.value)
    assert "\n" not in msg and "Envoy" in msg and "NO_SUCH_TYPE" in msg, msg
    assert leftovers(name) == []


def test_without_privileges_one_line_and_nothing_made() -> None:
    name = f"t{secrets.token_hex(3)}"
    # root without capabilities, as in an unprivileged container
    r = subprocess.run(
        ["setpriv", "--bounding-set=-all", "--inh-caps=-all", *CLI, "testbed", "up",
         "--name", name, "--state-dir", f"/tmp/smp-{name}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 77 and "CAP_NET_ADMIN" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert leftovers(name) == [] and not Path(f"/tmp/smp-{name}").exists()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)


def test_cli_and_a_crashed_run(tmp_path: Path) -> None:
    name, d = f"t{secrets.token_hex(3)}", str(tmp_path / "state")
    try:
        r = _cli("testbed", "up", "--name", name, "--state-dir", d, "--json", "--app-delay", "1ms")
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["name"] == name and doc["app_delay_s"] == 0.001 and doc["status"] == "up"
        assert _cli("testbed", "status", "--name", name, "--state-dir", d).returncode == 0
        os.kill(doc["server"]["envoy_pid"], signal.SIGKILL)  # a crash
        r = _cli("testbed", "status", "--name", name, "--state-dir", d)
        assert r.returncode == 5 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "server.envoy" in r.stderr
        r = _cli("testbed", "up", "--name", name, "--state-dir", d)
        assert r.returncode == 5 and "Traceback" not in r.stderr
        assert "testbed down --name" in r.stderr and len(r.stderr.strip().splitlines()) == 1
        Path(d, "testbed.json").unlink()  # even without its description
        r = _cli("testbed", "down", "--name", name, "--state-dir", d)
        assert r.returncode == 0 and "removed" in r.stdout, r.stdout + r.stderr
        assert leftovers(name) == []
        r = _cli("testbed", "down", "--name", name, "--state-dir", d)
        assert r.returncode == 0 and "nothing to remove" in r.stdout
        r = _cli("testbed", "up", "--name", name, "--mtls")
        assert r.returncode == 2 and "--client-sidecar" in r.stderr
        # the default state dir is on /run (a tmpfs): down removes it, logs included
        assert _cli("testbed", "up", "--name", name, "--sidecar", "none").returncode == 0
        default = Path(f"/run/smp-profiler/testbed-{name}")
        assert (default / "testbed.json").is_file() and (default / "app.log").is_file()
        assert _cli("testbed", "down", "--name", name).returncode == 0
        assert not default.exists() and leftovers(name) == []
    finally:
        _cli("testbed", "down", "--name", name, "--state-dir", d)
        _cli("testbed", "down", "--name", name)
