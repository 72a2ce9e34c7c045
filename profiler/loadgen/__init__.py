"""Load generators: the built-in open-loop one and adapters for wrk, hey, fortio, Nighthawk.

``run_load(LoadSpec(...)) -> LoadResult`` runs the one named by ``spec.generator``; every
adapter returns the same :class:`LoadResult`. The parsers read saved outputs offline:
``fortio.parse``, ``nighthawk.parse``, ``wrk.parse``, ``hey.parse``.
"""

from __future__ import annotations

from profiler.errors import UsageError
from profiler.loadgen.result import GENERATORS, LoadResult, LoadSpec

__all__ = ["GENERATORS", "LoadResult", "LoadSpec", "run_load"]


def run_load(spec: LoadSpec) -> LoadResult:
    """Run ``spec.generator`` against ``spec.target``; the measured window's result."""
    if spec.generator == "builtin":
        from profiler.loadgen import builtin as gen
    elif spec.generator == "wrk":
        from profiler.loadgen import wrk as gen  # type: ignore[no-redef]
    elif spec.generator == "hey":
        from profiler.loadgen import hey as gen  # type: ignore[no-redef]
    elif spec.generator == "fortio":
        from profiler.loadgen import fortio as gen  # type: ignore[no-redef]
    elif spec.generator == "nighthawk":
        from profiler.loadgen import nighthawk as gen  # type: ignore[no-redef]
    else:
        raise UsageError(
            f"unknown load generator '{spec.generator}' (one of: {', '.join(GENERATORS)})"
        )
    return gen.run(spec)
