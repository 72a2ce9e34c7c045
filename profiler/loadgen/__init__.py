"""Load generators: the built-in open-loop one and adapters for wrk, hey, fortio, Nighthawk."""

from __future__ import annotations

from profiler.loadgen.result import LoadResult, LoadSpec

__all__ = ["LoadResult", "LoadSpec"]
