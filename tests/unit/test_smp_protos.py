"""Every SMP document the product writes parses with protobuf's own JSON parser against the SMP
protos (profiler/smp/protos/, compiled here with grpc_tools.protoc; unknown fields and wrong
enum spellings rejected), and the product's field table is the protos' own.

Bugs caught: ``"protocol": "HTTP"`` (the enum value is PROTOCOL_HTTP), a field the protos lack
(``additional_options``), a float where an int32 belongs, a mesh type that is no enum value,
a schema table that drifts from the protos.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import FieldDescriptor

from profiler.commands import report as report_cmd
from profiler.daemon.cluster import build_bundle
from profiler.smp.bundle import bundle_json, write_bundle
from profiler.smp.schema import DOCUMENTS, ENUMS, MESSAGES, PROTO_DIR, PROTO_FILES
from tests.unit import smp_fixtures as fx
from tests.unit.test_cluster import ANSWERS, END, W, reporters_from, window_from

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
Parser = Callable[[str, Any], None]


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> descriptor_pool.DescriptorPool:
    """The protos compiled by protoc (grpc_tools) into a descriptor set, loaded in a pool."""
    out = tmp_path_factory.mktemp("smp-protos") / "smp.pb"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_DIR.parent}",
            f"-I{Path(__import__('grpc_tools').__file__).parent / '_proto'}",
            "--include_imports",
            f"--descriptor_set_out={out}",
            *(f"protos/{f}" for f in PROTO_FILES),
        ],
        cwd=PROTO_DIR.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    p = descriptor_pool.DescriptorPool()
    for f in fds.file:
        p.Add(f)
    return p


@pytest.fixture(scope="module")
def parse(pool: descriptor_pool.DescriptorPool) -> Parser:
    def parse_as(message: str, doc: Any) -> None:
        cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"smp.{message}"))
        json_format.ParseDict(doc, cls(), ignore_unknown_fields=False)

    return parse_as


def parse_documents(parse: Parser, doc: dict[str, Any]) -> int:
    """Parse each SMP document of ``doc`` as its message; how many were parsed."""
    n = 0
    for key, (message, repeated) in DOCUMENTS.items():
        if key not in doc:
            continue
        for one in doc[key] if repeated else [doc[key]]:
            parse(message, one)
            n += 1
    return n


def test_the_parser_rejects_what_the_old_writer_wrote(parse: Parser) -> None:
    """The check can fail: the spellings issue 15 found are rejected."""
    doc = bundle_json(fx.bundle(rates=(100.0,), repeat=1))
    client = json.loads(json.dumps(doc["performance_test_config"]))
    client["clients"][0]["protocol"] = "HTTP"
    with pytest.raises(json_format.ParseError, match="HTTP"):
        parse("PerformanceTestConfig", client)
    client["clients"][0]["protocol"] = "PROTOCOL_HTTP"
    client["clients"][0]["additional_options"] = "rates=100"
    with pytest.raises(json_format.ParseError, match="additional_options"):
        parse("PerformanceTestConfig", client)
    mesh = json.loads(json.dumps(doc["service_mesh_config"]))
    mesh["mesh_type"]["type"] = "CILIUM_SERVICE_MESH"  # in SMP.md's prose, not in the protos
    with pytest.raises(json_format.ParseError):
        parse("ServiceMeshConfig", mesh)
    mesh = json.loads(json.dumps(doc["service_mesh_config"]))
    mesh["sidecar"]["cpu_mcores"] = 12.5
    with pytest.raises(json_format.ParseError):
        parse("ServiceMeshConfig", mesh)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"repeat": 1, "baseline": False, "with_capture": False},
        {"rates": (100.0, 200.0, 400.0), "repeat": 3},
    ],
)
def test_run_bundles_parse(parse: Parser, kw: dict[str, Any]) -> None:
    doc = bundle_json(fx.bundle(**kw))
    assert parse_documents(parse, doc) == 3 + len(doc["performance_test_results"])


def test_a_run_without_any_success_parses_and_has_no_latency(parse: Parser) -> None:
    b = fx.bundle(rates=(100.0,), repeat=1, baseline=False, with_capture=False)
    load = b.records[0].load
    load.status_counts = {503: load.requests}
    load.error_histogram, load.histogram = load.histogram, None
    load.percentiles_ms, load.min_ms, load.mean_ms, load.max_ms = {}, None, None, None
    doc = bundle_json(b)
    parse_documents(parse, doc)
    result = doc["performance_test_results"][0]
    assert "latencies_ms" not in result  # no success: no latency, rather than zeros
    assert result["actual_qps"] == 0.0 and result["labels"]["error_rate"] == "1"


@pytest.mark.parametrize(
    "make",
    [
        lambda tmp: (
            write_bundle(fx.bundle(rates=(100.0, 200.0), repeat=2), tmp / "b.json")
            and tmp / "b.json"
        ),
        lambda tmp: FIXTURES / "loadgen" / "meshery-fortio-results.json",
        lambda tmp: FIXTURES / "loadgen" / "nighthawk-output.json",
        lambda tmp: FIXTURES / "report" / "bundle.json",
    ],
    ids=["bundle", "fortio", "nighthawk", "stored-bundle"],
)
def test_report_format_smp_parses(
    parse: Parser, tmp_path: Path, make: Callable[[Path], Path]
) -> None:
    src = make(tmp_path)
    out = tmp_path / "smp.json"
    assert report_cmd.main(file=src, fmt="smp", output=out, width=None) == 0
    doc = json.loads(out.read_text())
    assert parse_documents(parse, doc) >= 4


def test_a_grpc_import_is_protocol_grpc(parse: Parser, tmp_path: Path) -> None:
    raw = json.loads((FIXTURES / "loadgen" / "meshery-fortio-results.json").read_text())
    run = raw[0]["runner_results"][0]
    run["RunType"], run["RetCodes"] = "GRPC Health", {"SERVING": 78}
    src = tmp_path / "grpc.json"
    src.write_text(json.dumps(run))
    out = tmp_path / "smp.json"
    assert report_cmd.main(file=src, fmt="smp", output=out, width=None) == 0
    doc = json.loads(out.read_text())
    parse_documents(parse, doc)
    assert doc["performance_test_config"]["clients"][0]["protocol"] == "PROTOCOL_GRPC"


def test_cluster_report_parses(parse: Parser) -> None:
    w = window_from(ANSWERS)
    doc = build_bundle(w, END - W, END, "http://prom:9090", "shop", reporters_from(ANSWERS))
    assert parse_documents(parse, doc) == 4


_KIND = {
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_DOUBLE: "double",
}


def test_the_schema_table_is_the_protos(pool: descriptor_pool.DescriptorPool) -> None:
    """profiler/smp/schema.py's table, field by field and type by type, against protoc's."""
    for name, fields in MESSAGES.items():
        d = pool.FindMessageTypeByName(f"smp.{name}")
        want: dict[str, str] = {}
        for f in d.fields:
            if f.message_type is not None and f.message_type.GetOptions().map_entry:
                kind = "map"
            elif f.message_type is not None:
                full = f.message_type.full_name
                kind = "timestamp" if full == "google.protobuf.Timestamp" else "msg:" + full[4:]
            elif f.enum_type is not None:
                kind = "enum:" + f.enum_type.full_name[4:]
            else:
                kind = _KIND[f.type]
            repeated = f.is_repeated and kind != "map"
            want[f.name] = ("repeated:" if repeated else "") + kind
        assert fields == want, name
    for name, values in ENUMS.items():
        e = pool.FindEnumTypeByName(f"smp.{name}")
        assert values == {v.name: v.number for v in e.values}, name
