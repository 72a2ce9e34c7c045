"""Pure parts of the testbed: units, names, Envoy bootstrap, capture rules, access log, state."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from profiler.errors import BadInputFile, UsageError
from profiler.testbed import TestbedConfig, parse_duration, parse_size, read_access_log
from profiler.testbed.accesslog import parse_line
from profiler.testbed.config import Names, container_id, derived_subnet, pod_uid
from profiler.testbed.envoy import ACCESS_LOG_FORMAT, bootstrap, deep_merge, startup_error
from profiler.testbed.iptables import rules
from profiler.testbed.state import PodState, TestbedState


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1ms", 0.001), ("500us", 0.0005), ("500µs", 0.0005), ("2", 2.0), ("0.25s", 0.25),
     ("1m", 60.0), ("0", 0.0), ("10ns", 1e-8)],
)  # fmt: skip
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "ms", "1h", "-1ms", "1 ms x", "fast"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(UsageError, match="bad duration"):
        parse_duration(text)


def test_parse_size() -> None:
    assert [parse_size(s) for s in ("128", "4k", "4KiB", "1MB", "1mib", "0")] == [
        128, 4096, 4096, 10**6, 1 << 20, 0]  # fmt: skip
    with pytest.raises(UsageError, match="bad size"):
        parse_size("1.5k")


@pytest.mark.parametrize(
    ("kw", "needle"),
    [({"name": "Bad_Name"}, "name"), ({"sidecar": "linkerd"}, "--sidecar"),
     ({"mtls": True}, "--client-sidecar"), ({"concurrency": 0}, "--concurrency"),
     ({"app_delay_s": -1.0}, "--app-delay"), ({"response_size": -1}, "--response-size"),
     ({"subnet": "8.8.8.0/24"}, "private"), ({"subnet": "10.1.1.0/30"}, "/29")],
)  # fmt: skip
def test_config_validation(kw: dict[str, object], needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        TestbedConfig(**kw).validate()  # type: ignore[arg-type]


def test_names_fit_linux_and_differ_by_name() -> None:
    a, b = Names("a-rather-long-name-x"), Names("t2")
    for n in (a, b):
        assert all(
            len(dev) <= 15 for dev in (n.bridge, n.veth_host("server"), n.veth_peer("client"))
        )
    assert a.bridge != b.bridge and a.netns("server") == "smp-a-rather-long-name-x-server"
    assert derived_subnet("t1") == derived_subnet("t1") != derived_subnet("t2")
    assert derived_subnet("t1").is_private and derived_subnet("t1").prefixlen == 24
    assert pod_uid("t1", "server") != pod_uid("t1", "client") != pod_uid("t2", "client")
    assert len(container_id("t1", "server", "app")) == 64
    assert TestbedConfig(name="x").resolved_state_dir == Path("/run/smp-profiler/testbed-x")


def _listener(cfg: dict[str, object], name: str) -> dict[str, object]:
    ls = cfg["static_resources"]["listeners"]  # type: ignore[index]
    return next(x for x in ls if x["name"] == name)  # type: ignore[no-any-return]


def test_bootstrap_server_and_client() -> None:
    server = bootstrap("server", "10.0.0.2", inbound=True, app_port=9090)
    client = bootstrap("client", "10.0.0.3", inbound=False, app_port=9090)
    inbound = _listener(server, "virtualInbound")
    assert inbound["address"]["socket_address"]["port_value"] == 15006  # type: ignore[index]
    assert _listener(client, "virtualOutbound")["address"]["socket_address"]["port_value"] == 15001  # type: ignore[index]
    assert [x["name"] for x in client["static_resources"]["listeners"]] == ["virtualOutbound"]  # type: ignore[index]
    clusters = {c["name"]: c for c in server["static_resources"]["clusters"]}  # type: ignore[index]
    app_addr = clusters["app"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert app_addr["endpoint"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 9090,
    }
    assert clusters["passthrough"]["type"] == "ORIGINAL_DST"
    hcm = inbound["filter_chains"][0]["filters"][0]["typed_config"]  # type: ignore[index]
    assert hcm["preserve_external_request_id"] is True
    assert hcm["request_id_extension"]["typed_config"]["pack_trace_reason"] is False
    fmt = hcm["access_log"][0]["typed_config"]["log_format"]["json_format"]
    assert fmt["request_id"] == "%REQ(X-REQUEST-ID)%" and fmt["direction"] == "inbound"
    assert fmt["upstream_us"] == "%COMMON_DURATION(US_TX_END:US_RX_BEG:us)%"
    assert set(ACCESS_LOG_FORMAT) >= {"request_proxy_us", "response_proxy_us", "total_us",
                                      "response_code", "start_time", "method", "path"}  # fmt: skip
    assert "transport_socket" not in inbound["filter_chains"][0]  # type: ignore[index]


def test_bootstrap_mtls_and_patch() -> None:
    tls = {"ca": "CA", "cert": "CERT", "key": "KEY"}
    patch = {"admin": {"address": {"socket_address": {"port_value": 15999}}}}
    cfg = bootstrap("server", "10.0.0.2", inbound=True, app_port=8080, tls=tls, patch=patch)
    ts = _listener(cfg, "virtualInbound")["filter_chains"][0]["transport_socket"]  # type: ignore[index]
    assert ts["typed_config"]["require_client_certificate"] is True
    common = ts["typed_config"]["common_tls_context"]
    assert common["validation_context"]["trusted_ca"]["inline_string"] == "CA"
    up = next(c for c in cfg["static_resources"]["clusters"] if c["name"] == "passthrough")
    assert "UpstreamTlsContext" in up["transport_socket"]["typed_config"]["@type"]
    assert cfg["admin"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 15999,
    }
    assert deep_merge({"a": [1, 2], "b": {"c": 1}}, {"a": [3], "b": {"d": 2}}) == {
        "a": [3], "b": {"c": 1, "d": 2}}  # fmt: skip


def test_capture_rules_are_istios() -> None:
    text = rules(inbound=True)
    assert text.startswith("*nat\n") and text.endswith("COMMIT\n")
    assert "-A PREROUTING -p tcp -j ISTIO_INBOUND" in text
    assert "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006" in text
    assert "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001" in text
    assert "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN" in text
    assert "-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN" in text
    assert "PREROUTING" not in rules(inbound=False)


_LINE = {
    "request_id": "r-1", "request_proxy_us": 120, "upstream_us": 1012, "response_proxy_us": 33,
    "total_us": 1165, "response_code": 200, "start_time": "2026-12-02T01:00:00.000001Z",
    "method": "GET", "path": "/", "direction": "inbound", "bytes_sent": "128",
    "upstream_host": "-",
}  # fmt: skip


def test_access_log_parsing(tmp_path: Path) -> None:
    e = parse_line(json.dumps(_LINE))
    assert (e.request_proxy_us, e.upstream_us, e.response_proxy_us, e.total_us) == (
        120,
        1012,
        33,
        1165,
    )
    assert e.bytes_sent == 128 and e.upstream_host is None and e.response_code == 200
    reset = parse_line(
        json.dumps({**_LINE, "upstream_us": None, "response_code": 0, "request_id": "-"})
    )
    assert reset.upstream_us is None and reset.request_id is None and reset.response_code == 0
    log = tmp_path / "access.log"
    log.write_text(json.dumps(_LINE) + "\n" + json.dumps(_LINE) + "\n" + '{"request_id": "r-')
    assert len(read_access_log(log)) == 2  # the partial last line is still being written
    assert read_access_log(tmp_path / "none.log") == []
    log.write_text("hello\n")
    with pytest.raises(BadInputFile, match=r"access.log:1"):
        read_access_log(log)


def test_startup_error_picks_the_reason() -> None:
    log = (
        "[2026-12-02 01:00:00.000][7][info][main] [source/server/server.cc:1] starting\n"
        "[2026-12-02 01:00:00.001][7][critical][main] [source/server/server.cc:449] error "
        "`cannot bind '127.0.0.1:15000': Address already in use` initializing config 'x'\n"
        "[2026-12-02 01:00:00.002][7][info][main] exiting\n"
    )
    assert startup_error(log) == "cannot bind '127.0.0.1:15000': Address already in use"
    other = "[a][b][critical][main] [source/x.cc:1] listener 'x' failed to bind\n"
    assert startup_error(other) == "listener 'x' failed to bind"
    assert startup_error("") == "no output"


def test_state_round_trip(tmp_path: Path) -> None:
    pod = PodState(name="server", netns="smp-t-server", ip="10.0.0.2", uid="u", veth_host="v",
                   cgroups={"app": "/cg/app"}, app_pid=12, envoy_pid=13)  # fmt: skip
    st = TestbedState(
        name="t", status="up", state_dir=str(tmp_path), subnet="10.0.0.0/24", bridge="b",
        bridge_ip="10.0.0.1", sidecar="envoy", client_sidecar=False, mtls=False, concurrency=1,
        app_delay_s=0.001, response_size=128, ports={"app": 8080}, server=pod,
        client=PodState(name="client", netns="n", ip="10.0.0.3", uid="c", veth_host="w"),
        url="http://10.0.0.2:8080/", access_log=str(tmp_path / "a.log"),
    )  # fmt: skip
    st.write()
    from profiler.testbed.state import read_state

    again = read_state(tmp_path)
    assert again == st and again.server.cgroups == {"app": "/cg/app"}
    (tmp_path / "testbed.json").write_text('{"kind": "other"}')
    with pytest.raises(BadInputFile):
        read_state(tmp_path)


def test_app_server_keepalive_delay_stats() -> None:
    p = subprocess.Popen(
        [sys.executable, "-m", "profiler.testbed.app", "--host", "127.0.0.1", "--port", "0",
         "--delay", "20ms", "--size", "1k"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert p.stdout is not None
        port = int(p.stdout.readline().split()[1])
        assert Path(f"/proc/{p.pid}/comm").read_text().strip() == "smp-app"
        url = f"http://127.0.0.1:{port}"
        t0 = time.monotonic()
        req = urllib.request.Request(url + "/x", headers={"x-request-id": "abc"})
        with urllib.request.urlopen(req, timeout=5) as r:
            body, rid = r.read(), r.headers["x-request-id"]
        assert time.monotonic() - t0 >= 0.02 and len(body) == 1024 and rid == "abc"
        for _ in range(2):
            with urllib.request.urlopen(url + "/__stats", timeout=5) as r:
                stats = json.loads(r.read())
        assert stats["requests"] == 1  # /__stats is not counted
    finally:
        p.terminate()
        assert p.wait(timeout=5) == 0


def _h2_get(port: int, path: str, rid: str) -> tuple[dict[bytes, bytes], bytes]:
    import socket

    import h2.events
    from h2.config import H2Configuration
    from h2.connection import H2Connection

    conn = H2Connection(H2Configuration(client_side=True))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    req = [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", "app"),
           ("x-request-id", rid)]  # fmt: skip
    conn.send_headers(sid, req, end_stream=True)
    headers: dict[bytes, bytes] = {}
    body = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(conn.data_to_send())
        done = False
        while not done:
            data = s.recv(65536)
            assert data, "connection closed"
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    headers = dict(ev.headers)  # type: ignore[arg-type]
                elif isinstance(ev, h2.events.DataReceived):
                    body += ev.data or b""
                    conn.acknowledge_received_data(ev.flow_controlled_length or 0, sid)
                elif isinstance(ev, h2.events.StreamEnded):
                    done = True
            s.sendall(conn.data_to_send())
    return headers, body


def test_app_h2c_port_with_a_body_larger_than_the_window() -> None:
    p = subprocess.Popen(
        [sys.executable, "-m", "profiler.testbed.app", "--host", "127.0.0.1", "--port", "0",
         "--h2c-port", "0", "--size", "100k"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert p.stdout is not None
        _, h1, h2c = p.stdout.readline().split()
        headers, body = _h2_get(int(h2c), "/x", "h2-1")
        assert headers[b":status"] == b"200" and headers[b"x-request-id"] == b"h2-1"
        assert len(body) == 100 * 1024 == int(headers[b"content-length"])
        _, stats = _h2_get(int(h2c), "/__stats", "s")
        assert json.loads(stats)["requests"] == 1  # shared with the HTTP/1.1 port, not counted
        with urllib.request.urlopen(f"http://127.0.0.1:{h1}/__stats", timeout=5) as r:
            assert json.loads(r.read())["requests"] == 1
    finally:
        p.terminate()
        assert p.wait(timeout=5) == 0


def test_bootstrap_h2c_chain_by_destination_port() -> None:
    cfg = bootstrap("server", "10.0.0.2", inbound=True, app_port=8080, h2c_port=8081)
    chains = _listener(cfg, "virtualInbound")["filter_chains"]
    assert [c.get("filter_chain_match") for c in chains] == [{"destination_port": 8081}, None]  # type: ignore[attr-defined]
    clusters = {c["name"]: c for c in cfg["static_resources"]["clusters"]}
    opts = clusters["app-h2c"]["typed_extension_protocol_options"]
    assert "http2_protocol_options" in json.dumps(opts)
    assert "typed_extension_protocol_options" not in clusters["app"]
    assert "use_downstream_protocol_config" in json.dumps(clusters["passthrough"])
