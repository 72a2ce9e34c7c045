"""What a result file is: a capture, a run bundle, fortio or Nighthawk JSON, or SMP documents.

:func:`load` recognises the file by its content (never by its name) and returns a
:class:`Source`. Plain load-test results (fortio, Nighthawk) become a mesh-only run bundle, so
they get the same SMP documents as our own runs, with ids derived from the file's content and
everything the file cannot know (mesh, node) left empty.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Any

from profiler.errors import BadInputFile
from profiler.loadgen.result import LoadResult
from profiler.model import KIND as BUNDLE_KIND
from profiler.model import Environment, MeshInfo, RunBundle, RunConfig, StepRecord
from profiler.smp.bundle import bundle_json

KINDS = ("bundle", "capture", "fortio", "nighthawk", "smp")
SECONDS_SLIP_MS = 0.01  # a p50 below 10 us in latencies_ms is most likely seconds (Meshery)


@dataclass
class Source:
    """One input file, recognised."""

    path: Path
    kind: str  # one of KINDS
    raw: Any  # the parsed file
    bundle: RunBundle | None = None  # bundle, fortio, nighthawk
    documents: dict[str, Any] | None = None  # SMP documents (+ "details" for bundles)
    capture: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.name


def _parse_text(path: Path) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise BadInputFile(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadInputFile(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    if not text.strip():
        raise BadInputFile(f"{path}: empty file, not a result file")
    if path.suffix not in (".yaml", ".yml"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            if path.suffix == ".json" or text.lstrip()[:1] in ("{", "["):
                raise BadInputFile(
                    f"{path}: not valid JSON (truncated?): {e.msg} (line {e.lineno})"
                ) from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BadInputFile(f"{path}: not valid YAML: {first}") from None


def _ids(path: Path, raw: Any) -> dict[str, str]:
    """Stable ids for a converted file: the same file always gives the same documents."""
    digest = hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()
    ns = uuid.uuid5(uuid.NAMESPACE_URL, f"urn:smp-profiler:converted:{digest}")
    return {k: str(uuid.uuid5(ns, k)) for k in ("test", "mesh", "env")}


UNKNOWN_ENV = Environment(
    hostname="", kernel="", os="", arch="", cpu_model="", cores=0, threads_per_core=None, mem_mb=0
)


def bundle_from_loads(loads: list[LoadResult], path: Path, raw: Any) -> RunBundle:
    """A mesh-only bundle: one rate step per load result, in the file's order."""
    first = loads[0]
    ids = _ids(path, raw)
    ns = uuid.UUID(ids["test"])
    return RunBundle(
        config=RunConfig(
            target=first.target,
            rates=[r.rate_asked or 0.0 for r in loads],
            step_duration_s=first.duration_s,
            warmup_s=0.0,
            repeat=1,
            generator=first.generator,
            connections=first.connections,
        ),
        mesh=MeshInfo(mesh_type="INVALID_MESH"),
        environment=UNKNOWN_ENV,
        records=[
            StepRecord(step=i, rate=r.rate_asked or 0.0, role="mesh", repetition=0, load=r)
            for i, r in enumerate(loads)
        ],
        test_id=ids["test"],
        mesh_config_id=ids["mesh"],
        env_id=ids["env"],
        result_ids=[str(uuid.uuid5(ns, f"result-{i}")) for i in range(len(loads))],
        created=min(r.start_time for r in loads).astimezone(UTC),
        tool_version=first.generator_version or "",
        seed=0,
        notes=[n for r in loads for n in r.notes],
    )


def converted_documents(b: RunBundle, kind: str) -> dict[str, Any]:
    """SMP documents of a converted load-test result: what the file cannot know stays empty."""
    docs = bundle_json(b)
    for key in ("format_version", "kind", "run"):
        docs.pop(key, None)
    cfg = docs["performance_test_config"]
    labels = cfg["labels"]
    for key in ("tool", "tool_version", "repeat", "warmup", "testbed"):
        labels.pop(key, None)
    labels["converted_from"] = kind
    labels["converted_by"] = "smp-profiler report"
    cfg["name"] = f"{kind} result converted by smp-profiler"
    docs["service_mesh_config"] = {
        "smp_version": docs["smp_version"],
        "id": b.mesh_config_id,
        "labels": {"mesh": "unknown (not in the load-test result)"},
    }
    docs["environment_config"] = {
        "smp_version": docs["smp_version"],
        "id": b.env_id,
        "labels": {"environment": "unknown (not in the load-test result)"},
    }
    return docs


def _is_nighthawk(raw: Any) -> bool:
    return (
        isinstance(raw, dict)
        and isinstance(raw.get("results"), list)
        and any(isinstance(r, dict) and "statistics" in r for r in raw["results"])
    )


def _smp_documents(path: Path, raw: Any) -> dict[str, Any] | None:
    from profiler.smp.read import read_documents

    if not isinstance(raw, dict):
        return None
    if "latencies_ms" in raw or "latenciesMs" in raw:  # one bare PerformanceTestResult
        raw = {"performance_test_results": [raw]}
    elif not any(
        k.replace("_", "").lower()
        in (
            "performancetestconfig",
            "performancetestresults",
            "servicemeshconfig",
            "environmentconfig",
        )
        for k in raw
    ):
        return None
    return read_documents(raw, str(path))


def _smp_notes(path: Path, docs: dict[str, Any]) -> list[str]:
    from profiler.smp.schema import SMP_VERSION

    notes = []
    results = docs.get("performance_test_results") or []
    if not results:
        raise BadInputFile(f"{path}: SMP documents without performance_test_results: no result")
    versions = sorted({str(r.get("smp_version")) for r in results if r.get("smp_version")})
    if versions and versions != [SMP_VERSION]:
        notes.append(
            f"written as SMP {', '.join(versions)}, read as {SMP_VERSION}; Meshery's exports put "
            "fortio's seconds into latencies_ms: check the unit"
        )
    if any(not r.get("test_id") for r in results):
        notes.append("results without a test_id: they link to no test, mesh or environment")
    for i, r in enumerate(results):
        p50 = (r.get("latencies_ms") or {}).get("p50")
        if p50 is not None and 0 < p50 < SECONDS_SLIP_MS:
            notes.append(
                f"result {i}: p50 {p50:g} ms is implausibly small: these are probably seconds "
                "(Meshery copies fortio's seconds into latencies_ms)"
            )
    return notes


def bundle_source(
    path: Path, bundle: RunBundle, raw: Any, documents: dict[str, Any] | None = None
) -> Source:
    """A run bundle as a source: ``raw`` is the file's JSON, ``documents`` its documents
    (``bundle_json(bundle)``, made when not given). ``run`` and ``demo`` hand in what they
    just wrote, so their summary needs no reading back."""
    docs = bundle_json(bundle) if documents is None else documents
    return Source(path, "bundle", raw, bundle=bundle, documents=docs)


def load(path: Path) -> Source:
    """Read and recognise one result file; anything else is one BadInputFile line."""
    from profiler.capture.document import is_capture
    from profiler.loadgen import fortio, nighthawk

    raw = _parse_text(path)
    if isinstance(raw, dict) and raw.get("kind") == BUNDLE_KIND:
        try:
            bundle = RunBundle.from_json(raw)
        except BadInputFile as e:
            raise BadInputFile(f"{path}: {e}") from None
        return bundle_source(path, bundle, raw)
    if is_capture(raw):
        return Source(path, "capture", raw, capture=dict(raw))
    if isinstance(raw, dict | list) and list(fortio._runs(raw)):
        b = bundle_from_loads(fortio.parse(raw), path, raw)
        return Source(path, "fortio", raw, bundle=b, documents=converted_documents(b, "fortio"))
    if _is_nighthawk(raw):
        b = bundle_from_loads([nighthawk.parse(raw)], path, raw)
        docs = converted_documents(b, "nighthawk")
        return Source(path, "nighthawk", raw, bundle=b, documents=docs)
    smp_docs = _smp_documents(path, raw)
    if smp_docs is not None:
        return Source(path, "smp", raw, documents=smp_docs, notes=_smp_notes(path, smp_docs))
    raise BadInputFile(
        f"{path}: not a result file (neither a capture, a run bundle, fortio or Nighthawk "
        "JSON, nor SMP documents)"
    )
