"""Read and validate SMP v0.6.1 documents.

:func:`validate` is strict about what smp-profiler writes: snake_case field names of the SMP
messages only, each with its proto type (int32/int64 as JSON integers within range, doubles as
numbers, enums by name, timestamps as RFC 3339 UTC strings). It returns the problems found.

:func:`read_documents` is lenient about what others write, as protobuf JSON parsers are:
lowerCamelCase or snake_case names, 64-bit integers as strings, enums by name or number,
timestamps as strings or ``{"seconds", "nanos"}``; it returns the documents normalised to what
:func:`validate` accepts, and raises :class:`BadInputFile` (one line) on anything else.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from profiler.errors import BadInputFile
from profiler.smp.schema import (
    DOCUMENTS,
    ENUMS,
    INT32_MAX,
    INT64_MAX,
    MESSAGES,
    SMP_VERSION,
    camel,
)


class _Bad(ValueError):
    pass


def _parse_time(value: str) -> datetime:
    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    t = datetime.fromisoformat(text)
    if t.tzinfo is None:
        raise _Bad("timestamp without a time zone")
    return t


def format_time(t: datetime) -> str:
    """RFC 3339 in UTC with a Z, as protobuf JSON writes a Timestamp."""
    return t.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _int(value: Any, where: str, limit: int, strict: bool) -> int:
    if isinstance(value, bool):
        raise _Bad(f"{where}: a boolean where an integer belongs")
    if isinstance(value, int):
        n = value
    elif not strict and (
        (isinstance(value, str) and value.lstrip("-").isdigit())
        or (isinstance(value, float) and value.is_integer())
    ):
        n = int(value)
    else:
        raise _Bad(f"{where}: {value!r} is not an integer")
    if not -limit - 1 <= n <= limit:
        raise _Bad(f"{where}: {n} is out of range")
    return n


def _scalar(kind: str, value: Any, where: str, strict: bool) -> Any:
    if kind == "string":
        if not isinstance(value, str):
            raise _Bad(f"{where}: {value!r} is not a string")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise _Bad(f"{where}: {value!r} is not a boolean")
        return value
    if kind in ("int32", "int64"):
        return _int(value, where, INT32_MAX if kind == "int32" else INT64_MAX, strict)
    if kind == "double":
        if isinstance(value, bool) or not isinstance(value, int | float):
            if strict or not isinstance(value, str):
                raise _Bad(f"{where}: {value!r} is not a number")
            try:
                value = float(value)
            except ValueError:
                raise _Bad(f"{where}: {value!r} is not a number") from None
        if not math.isfinite(value):
            raise _Bad(f"{where}: {value!r} is not a finite number")
        return float(value) if not strict else value
    if kind == "timestamp":
        if not strict and isinstance(value, dict) and "seconds" in value:
            secs = _int(value["seconds"], where, INT64_MAX, False)
            nanos = _int(value.get("nanos", 0), where, INT32_MAX, False)
            return format_time(datetime.fromtimestamp(secs + nanos / 1e9, UTC))
        if not isinstance(value, str):
            raise _Bad(f"{where}: {value!r} is not a timestamp")
        try:
            t = _parse_time(value)
        except ValueError:
            raise _Bad(f"{where}: {value!r} is not an RFC 3339 timestamp") from None
        if strict and not value.endswith("Z"):
            raise _Bad(f"{where}: {value!r} is not in UTC (Z)")
        return value if strict else format_time(t)
    if kind == "map":
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise _Bad(f"{where}: not a map of strings to strings")
        return dict(value)
    if kind.startswith("enum:"):
        names = ENUMS[kind[5:]]
        if isinstance(value, str) and value in names:
            return value
        if not strict and isinstance(value, int) and not isinstance(value, bool):
            for name, number in names.items():
                if number == value:
                    return name
        raise _Bad(f"{where}: {value!r} is not a {kind[5:]} value")
    raise AssertionError(kind)


def _value(kind: str, value: Any, where: str, strict: bool) -> Any:
    if kind.startswith("repeated:"):
        if not isinstance(value, list):
            raise _Bad(f"{where}: not a list")
        inner = kind[9:]
        return [_value(inner, v, f"{where}[{i}]", strict) for i, v in enumerate(value)]
    if kind.startswith("msg:"):
        return _message(kind[4:], value, where, strict)
    return _scalar(kind, value, where, strict)


def _message(name: str, doc: Any, where: str, strict: bool) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise _Bad(f"{where}: not an object ({name})")
    fields = MESSAGES[name]
    by_camel = {camel(f): f for f in fields}
    out: dict[str, Any] = {}
    for key, value in doc.items():
        field = key if key in fields else (None if strict else by_camel.get(key))
        if field is None:
            raise _Bad(f"{where}.{key}: not a field of SMP {name}")
        if field in out:
            raise _Bad(f"{where}.{key}: given twice")
        if value is None and not strict:
            continue
        out[field] = _value(fields[field], value, f"{where}.{key}", strict)
    return out


def _documents(data: Any, strict: bool) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise _Bad("not an object")
    by_camel = {camel(k): k for k in DOCUMENTS}
    found: dict[str, Any] = {}
    for key, value in data.items():
        name = key if key in DOCUMENTS else (None if strict else by_camel.get(key))
        if name is None:
            continue  # not an SMP document (details, run, format_version, ...)
        message, repeated = DOCUMENTS[name]
        kind = ("repeated:msg:" if repeated else "msg:") + message
        found[name] = _value(kind, value, name, strict)
    if not found:
        raise _Bad("no SMP document (performance_test_config, performance_test_results, ...)")
    return found


def validate(data: Any) -> list[str]:
    """Problems with the SMP documents in ``data`` (a bundle or a dict of documents)."""
    try:
        docs = _documents(data, strict=True)
    except _Bad as e:
        return [str(e)]
    problems: list[str] = []
    problems.extend(_links(docs))
    return problems


def _links(docs: dict[str, Any]) -> list[str]:
    """Ids present and linking: every result names the config, mesh and environment."""
    out: list[str] = []
    ids = {
        "test_id": docs.get("performance_test_config", {}).get("id"),
        "mesh_config_id": docs.get("service_mesh_config", {}).get("id"),
        "env_id": docs.get("environment_config", {}).get("id"),
    }
    for i, result in enumerate(docs.get("performance_test_results", [])):
        for key, want in ids.items():
            if want is not None and result.get(key) != want:
                out.append(f"performance_test_results[{i}].{key} does not link to {want}")
    return out


def read_documents(data: Any, source: str = "input") -> dict[str, Any]:
    """SMP documents from JSON data in either spelling; malformed input is BadInputFile."""
    try:
        return _documents(data, strict=False)
    except _Bad as e:
        raise BadInputFile(f"{source}: not valid SMP {SMP_VERSION}: {e}") from None
