"""Reports: read a result file (:func:`load`), render it (:func:`get` a renderer by name)."""

from profiler.report.base import FORMATS, Renderer, format_for, get
from profiler.report.source import Source, load

__all__ = ["FORMATS", "Renderer", "Source", "format_for", "get", "load"]
