"""``smp-profiler run`` against real testbeds: a mesh (real Envoy sidecar) and a baseline."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from _testbed import cli

from profiler.model import read_bundle
from profiler.smp import validate
from profiler.smp.bundle import bundle_json

pytestmark = [pytest.mark.testbed, pytest.mark.envoy]

# ``swept`` (tests/integration/conftest.py): one real sweep with a baseline, shared with
# test_report_html


def test_bundle_has_only_smp_fields_with_right_types_and_linked_ids(swept: dict[str, Any]) -> None:
    doc = swept["doc"]
    assert validate(doc) == []
    results = doc["performance_test_results"]
    assert len(results) == 2
    ids = {
        doc[k]["id"]
        for k in ("performance_test_config", "service_mesh_config", "environment_config")
    }
    for r in results:
        assert {r["test_id"], r["mesh_config_id"], r["env_id"]} == ids
        uuid.UUID(r["id"])
    # the testbed's Envoy is a plain Envoy: no evidence of Istio, so SMP's unknown, with why;
    # Envoy's version is the proxy's build, not the mesh's version
    mesh = doc["service_mesh_config"]
    assert mesh["mesh_type"]["type"] == "INVALID_MESH" and "version" not in mesh["mesh_type"]
    assert "plain Envoy" in mesh["labels"]["mesh_evidence"]
    assert mesh["proxy_build"].startswith("envoy 1.")
    assert doc["environment_config"]["nodes"][0]["cores"] >= 1


def test_latencies_are_ms_and_match_the_load_histograms(swept: dict[str, Any]) -> None:
    doc = swept["doc"]
    bundle = read_bundle(swept["path"])
    for i, r in enumerate(doc["performance_test_results"]):
        (rec,) = bundle.records_of(i, "mesh")
        assert rec.load.histogram is not None
        p50_us = rec.load.histogram.percentile(50)
        assert r["latencies_ms"]["p50"] == pytest.approx(p50_us / 1000, rel=1e-3)
        # A local request through Envoy: well above 10 us and well below a second.
        assert 0.01 < r["latencies_ms"]["p50"] < 1000
        assert r["actual_qps"] == pytest.approx((i + 1) * swept["rate"], rel=0.02)
        step = doc["details"]["steps"][i]
        assert step["baseline"]["requests"] > 0 and step["overhead"] is not None
        assert step["mesh"]["errors"] == {} and step["mesh"]["error_rate"] == 0
        assert r["labels"]["error_rate"] == "0"


def test_sidecar_costs_match_the_captures(swept: dict[str, Any]) -> None:
    doc = swept["doc"]
    bundle = read_bundle(swept["path"])
    caps = [r.capture for r in bundle.records if r.role == "mesh"]
    assert all(c is not None for c in caps)
    cpu = sum(s["cpu_seconds"] for c in caps if c for s in c["sidecars"])
    captured = sum(c["duration_s"] for c in caps if c)
    loaded = sum(r.load.duration_s for r in bundle.records if r.role == "mesh")
    # the capture starts before the load and stops after it: the cost is over the load's window
    assert captured > loaded
    sc = doc["service_mesh_config"]["sidecar"]
    assert sc["cpu_mcores"] > 0 and sc["mem_mb"] > 0
    assert sc["cpu_mcores"] == round(cpu / loaded * 1000)
    # what the sidecar proxied (its spans) per second, not what the generator asked
    spans = sum(s["requests"] for c in caps if c for s in c["sidecars"])
    assert sc["rps"] == round(spans / loaded)
    assert swept["envoy_pid"] in doc["details"]["steps"][0]["sidecar"]["pids"]
    # The baseline's app is captured too, so both paths carry the probes' cost.
    assert all(r.capture and r.capture["apps"] for r in bundle.records if r.role == "baseline")
    for step in doc["details"]["steps"]:
        cmp = step["ebpf_vs_ab"]
        # Both estimates are there, with intervals; whether they agree is reported, not
        # asserted: on a busy 2-core node the A/B delta moves by more than the sidecar's time.
        assert cmp is not None and cmp["ebpf_sidecar_total_p50_ms"] > 0
        # the app is traced: the estimate is sidecar_total + the loopback hop, per request
        assert cmp["ebpf_basis"] == "mesh_added"
        assert cmp["ebpf_p50_ms"] > cmp["ebpf_sidecar_total_p50_ms"]
        lo, hi = cmp["ebpf_ci_ms"]
        assert lo <= cmp["ebpf_p50_ms"] <= hi
        assert isinstance(cmp["agree"], bool)
        legs = step["sidecar"]["legs"]
        assert legs["sidecar_total"]["count"] >= step["mesh"]["requests"] * 0.99


def test_yaml_format_writes_the_same_model(swept: dict[str, Any]) -> None:
    bundle = read_bundle(swept["yaml"])
    doc = bundle_json(bundle)
    assert validate(doc) == []
    assert doc["details"]["steps"][0]["baseline"] is None
    assert swept["yaml"].read_text().startswith("format_version: 1\n")


def test_progress_shows_every_window(swept: dict[str, Any]) -> None:
    err = swept["stderr"]
    assert err.count(": achieved") == 4  # 2 rates x (mesh, baseline)
    assert "MeshMark" in err and "wrote " in err


def test_unreachable_target_is_one_line(tmp_path: Path) -> None:
    r = cli(
        "run",
        "--target",
        "http://127.0.0.1:9/",
        "--rates",
        "10",
        "--step-duration",
        "1s",
        "-o",
        str(tmp_path / "x.json"),
    )
    assert r.returncode == 4
    assert r.stderr.strip().count("\n") == 0 and "cannot connect" in r.stderr
    assert not (tmp_path / "x.json").exists()


def test_bad_testbed_dir_is_bad_input(tmp_path: Path) -> None:
    r = cli("run", "--testbed", str(tmp_path / "none"), "-o", str(tmp_path / "x.json"))
    assert r.returncode == 65 and "Traceback" not in r.stderr


def test_a_sidecar_whose_app_is_gone_fails_the_run_and_writes_everything(
    tmp_path: Path, testbed_factory: Any
) -> None:
    """Every response a 503 from Envoy (its app killed): exit 6, not 0, and the bundle says the
    error rate; no latency or throughput passes as the service's (issue 15, point 1)."""
    import os
    import signal

    mesh = testbed_factory(sidecar="envoy")
    os.kill(mesh.state.server.app_pid, signal.SIGKILL)
    out = tmp_path / "r.json"
    r = cli(
        "run", "--testbed", str(mesh.state.state_dir), "--rates", "50", "--step-duration", "1s",
        "--warmup", "0", "--connections", "2", "-o", str(out),
    )  # fmt: skip
    assert r.returncode == 6, r.stderr
    assert "error rate 100.00%" in r.stderr and "Traceback" not in r.stderr
    doc = json.loads(out.read_text())
    step = doc["details"]["steps"][0]["mesh"]
    assert step["error_rate"] == 1.0 and step["successes"] == 0
    assert set(step["status_counts"]) == {"503"} and step["failures"]["latency"]["count"] > 0
    res = doc["performance_test_results"][0]
    assert "latencies_ms" not in res and res["actual_qps"] == 0.0
    assert res["labels"]["error_rate"] == "1" and res["labels"]["target_reached"] == "false"
    assert any("error rate 100.00%" in n for n in doc["details"]["notes"])


@pytest.mark.bpf
def test_a_sidecar_pid_off_the_path_is_an_error_not_a_number(
    tmp_path: Path, testbed_factory: Any
) -> None:
    """``--sidecar-pid`` of a process that proxies nothing: exit 3 after the first window, the
    evidence written, and no sidecar cost in SMP (issue 15, point 3)."""
    mesh = testbed_factory(sidecar="envoy")
    idle = subprocess.Popen(["sleep", "120"])
    try:
        out = tmp_path / "r.json"
        r = cli(
            "run", "--testbed", str(mesh.state.state_dir), "--sidecar-pid", str(idle.pid),
            "--rates", "50,100", "--step-duration", "1s", "--warmup", "0", "--connections", "2",
            "-o", str(out),
        )  # fmt: skip
    finally:
        idle.kill()
        idle.wait()
    assert r.returncode == 3, r.stderr
    assert "proxied 0 of the" in r.stderr and "not on the path" in r.stderr
    assert r.stderr.count("smp-profiler: error") == 1 and "Traceback" not in r.stderr
    doc = json.loads(out.read_text())
    assert len(doc["performance_test_results"]) == 1  # the second rate was never run
    mesh_cfg = doc["service_mesh_config"]
    assert "cpu_mcores" not in mesh_cfg.get("sidecar", {})
    assert mesh_cfg["mesh_type"]["type"] == "INVALID_MESH"
    assert doc["details"]["steps"][0]["sidecar"]["error"]
    assert any("interrupted" in n for n in doc["details"]["notes"])


def test_ctrl_c_writes_the_partial_bundle_and_exits_130(
    tmp_path: Path, testbed_factory: Any
) -> None:
    import signal
    import time

    base = testbed_factory(sidecar="none")
    out = tmp_path / "r.json"
    code = "import sys; from profiler.cli import main; sys.exit(main(sys.argv[1:]))"
    p = subprocess.Popen(
        [sys.executable, "-c", code, "run", "--testbed", str(base.state.state_dir),
         "--rates", "50,60,70", "--step-duration", "1.5s", "--warmup", "0",
         "--connections", "2", "-o", str(out)],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert p.stderr is not None
    seen, deadline = "", time.monotonic() + 60
    while ": achieved" not in seen and time.monotonic() < deadline:
        line = p.stderr.readline()
        if not line:
            break
        seen += line
    assert ": achieved" in seen, seen  # the first window is measured
    p.send_signal(signal.SIGINT)
    rest = p.stderr.read()
    assert p.wait(timeout=60) == 130, seen + rest
    assert "PARTIAL" in rest and "Traceback" not in rest
    doc = json.loads(out.read_text())
    n = len(doc["performance_test_results"])
    assert 1 <= n < 3
    assert validate(doc) == []
    assert any("run interrupted (Ctrl-C)" in note for note in doc["details"]["notes"])


def test_grpc_run_through_the_testbed_is_protocol_grpc_and_proxied(tmp_path: Path) -> None:
    """``run --protocol grpc``: the built-in generator calls the testbed's gRPC app (Unary)
    through its sidecars; the SMP client says PROTOCOL_GRPC and the sidecars' spans are one
    per HTTP/2 stream (call), not per connection: the server sidecar's (plaintext HTTP/2 from
    the generator, no mTLS) as many as the calls that succeeded."""
    from profiler.testbed import Testbed, TestbedConfig

    tb = Testbed.up(TestbedConfig(name=f"g{uuid.uuid4().hex[:5]}", state_dir=tmp_path / "tb"))
    try:
        out = tmp_path / "grpc.json"
        r = cli(
            "run", "--testbed", str(tmp_path / "tb"), "--protocol", "grpc",
            "--rates", "53", "--step-duration", "2s", "--warmup", "0", "--connections", "2",
            "-o", str(out),
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        doc = json.loads(out.read_text())
        assert validate(doc) == []
        (client,) = doc["performance_test_config"]["clients"]
        assert client["protocol"] == "PROTOCOL_GRPC"
        step = doc["details"]["steps"][0]
        calls = step["mesh"]["requests"]
        assert calls == pytest.approx(106, rel=0.1) and step["mesh"]["error_rate"] == 0
        (rec,) = read_bundle(out).records_of(0, "mesh")
        assert rec.capture is not None
        (side,) = [s for s in rec.capture["sidecars"] if s["pid"] == tb.state.server.envoy_pid]
        assert side["requests"] >= 0.98 * calls, side  # one span per call, not per connection
        assert side["http2_spans"]["downstream"] >= 0.98 * calls, side
    finally:
        tb.down()


def test_protocol_needs_the_builtin_generator(tmp_path: Path) -> None:
    r = cli("run", "--target", "http://127.0.0.1:9/", "--protocol", "grpc",
             "--load-generator", "wrk", "-o", str(tmp_path / "x.json"))  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--protocol grpc needs --load-generator builtin" in r.stderr
    r = cli("run", "--target", "http://127.0.0.1:9/", "--protocol", "spdy",
             "-o", str(tmp_path / "x.json"))  # fmt: skip
    assert r.returncode == 2 and "bad --protocol 'spdy'" in r.stderr
