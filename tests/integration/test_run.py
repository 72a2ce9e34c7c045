"""``smp-profiler run`` against real testbeds: a mesh (real Envoy sidecar) and a baseline."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from profiler.model import read_bundle
from profiler.smp import validate

pytestmark = [pytest.mark.testbed, pytest.mark.envoy]

RATE = 200


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from profiler.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One short sweep (2 rates x 2 s, with baseline) shared by the tests of this module."""
    from profiler.testbed import Testbed, TestbedConfig

    tmp = tmp_path_factory.mktemp("run")
    tag = uuid.uuid4().hex[:5]
    beds: list[Testbed] = []
    try:
        mesh = Testbed.up(TestbedConfig(name=f"r{tag}-m", state_dir=tmp / "m", sidecar="envoy"))
        beds.append(mesh)
        base = Testbed.up(TestbedConfig(name=f"r{tag}-b", state_dir=tmp / "b", sidecar="none"))
        beds.append(base)
        out = tmp / "result.json"
        r = _cli(
            "run",
            "--testbed",
            str(tmp / "m"),
            "--baseline-testbed",
            str(tmp / "b"),
            "--rates",
            f"{RATE},{2 * RATE}",
            "--step-duration",
            "2s",
            "--warmup",
            "0.5s",
            "--connections",
            "4",
            "-o",
            str(out),
        )
        assert r.returncode == 0, r.stderr
        yaml_out = tmp / "result.yaml"
        r2 = _cli(
            "run",
            "--testbed",
            str(tmp / "m"),
            "--rates",
            "100",
            "--step-duration",
            "1s",
            "--warmup",
            "0",
            "--format",
            "yaml",
            "-o",
            str(yaml_out),
        )
        assert r2.returncode == 0, r2.stderr
        return {
            "doc": json.loads(out.read_text()),
            "path": out,
            "yaml": yaml_out,
            "stderr": r.stderr,
            "envoy_pid": mesh.state.server.envoy_pid,
        }
    finally:
        for tb in beds:
            tb.down()


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
    assert doc["service_mesh_config"]["mesh_type"]["type"] == "ISTIO"
    assert doc["service_mesh_config"]["proxy_build"].startswith("1.")
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
        assert r["actual_qps"] == pytest.approx((i + 1) * RATE, rel=0.02)
        step = doc["details"]["steps"][i]
        assert step["baseline"]["requests"] > 0 and step["overhead"] is not None
        assert step["mesh"]["errors"] == {}


def test_sidecar_costs_match_the_captures(swept: dict[str, Any]) -> None:
    doc = swept["doc"]
    bundle = read_bundle(swept["path"])
    caps = [r.capture for r in bundle.records if r.role == "mesh"]
    assert all(c is not None for c in caps)
    cpu = sum(s["cpu_seconds"] for c in caps if c for s in c["sidecars"])
    dur = sum(c["duration_s"] for c in caps if c)
    sc = doc["service_mesh_config"]["sidecar"]
    assert sc["cpu_mcores"] > 0 and sc["mem_mb"] > 0
    assert sc["cpu_mcores"] == round(cpu / dur * 1000)
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
    doc = bundle.to_json()
    assert validate(doc) == []
    assert doc["details"]["steps"][0]["baseline"] is None
    assert swept["yaml"].read_text().startswith("format_version: 1\n")


def test_progress_shows_every_window(swept: dict[str, Any]) -> None:
    err = swept["stderr"]
    assert err.count(": achieved") == 4  # 2 rates x (mesh, baseline)
    assert "MeshMark" in err and "wrote " in err


def test_unreachable_target_is_one_line(tmp_path: Path) -> None:
    r = _cli(
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
    r = _cli("run", "--testbed", str(tmp_path / "none"), "-o", str(tmp_path / "x.json"))
    assert r.returncode == 65 and "Traceback" not in r.stderr
