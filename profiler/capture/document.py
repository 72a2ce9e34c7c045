"""The capture document (capture.json) and its per-request spans file.

The document is the contract ``report``, ``run`` and the SMP mapping build on; see
docs/capture.md. Milliseconds wherever a key ends in ``_ms``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from profiler.capture.engine import SpanRow
from profiler.errors import BadInputFile
from profiler.histogram import LatencyHistogram

KIND = "smp-profiler.capture"
FORMAT_VERSION = 1
SPAN_COLUMNS = (
    "role",
    "pid",
    "tid",
    "request_id",
    "ds_rx_beg_ns",
    "us_tx_end_ns",
    "us_rx_beg_ns",
    "ds_tx_end_ns",
    "request_proxy_us",
    "upstream_us",
    "response_proxy_us",
    "app_us",
    "flags",
    "ds_fd",
    "us_fd",
)


def leg_stats(values_us: Iterable[float] | None, hist: LatencyHistogram) -> dict[str, Any]:
    """count/min/mean/percentiles in ms: exact from the spans when we have them all, else
    from the histogram; the histogram always goes along for merging."""
    arr = None if values_us is None else np.fromiter(values_us, dtype=np.float64)
    out: dict[str, Any] = {"count": int(hist.count)}
    if arr is not None and arr.size == hist.count and arr.size:
        q = np.percentile(arr, [50, 90, 95, 99, 99.9])
        stats = (arr.min(), arr.mean(), *q, arr.max())
    elif hist.count:
        ps = hist.percentiles([50, 90, 95, 99, 99.9])
        stats = (hist.min, hist.mean, *ps.values(), hist.max)
    else:
        stats = (None,) * 8
    keys = ("min_ms", "mean_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms")
    for key, value in zip(keys, stats, strict=True):
        out[key] = None if value is None else round(float(value) / 1000.0, 6)
    out["histogram"] = hist.to_json()
    return out


def proxy_leg_values(rows: list[SpanRow]) -> dict[str, np.ndarray]:
    ds_rx = np.array([r.ds_rx_beg for r in rows], dtype=np.int64)
    us_tx = np.array([r.us_tx_end for r in rows], dtype=np.int64)
    us_rx = np.array([r.us_rx_beg for r in rows], dtype=np.int64)
    ds_tx = np.array([r.ds_tx_end for r in rows], dtype=np.int64)
    # the same rounding to whole microseconds as the histograms
    rp = np.maximum((us_tx - ds_rx + 500) // 1000, 0)
    resp = np.maximum((ds_tx - us_rx + 500) // 1000, 0)
    return {
        "request_proxy": rp.astype(np.float64),
        "upstream": np.maximum((us_rx - us_tx + 500) // 1000, 0).astype(np.float64),
        "response_proxy": resp.astype(np.float64),
        "sidecar_total": np.maximum((us_tx - ds_rx + ds_tx - us_rx + 500) // 1000, 0).astype(
            np.float64
        ),
    }


def write_spans(path: Path, rows: Iterable[SpanRow]) -> int:
    n = 0
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(SPAN_COLUMNS)
        for r in rows:
            if r.role == "sidecar":
                legs = [
                    (r.us_tx_end - r.ds_rx_beg) / 1e3,
                    (r.us_rx_beg - r.us_tx_end) / 1e3,
                    (r.ds_tx_end - r.us_rx_beg) / 1e3,
                    "",
                ]
            else:
                legs = ["", "", "", (r.ds_tx_end - r.ds_rx_beg) / 1e3]
            w.writerow(
                [
                    r.role,
                    r.pid,
                    r.tid,
                    r.request_id,
                    r.ds_rx_beg,
                    r.us_tx_end,
                    r.us_rx_beg,
                    r.ds_tx_end,
                    *legs,
                    r.flags,
                    r.ds_fd,
                    r.us_fd,
                ]
            )
            n += 1
    return n


def read_spans(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def load(path: Path) -> dict[str, Any]:
    """Read a capture file; anything else is one clear BadInputFile line."""
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInputFile(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadInputFile(f"{path}: cannot read: {e}") from None
    except json.JSONDecodeError as e:
        raise BadInputFile(f"{path}: not JSON (truncated?): {e.msg} at line {e.lineno}") from None
    if not is_capture(doc):
        raise BadInputFile(f"{path}: not an smp-profiler capture")
    return dict(doc)


def is_capture(doc: object) -> bool:
    return (
        isinstance(doc, Mapping)
        and doc.get("kind") == KIND
        and isinstance(doc.get("sidecars"), list)
    )
