"""The SMP v0.6.1 messages as data, read from the SMP protos shipped in ``protos/``.

The ``.proto`` files (``profiler/smp/protos/``, Apache-2.0, from layer5io's
service-mesh-performance repository) are the authority; this module reads them with a small
parser of the proto3 subset they use (messages, nested messages and enums, scalar, ``repeated``
and ``map<string, string>`` fields, ``google.protobuf.Timestamp``) so that there is no second,
hand-written copy of the format. ``tests/unit/test_smp_protos.py`` checks this table against
protoc's own descriptors and parses every document the product writes with protobuf's JSON
parser.

A type is one of ``string bool int32 int64 double timestamp map`` (map<string, string>),
``enum:<Name>``, ``msg:<Name>``, with a ``repeated:`` prefix for lists; message and enum names
are qualified by their parents (``PerformanceTestConfig.Client``, ``ServiceMesh.Type``).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

SMP_VERSION = "v0.6.1"
PROTO_DIR = Path(__file__).resolve().parent / "protos"
PROTO_FILES = ("metadata.proto", "service_mesh.proto", "service_mesh_performance.proto")

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

_SCALARS = {"string", "bool", "int32", "int64", "double"}
_TOKEN = re.compile(r"map<[^>]*>|[A-Za-z_][\w.]*|\d+|[{};=]|\S")


def _tokens(text: str) -> list[str]:
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r'"[^"]*"', '"s"', text)
    return _TOKEN.findall(text)


def _parse(
    tokens: list[str],
    i: int,
    scope: str,
    msgs: dict[str, dict[str, str]],
    enums: dict[str, dict[str, int]],
) -> int:
    """Parse the body of a message (or the file, scope "") from token i; returns the end."""
    fields: dict[str, str] = {}
    while i < len(tokens) and tokens[i] != "}":
        t = tokens[i]
        if t in ("syntax", "package", "option", "import"):
            while tokens[i] != ";":
                i += 1
            i += 1
        elif t == "message":
            name = f"{scope}.{tokens[i + 1]}" if scope else tokens[i + 1]
            msgs.setdefault(name, {})
            i = _parse(tokens, i + 3, name, msgs, enums) + 1
        elif t == "enum":
            name = f"{scope}.{tokens[i + 1]}" if scope else tokens[i + 1]
            values: dict[str, int] = {}
            i += 3
            while tokens[i] != "}":
                values[tokens[i]] = int(tokens[i + 2])  # NAME = N ;
                i += 4
            enums[name] = values
            i += 1
        else:  # a field: [repeated] TYPE NAME = N ;
            repeated = t == "repeated"
            if repeated:
                i += 1
            kind, name = tokens[i], tokens[i + 1]
            if tokens[i + 2] != "=" or tokens[i + 4] != ";":
                raise ValueError(
                    f"SMP protos: cannot read the field at {' '.join(tokens[i : i + 5])}"
                )
            fields[name] = ("repeated:" if repeated else "") + kind
            i += 5
    if scope:
        msgs[scope] = fields
    return i


def _resolve(
    kind: str, scope: str, msgs: dict[str, dict[str, str]], enums: dict[str, dict[str, int]]
) -> str:
    prefix = ""
    if kind.startswith("repeated:"):
        prefix, kind = "repeated:", kind[9:]
    if kind in _SCALARS:
        return prefix + kind
    if kind == "google.protobuf.Timestamp":
        return prefix + "timestamp"
    if re.fullmatch(r"map<\s*string\s*,\s*string\s*>", kind):
        return "map"
    parts = scope.split(".")
    for n in range(len(parts), -1, -1):  # innermost scope first, as protoc resolves
        name = ".".join([*parts[:n], kind]) if n else kind
        if name in msgs:
            return f"{prefix}msg:{name}"
        if name in enums:
            return f"{prefix}enum:{name}"
    raise ValueError(f"SMP protos: unknown type {kind!r} in {scope}")


@cache
def _schema() -> tuple[dict[str, dict[str, str]], dict[str, dict[str, int]]]:
    msgs: dict[str, dict[str, str]] = {}
    enums: dict[str, dict[str, int]] = {}
    for f in PROTO_FILES:
        _parse(_tokens((PROTO_DIR / f).read_text()), 0, "", msgs, enums)
    resolved = {
        m: {k: _resolve(v, m, msgs, enums) for k, v in fields.items()} for m, fields in msgs.items()
    }
    return resolved, enums


MESSAGES, ENUMS = _schema()

# The four documents of a bundle and the message of each (results are a list).
DOCUMENTS: dict[str, tuple[str, bool]] = {
    "performance_test_config": ("PerformanceTestConfig", False),
    "performance_test_results": ("PerformanceTestResult", True),
    "service_mesh_config": ("ServiceMeshConfig", False),
    "environment_config": ("EnvironmentConfig", False),
}


def enum_value(enum: str, name: str) -> str:
    """``name`` if it is a value of the SMP enum ``enum`` ("ServiceMesh.Type"), else ValueError."""
    if name not in ENUMS[enum]:
        raise ValueError(f"{name!r} is not an SMP {enum} value ({', '.join(ENUMS[enum])})")
    return name


def camel(name: str) -> str:
    """snake_case -> lowerCamelCase, the canonical protobuf JSON spelling."""
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)
