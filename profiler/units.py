"""The units and spellings every result shares: which percentiles a latency summary has, and
how a percentile is named where.

Durations: the probe and the engine count ns, histograms and the spans file µs, documents ms
(keys end in ``_ms``/``_us``); the conversions happen where a value is written.
"""

from __future__ import annotations

# Every latency summary (load results, captures, bundles, the cluster bundle): these.
PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)


def pname(p: float) -> str:
    """50 -> "p50", 99.9 -> "p99.9": a percentile's name in notes and ``computed`` lists."""
    return f"p{p:g}"


def pkey(p: float) -> str:
    """50 -> "p50", 99.9 -> "p999": a percentile's key in documents (``p999_ms``)."""
    return "p" + f"{p:g}".replace(".", "")
