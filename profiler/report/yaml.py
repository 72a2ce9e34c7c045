"""YAML: the same data as the json renderer."""

from __future__ import annotations

from profiler.report.base import Renderer
from profiler.report.source import Source
from profiler.report.summary import summary


class Yaml(Renderer):
    name = "yaml"

    def render(self, src: Source) -> str:
        import yaml

        return str(yaml.safe_dump(summary(src), sort_keys=False, width=100))


RENDERER = Yaml
