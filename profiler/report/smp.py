"""SMP v0.6.1 documents only (JSON, or YAML with ``yaml=True``), checked before they go out.

Our own bundles keep their ``details`` extension (each result's ``details_uri`` points into it);
converted load-test results too. SMP input from another tool is written back as it was read.
"""

from __future__ import annotations

import json
from typing import Any

from profiler.errors import BadInputFile
from profiler.report.base import Renderer
from profiler.report.source import Source

DOCS = (
    "smp_version",
    "performance_test_config",
    "performance_test_results",
    "service_mesh_config",
    "environment_config",
    "details",
)


def documents(src: Source) -> dict[str, Any]:
    from profiler.smp.read import validate

    if src.documents is None:
        raise BadInputFile(
            f"{src.path}: a {src.kind} has no SMP documents (`smp-profiler run` makes them)"
        )
    docs = {k: src.documents[k] for k in DOCS if k in src.documents}
    problems = validate(docs)
    if problems:
        raise BadInputFile(f"{src.path}: the SMP documents do not validate: {problems[0]}")
    return docs


class Smp(Renderer):
    name = "smp"

    def render(self, src: Source) -> str:
        docs = documents(src)
        if self.options.get("yaml"):
            import yaml

            return str(yaml.safe_dump(docs, sort_keys=False, width=100))
        return json.dumps(docs, indent=2) + "\n"


RENDERER = Smp
