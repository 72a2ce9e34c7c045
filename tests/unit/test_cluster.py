"""Cluster-wide SMP bundles from Prometheus answers, in the JSON shapes of Prometheus' HTTP
API (``/api/v1/query`` vectors with string values, ``+Inf`` bucket labels), served by a real
HTTP server on loopback where the query path is exercised."""

from __future__ import annotations

import json
import math
import threading
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from profiler.commands.report import cluster_main
from profiler.daemon.cluster import (
    KIND,
    Reporters,
    build_bundle,
    extra_queries,
    parse_time,
)
from profiler.daemon.promql import build_window, parse_response, window_queries
from profiler.errors import TargetUnreachable, UsageError
from profiler.smp import validate

END = 1764640800.0  # 2025-12-02T02:00:00Z
W = 60


def vector(*series: tuple[dict[str, str], str]) -> dict[str, Any]:
    return {
        "status": "success",
        "data": {
            "resultType": "vector",
            "result": [{"metric": m, "value": [END, v]} for m, v in series],
        },
    }


def bucket(le: str, v: str, leg: str = "sidecar_total") -> tuple[dict[str, str], str]:
    return ({"le": le, "leg": leg}, v)


# Two pods' histograms merged by Prometheus: 600 requests, 300 at or below 100 us,
# 540 at or below 200 us, all at or below 1 ms; the upstream leg slower.
ANSWERS: dict[str, dict[str, Any]] = {
    "leg_buckets": vector(
        bucket("0.0001", "300"),
        bucket("0.0002", "540"),
        bucket("0.001", "600"),
        bucket("+Inf", "600"),
        bucket("0.0001", "0", "upstream"),
        bucket("0.001", "600", "upstream"),
        bucket("+Inf", "600", "upstream"),
    ),
    "leg_sum": vector(({"leg": "sidecar_total"}, "0.084"), ({"leg": "upstream"}, "0.3")),
    "requests": vector(({}, "600")),
    "sidecar_cpu_seconds": vector(({}, "3")),
    "app_cpu_seconds": vector(({}, "6")),
    "sidecar_memory_bytes": vector(({}, str(2 * 40 * 2**20))),
    "sidecars": vector(({}, "2")),
    "dropped": vector(({}, "0")),
    "agents": vector(({"version": "0.1.0"}, "3")),
    "containers": vector(({"k8s_container_name": "istio-proxy"}, "2")),
    "meshes": vector(({"smp_mesh_type": "ISTIO"}, "2")),
}


def window_from(answers: dict[str, dict[str, Any]]) -> Any:
    return build_window(W, {k: parse_response(v) for k, v in answers.items()})


def reporters_from(answers: dict[str, dict[str, Any]]) -> Reporters:
    return Reporters.from_answers({k: parse_response(v) for k, v in answers.items()})


def test_bundle_of_a_window_is_valid_smp_with_the_merged_numbers() -> None:
    w = window_from(ANSWERS)
    created = datetime(2025, 12, 2, 2, 1, tzinfo=UTC)
    doc = build_bundle(w, END - W, END, "http://prom:9090", "shop", reporters_from(ANSWERS),
                       created=created)  # fmt: skip
    assert doc["kind"] == KIND
    assert validate(doc) == []
    sc = doc["service_mesh_config"]["sidecar"]
    # 80 MiB of working set is 84 MB of 10^6 bytes, as SMP counts
    assert sc == {"count": 2, "cpu_mcores": 50, "mem_mb": 84, "rps": 10}
    assert doc["service_mesh_config"]["mesh_type"]["type"] == "ISTIO"
    res = doc["performance_test_results"][0]
    assert res["start_time"] == "2025-12-02T01:59:00.000000Z"
    assert res["end_time"] == "2025-12-02T02:00:00.000000Z"
    assert "latencies_ms" not in res and "actual_qps" not in res  # no client: unknown
    assert "clients" not in doc["performance_test_config"]
    assert doc["performance_test_config"]["duration"] == "1m"
    assert doc["environment_config"]["labels"]["nodes_reporting"] == "3"
    d = doc["details"]
    total = d["legs"]["sidecar_total"]
    # merged buckets, interpolated as histogram_quantile: rank 300 is the 100 us bound,
    # rank 540 (p90) the 200 us bound, rank 594 (p99) 90% into the 200 us .. 1 ms bucket
    assert total["count"] == 600
    assert total["p50_ms"] == pytest.approx(0.1)
    assert total["p90_ms"] == pytest.approx(0.2)
    assert total["p99_ms"] == pytest.approx(0.92)
    assert total["p50_bucket_ms"] == [0.0, 0.1]
    assert total["mean_ms"] == pytest.approx(0.14)
    assert total["buckets"][-1] == ["+Inf", 600]
    assert d["legs"]["upstream"]["p50_ms"] == pytest.approx(0.55)
    assert d["sidecar"]["cpu_ms_per_1k_requests"] == pytest.approx(5000.0)
    assert d["sidecar"]["app_cpu_mcores"] == pytest.approx(100.0)
    assert d["notes"] == []
    assert json.loads(json.dumps(doc)) == doc  # plain JSON: no NaN or Inf


def test_bundle_of_an_empty_window_says_so_and_leaves_percentiles_empty() -> None:
    empty = {
        "leg_buckets": vector(bucket("0.0001", "0"), bucket("+Inf", "0")),
        "requests": vector(),
        "sidecars": vector(({}, "1")),
        "dropped": vector(({}, "4")),
    }
    doc = build_bundle(window_from(empty), END - W, END, "http://prom")
    assert validate(doc) == []
    total = doc["details"]["legs"]["sidecar_total"]
    assert total["p50_ms"] is None and total["mean_ms"] is None
    assert total["p50_bucket_ms"] is None
    assert doc["details"]["sidecar"]["cpu_ms_per_1k_requests"] is None
    assert any("no request" in n for n in doc["details"]["notes"])
    assert any("dropped 4 events" in n for n in doc["details"]["notes"])
    assert "mesh_type" not in doc["service_mesh_config"]  # no container seen: unknown
    json.dumps(doc, allow_nan=False)


def test_mesh_type_only_from_the_agents_evidence() -> None:
    assert Reporters(meshes={"LINKERD": 3}).mesh_type() == (
        "LINKERD",
        "from the pods' injection annotations",
    )
    # an Envoy named istio-proxy without Istio's annotation is not Istio
    got = Reporters(containers={"istio-proxy": 1}, meshes={"": 1}).mesh_type()
    assert got is not None and got[0] == "INVALID_MESH" and got[1].startswith("unknown")
    got = Reporters(meshes={"ISTIO": 1, "LINKERD": 1}).mesh_type()
    assert got == ("INVALID_MESH", "mixed: ISTIO,LINKERD")
    got = Reporters(meshes={"ISTIO": 1, "": 2}).mesh_type()
    assert got == ("INVALID_MESH", "mixed: ISTIO,unknown")
    assert Reporters().mesh_type() is None  # no sidecar seen


def test_unknown_mesh_is_invalid_mesh_in_a_valid_document() -> None:
    answers = dict(ANSWERS, meshes=vector(({"smp_mesh_type": ""}, "2")))
    doc = build_bundle(
        window_from(answers), END - W, END, "http://p", None, reporters_from(answers)
    )
    assert validate(doc) == []
    mt = doc["service_mesh_config"]["mesh_type"]
    assert mt["type"] == "INVALID_MESH" and mt["labels"]["mesh_type_evidence"].startswith("unknown")


def test_parse_time_forms() -> None:
    now = 1_000_000.0
    assert parse_time("now", now) == now
    assert parse_time("now-15m", now) == now - 900
    assert parse_time("now - 2h", now) == now - 7200
    assert parse_time("1764640800", now) == 1764640800.0
    assert parse_time("2025-12-02T02:00:00Z", now) == 1764640800.0
    assert parse_time("2025-12-02T03:00:00+01:00", now) == 1764640800.0
    assert parse_time("2025-12-02T02:00:00", now) == 1764640800.0  # no zone: UTC
    with pytest.raises(UsageError, match="not a time"):
        parse_time("yesterday", now)


def test_extra_queries_filter_by_namespace() -> None:
    q = extra_queries(300, "shop")
    assert '{k8s_namespace_name="shop"}[300s]' in q["containers"]
    assert '{k8s_namespace_name="shop"}[300s]' in q["meshes"]
    # one agent per node however many jobs scrape it
    assert q["agents"].startswith("count by (version) (count by (version, k8s_node_name)")
    # a pod that is gone keeps its counters exported a while: count sidecars by the gauge
    assert "memory_working_set" in window_queries(300)["sidecars"]


class _Handler(BaseHTTPRequestHandler):
    answers: ClassVar[dict[str, dict[str, Any]]] = {}
    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        form = urllib.parse.parse_qs(body)
        expr = form["query"][0]
        self.seen.append(expr)
        name = None
        for ns in (None, "shop"):
            queries = window_queries(W, ns) | extra_queries(W, ns)
            name = name or next((k for k, q in queries.items() if q == expr), None)
        if name is None:
            code, doc = 400, {"status": "error", "errorType": "bad_data", "error": "unknown"}
        else:
            code, doc = 200, self.answers.get(name, vector())
        data = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def prometheus_api() -> Iterator[str]:
    _Handler.answers, _Handler.seen = ANSWERS, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_main_queries_prometheus_and_writes_the_bundle(
    prometheus_api: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cluster.json"
    assert cluster_main(prometheus_api, "now-1m", "now", output=out, now=END) == 0
    doc = json.loads(out.read_text())
    assert validate(doc) == [] and doc["details"]["window"]["seconds"] == W
    assert doc["details"]["source"]["queries"]["leg_buckets"] in _Handler.seen
    assert len(_Handler.seen) == len(window_queries(W)) + len(extra_queries(W))
    assert doc["service_mesh_config"]["sidecar"]["rps"] == 10
    assert "2 sidecars, 600 requests" in capsys.readouterr().err
    yml = tmp_path / "cluster.yaml"
    assert cluster_main(prometheus_api, str(END - W), str(END), output=yml, now=END) == 0
    assert yml.read_text().startswith("format_version: 1")


def test_report_command_with_prometheus(
    prometheus_api: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from profiler.cli import main as cli

    out = tmp_path / "c.json"
    end = datetime.fromtimestamp(END, UTC).isoformat()
    argv = ["report", "--prometheus", prometheus_api, "--start", str(END - W), "--end", end]
    assert cli([*argv, "--namespace", "shop", "-o", str(out)]) == 0
    assert validate(json.loads(out.read_text())) == []
    assert '{k8s_namespace_name="shop"}' in _Handler.seen[0]
    capsys.readouterr()
    assert cli(["report"]) == 2
    assert cli(["report", "--start", "now-1m"]) == 2
    assert cli([*argv, "--format", "html", "-o", str(out)]) == 2
    assert cli([*argv, str(out)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 and all(line.startswith("smp-profiler: error: ") for line in err)


def test_main_bad_input_is_one_clear_error(prometheus_api: str, tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    with pytest.raises(UsageError, match="needs --start"):
        cluster_main(prometheus_api, None, output=out)
    with pytest.raises(UsageError, match="needs a FILE"):
        cluster_main(None, None, output=out)
    with pytest.raises(UsageError, match="http"):
        cluster_main("prom:9090", "now-1m", output=out)
    with pytest.raises(UsageError, match="after --start"):
        cluster_main(prometheus_api, "now", "now-1m", output=out)
    with pytest.raises(UsageError, match="format"):
        cluster_main(prometheus_api, "now-1m", output=out, fmt="xml")
    with pytest.raises(TargetUnreachable):
        cluster_main("http://127.0.0.1:9", "now-1m", output=out)
    assert not out.exists()


def test_buckets_of_real_answers_are_sorted_with_inf_last() -> None:
    w = window_from(ANSWERS)
    les = [le for le, _ in w.legs["sidecar_total"]]
    assert les == sorted(les) and math.isinf(les[-1])
