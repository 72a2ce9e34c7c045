"""The run bundle: everything ``smp-profiler run`` measured, written once, reported offline.

A bundle file holds the SMP v0.6.1 documents (``performance_test_config``,
``performance_test_results``, ``service_mesh_config``, ``environment_config``), our ``details``
extension that each result's ``details_uri`` points into, and ``run``: the raw records (every
load result with its histogram and every capture, per step, role and repetition) from which
the documents are derived. Reading a bundle reads ``run`` and derives the rest again, so a
report never depends on numbers that are not in the raw records.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from profiler.errors import BadInputFile
from profiler.loadgen.result import LoadResult

FORMAT_VERSION = 1
KIND = "smp-profiler/run-bundle"
ROLES = ("mesh", "baseline")


@dataclass
class RunConfig:
    """What was asked for."""

    target: str
    rates: list[float]
    step_duration_s: float
    warmup_s: float
    repeat: int
    generator: str
    connections: int
    baseline_target: str | None = None
    sidecar_pids: list[int] = field(default_factory=list)
    app_pids: list[int] = field(default_factory=list)
    baseline_app_pids: list[int] = field(default_factory=list)  # captured too: same probe cost
    netns: str | None = None
    baseline_netns: str | None = None
    testbed: str | None = None
    baseline_testbed: str | None = None
    max_error_rate: float = 0.01  # a step failing more than this makes the run exit 6


@dataclass
class MeshInfo:
    """The mesh under test, as far as it can be known from the node."""

    # An SMP ServiceMesh.Type name, only from evidence (an Istio or Linkerd process on the
    # path); a plain Envoy or no sidecar is INVALID_MESH, SMP's "unknown", and `evidence` says why.
    mesh_type: str = "INVALID_MESH"
    proxy_build: str | None = None  # the proxy's own build (`envoy --version`), never the mesh's
    proxy_concurrency: int | None = None
    mtls_enabled: bool = False
    sidecar_count: int = 0
    proxy: str | None = None  # "envoy", "linkerd2-proxy"; None: no sidecar on the path
    mesh_version: str | None = None  # the mesh's own version when known (never the proxy's)
    evidence: str | None = None  # what mesh_type is based on, in words


@dataclass
class Environment:
    """The node the run ran on."""

    hostname: str
    kernel: str
    os: str
    arch: str
    cpu_model: str
    cores: int
    threads_per_core: int | None
    mem_mb: int
    kubernetes_version: str | None = None


@dataclass
class StepRecord:
    """One measured window: a rate step, a role (mesh or baseline), a repetition."""

    step: int
    rate: float
    role: str
    repetition: int
    load: LoadResult
    capture: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "rate": self.rate,
            "role": self.role,
            "repetition": self.repetition,
            "load": self.load.to_json(),
            "capture": self.capture,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> StepRecord:
        role = str(d["role"])
        if role not in ROLES:
            raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
        cap = d.get("capture")
        if cap is not None and not isinstance(cap, dict):
            raise ValueError("capture is not an object")
        return cls(
            step=int(d["step"]),
            rate=float(d["rate"]),
            role=role,
            repetition=int(d["repetition"]),
            load=LoadResult.from_json(d["load"]),
            capture=cap,
        )


@dataclass
class RunBundle:
    """The raw record of a run, plus the ids that link its SMP documents."""

    config: RunConfig
    mesh: MeshInfo
    environment: Environment
    records: list[StepRecord]
    test_id: str
    mesh_config_id: str
    env_id: str
    result_ids: list[str]  # one per rate step, in step order
    created: datetime
    tool_version: str
    seed: int = 0  # of the bootstrap: the same bundle always gives the same intervals
    notes: list[str] = field(default_factory=list)

    def records_of(self, step: int, role: str) -> list[StepRecord]:
        return [r for r in self.records if r.step == step and r.role == role]

    def run_json(self) -> dict[str, Any]:
        return {
            "tool_version": self.tool_version,
            "created": self.created.astimezone(UTC).isoformat(),
            "seed": self.seed,
            "ids": {
                "test_id": self.test_id,
                "mesh_config_id": self.mesh_config_id,
                "env_id": self.env_id,
                "result_ids": list(self.result_ids),
            },
            "config": asdict(self.config),
            "mesh": asdict(self.mesh),
            "environment": asdict(self.environment),
            "records": [r.to_json() for r in self.records],
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, d: Any) -> RunBundle:
        if not isinstance(d, dict) or d.get("kind") != KIND:
            raise BadInputFile(f'not a run bundle (no "kind": "{KIND}")')
        if d.get("format_version") != FORMAT_VERSION:
            raise BadInputFile(
                f"run bundle format_version {d.get('format_version')!r} is not {FORMAT_VERSION}"
            )
        try:
            run = d["run"]
            ids = run["ids"]
            bundle = cls(
                config=RunConfig(**run["config"]),
                mesh=MeshInfo(**run["mesh"]),
                environment=Environment(**run["environment"]),
                records=[StepRecord.from_json(r) for r in run["records"]],
                test_id=str(ids["test_id"]),
                mesh_config_id=str(ids["mesh_config_id"]),
                env_id=str(ids["env_id"]),
                result_ids=[str(x) for x in ids["result_ids"]],
                created=datetime.fromisoformat(run["created"]),
                tool_version=str(run["tool_version"]),
                seed=int(run.get("seed", 0)),
                notes=[str(n) for n in run.get("notes", [])],
            )
        except BadInputFile:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise BadInputFile(f"malformed run bundle: {type(e).__name__}: {e}") from None
        if len(bundle.result_ids) != len(bundle.config.rates):
            raise BadInputFile("malformed run bundle: one result id per rate step is needed")
        return bundle


def dumps(doc: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(doc, indent=2) + "\n"
    if fmt == "yaml":
        import yaml

        return str(yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=100))
    raise ValueError(f"unknown format {fmt!r}")


def load_file(path: Path) -> dict[str, Any]:
    """Read a JSON or YAML document; any problem is one BadInputFile line."""
    try:
        text = path.read_text()
    except OSError as e:
        raise BadInputFile(f"{path}: {e.strerror or e}") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # json.JSONDecodeError, yaml.YAMLError
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BadInputFile(
            f"{path}: not valid {path.suffix.lstrip('.') or 'JSON'}: {first}"
        ) from None
    if not isinstance(data, dict):
        raise BadInputFile(f"{path}: not an object at the top level")
    return data


def read_bundle(path: Path) -> RunBundle:
    return RunBundle.from_json(load_file(path))
