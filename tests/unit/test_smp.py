"""The SMP mapping of a run bundle: fields, types, units, ids, sidecar cost, reading back."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from profiler.errors import BadInputFile
from profiler.model import RunBundle, dumps, read_bundle
from profiler.smp import read_documents, validate
from profiler.smp.build import duration_string, int32
from profiler.smp.bundle import bundle_json, write_bundle
from profiler.smp.schema import DOCUMENTS, camel
from tests.unit import smp_fixtures as fx


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return bundle_json(fx.bundle())


def _pointer(doc: dict[str, Any], uri: str) -> Any:
    assert uri.startswith("#/")
    node: Any = doc
    for part in uri[2:].split("/"):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def test_documents_have_only_smp_fields_with_the_right_types(doc: dict[str, Any]) -> None:
    assert validate(doc) == []
    assert set(DOCUMENTS) <= set(doc)
    assert doc["format_version"] == 1


def test_ids_are_uuids_and_link(doc: dict[str, Any]) -> None:
    cfg, mesh, env = (
        doc[k]["id"]
        for k in ("performance_test_config", "service_mesh_config", "environment_config")
    )
    results = doc["performance_test_results"]
    assert len(results) == 2  # one per rate step, repetitions merged
    ids = {cfg, mesh, env, *(r["id"] for r in results)}
    assert len(ids) == 5
    for i in ids:
        assert str(uuid.UUID(i)) == i
    for r in results:
        assert (r["test_id"], r["mesh_config_id"], r["env_id"]) == (cfg, mesh, env)


def test_details_uri_points_at_the_step(doc: dict[str, Any]) -> None:
    for i, r in enumerate(doc["performance_test_results"]):
        step = _pointer(doc, r["details_uri"])
        assert step["index"] == i and step["rate_asked"] == [100.0, 200.0][i]
        assert step["repetitions"] == 2


def test_latencies_are_milliseconds_from_merged_histograms(doc: dict[str, Any]) -> None:
    lat = doc["performance_test_results"][0]["latencies_ms"]
    # mesh latency ~ N(1500, 50) us
    assert 1.45 < lat["p50"] < 1.55
    assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert 1.45 < lat["average"] < 1.55
    step = doc["details"]["steps"][0]
    assert step["mesh"]["requests"] == 2000  # 2 repetitions x 1,000
    assert step["mesh"]["latency"]["merged_from"] == "histograms"
    assert 1.6 < step["mesh"]["latency"]["p999_ms"] < 1.8
    assert doc["performance_test_results"][0]["actual_qps"] == pytest.approx(100.0)


def test_sidecar_cost_is_the_captures(doc: dict[str, Any]) -> None:
    b = fx.bundle()
    caps = [r.capture for r in b.records if r.capture]
    cpu = sum(c["sidecars"][0]["cpu_seconds"] for c in caps)
    dur = sum(c["duration_s"] for c in caps)
    sc = doc["service_mesh_config"]["sidecar"]
    assert sc["cpu_mcores"] == round(cpu / dur * 1000) and sc["cpu_mcores"] > 0
    # the peak RSS over the steps, 41 MiB, in SMP's MB (10^6 bytes): 42.99
    assert sc["mem_mb"] == 43 and sc["count"] == 1
    # what the sidecar proxied (its span count) per second of load
    seen = sum(c["sidecars"][0]["requests"] for c in caps)
    assert sc["rps"] == round(seen / sum(r.load.duration_s for r in b.records if r.capture))
    assert all(isinstance(v, int) for v in sc.values())
    step = doc["details"]["steps"][0]["sidecar"]
    # 0.0002 CPU-s per request = 200 CPU-ms per 1,000 requests; 100 req/s -> 0.02 cores
    assert step["cpu_ms_per_1k_requests"] == pytest.approx(200.0)
    assert step["cores_per_1k_rps"] == pytest.approx(0.2)
    assert step["drops"] == 0 and step["complete"]
    assert 0.45 < step["legs"]["sidecar_total"]["p50_ms"] < 0.55


def test_mesh_config_fields(doc: dict[str, Any]) -> None:
    m = doc["service_mesh_config"]
    # a plain Envoy is no evidence of Istio: SMP's unknown, and the reason as a label
    assert m["mesh_type"]["type"] == "INVALID_MESH" and "version" not in m["mesh_type"]
    assert "plain Envoy" in m["labels"]["mesh_evidence"]
    # Envoy's version is the proxy's build, never the mesh's version
    assert m["proxy_build"] == "envoy 1.40.0/Clean/RELEASE/BoringSSL"
    assert m["proxy_concurrency"] == 2 and m["mtls_enabled"] is False
    env = doc["environment_config"]
    # 3900 MiB of /proc/meminfo is 4089 MB of 10^6 bytes
    assert env["nodes"] == [{"type": "AMD EPYC", "cores": 2, "mem_mb": 4089}]
    assert env["labels"]["kernel"] == "6.18.0"
    assert "kubernetes_version" not in env  # not known: left out, not invented
    assert doc["performance_test_config"]["duration"] == "10s"
    client = doc["performance_test_config"]["clients"][0]
    assert client["load_generator"] == "builtin" and client["protocol"] == "PROTOCOL_HTTP"


def test_baseline_deltas_with_intervals_and_significance(doc: dict[str, Any]) -> None:
    ov = doc["details"]["steps"][0]["overhead"]
    assert ov["p50"]["delta_ms"] == pytest.approx(0.5, abs=0.02)
    lo, hi = ov["p50"]["ci_ms"]
    assert lo <= ov["p50"]["delta_ms"] <= hi and lo > 0.4
    assert ov["significance"]["significant"] and ov["significance"]["p_value"] < 1e-6
    agree = doc["details"]["steps"][0]["ebpf_vs_ab"]
    assert agree["agree"] is True
    assert agree["ebpf_sidecar_total_p50_ms"] == pytest.approx(0.5, abs=0.02)
    reps = agree["ab_delta_p50_per_repetition_ms"]
    assert len(reps) == 2 and all(abs(d - 0.5) < 0.03 for d in reps)


def test_no_difference_is_not_significant() -> None:
    d = bundle_json(fx.bundle(rates=(100.0,), repeat=1, shift_us=0.0, with_capture=False))
    ov = d["details"]["steps"][0]["overhead"]
    assert not ov["significance"]["significant"]
    assert ov["p50"]["ci_ms"][0] <= 0.0 <= ov["p50"]["ci_ms"][1]


def test_without_capture_or_baseline() -> None:
    d = bundle_json(fx.bundle(rates=(100.0,), repeat=1, baseline=False, with_capture=False))
    assert validate(d) == []
    # how many sidecars is known; their cost was not measured, so no number stands for it
    assert d["service_mesh_config"]["sidecar"] == {"count": 1}
    step = d["details"]["steps"][0]
    assert step["baseline"] is None and step["overhead"] is None and step["sidecar"] is None
    assert d["details"]["meshmark"]["score"] is None
    assert d["details"]["meshmark"]["missing"] == ["cpu", "memory", "latency"]


def test_meshmark_reported_per_run(doc: dict[str, Any]) -> None:
    mm = doc["details"]["meshmark"]
    assert set(mm["classes"]) == {"cpu", "memory", "latency"}
    # the app used twice the sidecar's CPU: CPU MUE = 1 - 1/3
    assert mm["classes"]["cpu"] == pytest.approx(2 / 3, abs=1e-3)
    assert 0 < mm["score"] < 100


def test_bundle_round_trips_json_and_yaml(tmp_path: Path) -> None:
    b = fx.bundle(rates=(100.0,), repeat=1)
    first = bundle_json(b)
    again = RunBundle.from_json(json.loads(json.dumps(first)))
    assert bundle_json(again) == first
    for fmt, name in (("json", "r.json"), ("yaml", "r.yaml")):
        path = tmp_path / name
        assert write_bundle(b, path, fmt) == fmt
        assert bundle_json(read_bundle(path)) == first
    assert (tmp_path / "r.yaml").read_text().startswith("format_version: 1")


def test_validator_rejects_non_smp_fields_and_types(doc: dict[str, Any]) -> None:
    bad = json.loads(json.dumps(doc))
    bad["service_mesh_config"]["sidecar"]["cpu_millicores"] = 3
    assert "not a field of SMP ServiceMeshConfig.Sidecar" in validate(bad)[0]
    bad = json.loads(json.dumps(doc))
    bad["service_mesh_config"]["sidecar"]["cpu_mcores"] = "12"
    assert "not an integer" in validate(bad)[0]
    bad = json.loads(json.dumps(doc))
    bad["service_mesh_config"]["sidecar"]["mem_mb"] = 2**31
    assert "out of range" in validate(bad)[0]
    bad = json.loads(json.dumps(doc))
    bad["performance_test_results"][0]["latencies_ms"]["p50"] = "1.2"
    assert "not a number" in validate(bad)[0]
    bad = json.loads(json.dumps(doc))
    bad["performance_test_results"][1]["env_id"] = str(uuid.uuid4())
    assert "does not link" in validate(bad)[0]
    bad = json.loads(json.dumps(doc))
    bad["performance_test_results"][0]["actualQps"] = bad["performance_test_results"][0].pop(
        "actual_qps"
    )
    assert validate(bad)  # the writer's spelling is snake_case only


def _camelize(x: Any) -> Any:
    """Protobuf JSON spelling of field names; map entries (labels) are data and stay."""
    if isinstance(x, dict):
        return {camel(k): v if k == "labels" else _camelize(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_camelize(v) for v in x]
    return x


def test_reader_accepts_lower_camel_case_and_proto_json_quirks(doc: dict[str, Any]) -> None:
    smp = {k: doc[k] for k in DOCUMENTS}
    cam = _camelize(json.loads(json.dumps(smp)))
    cam["environmentConfig"]["nodes"][0]["memMb"] = "4089"  # int64 as a string
    cam["serviceMeshConfig"]["meshType"]["type"] = 0  # enum by number
    cam["performanceTestResults"][0]["startTime"] = {"seconds": 1764590400, "nanos": 0}
    got = read_documents(cam)
    assert got["environment_config"]["nodes"][0]["mem_mb"] == 4089
    assert got["service_mesh_config"]["mesh_type"]["type"] == "INVALID_MESH"
    assert got["performance_test_results"][0]["start_time"] == "2025-12-01T12:00:00.000000Z"
    assert got["service_mesh_config"] == smp["service_mesh_config"]
    assert validate(got) == []


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"unrelated": 1},
        {"service_mesh_config": {"sidecar": {"count": "many"}}},
        {"performanceTestResults": [{"latenciesMs": {"p50": []}}]},
        {"environment_config": {"nodes": {"type": "x"}}},
    ],
)
def test_reader_malformed_is_one_clear_line(data: Any) -> None:
    with pytest.raises(BadInputFile) as e:
        read_documents(data, source="x.json")
    assert "\n" not in str(e.value) and str(e.value).startswith("x.json: not valid SMP")


def test_read_bundle_errors_are_bad_input(tmp_path: Path) -> None:
    p = tmp_path / "b.json"
    p.write_text('{"kind": "smp-profiler/run-bundle", "format_version": 1, "run": {}}')
    with pytest.raises(BadInputFile, match="malformed run bundle"):
        read_bundle(p)
    p.write_text("{not json")
    with pytest.raises(BadInputFile, match="not valid json"):
        read_bundle(p)
    with pytest.raises(BadInputFile):
        read_bundle(tmp_path / "missing.json")


def test_helpers() -> None:
    assert duration_string(10) == "10s" and duration_string(1.5) == "1.5s"
    assert duration_string(150) == "2m30s" and duration_string(120) == "2m"
    assert int32(2.0**40) == 2**31 - 1 and int32(None) == 0 and int32(2.6) == 3
    assert dumps({"a": 1}, "json").strip() == '{\n  "a": 1\n}'


def test_yaml_output_is_loadable_by_a_plain_yaml_reader(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    write_bundle(fx.bundle(rates=(100.0,), repeat=1, with_capture=False), path)
    code = "import sys, yaml; d = yaml.safe_load(open(sys.argv[1])); print(d['smp_version'])"
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert r.stdout.strip() == "v0.6.1", r.stderr


def test_envoy_version_string() -> None:
    from profiler.discovery.environment import parse_envoy_version

    text = "envoy  version: 9e5580933739775e8bce696a57a2e1bc99368f23/1.40.0/Clean/RELEASE/BoringSSL"
    assert parse_envoy_version(text) == "1.40.0/Clean/RELEASE/BoringSSL"
    assert parse_envoy_version("no version here") is None
