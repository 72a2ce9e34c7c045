"""JSON: the report's numbers as data (``smp`` gives the SMP documents alone)."""

from __future__ import annotations

import json

from profiler.report.base import Renderer
from profiler.report.source import Source
from profiler.report.summary import summary


class Json(Renderer):
    name = "json"

    def render(self, src: Source) -> str:
        return json.dumps(summary(src), indent=2) + "\n"


RENDERER = Json
