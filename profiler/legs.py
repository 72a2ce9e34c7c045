"""The legs of a request through a sidecar: the one table of what each leg is.

A proxied request has six instants (struct smp_span, bpf/sidecar.h):

    ds_rx_arr  its first bytes reach the sidecar's downstream socket   (arrival stamp)
    ds_rx_beg  the sidecar reads them
    us_tx_end  the sidecar hands the request to the kernel, upstream
    us_rx_arr  the response's first bytes reach the sidecar's upstream socket (arrival)
    us_rx_beg  the sidecar reads them
    ds_tx_end  the sidecar hands the response to the kernel, downstream

and each leg is the time between two of them. The proxy legs split into ``*_queue`` (bytes
wait in the socket: the sidecar is busy or asleep) and ``*_work`` (the sidecar handles
them). ``sidecar_total`` is the two proxy legs; ``mesh_added`` and ``loopback`` come from
joining the app's span of the same request (the engine). The engine, the capture document,
the spans file, the metrics and the reports take names, titles and help from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Leg:
    name: str
    title: str  # for tables and plots
    help: str  # one line: from which instant to which
    start: str | None = None  # instant it begins at (None: derived, see ``parts``/``joined``)
    end: str | None = None
    parent: str | None = None  # the leg this one is a part of (queue / work)
    parts: tuple[str, ...] = ()  # the legs it is the sum of
    joined: bool = False  # needs the app's span of the same request
    color: str | None = None  # in the plots (the report's stacked bars)
    hatch: str = ""  # in the plots: queue (bytes waiting) hatched, work plain


PROXY: tuple[Leg, ...] = (
    Leg("request_proxy", "request proxy",
        "first request bytes arrive at the sidecar's socket -> request handed upstream",
        "ds_rx_arr", "us_tx_end", color="#4c78a8"),
    Leg("request_proxy_queue", "request queue",
        "request bytes wait in the sidecar's downstream socket until it reads them",
        "ds_rx_arr", "ds_rx_beg", parent="request_proxy", color="#9ecae9", hatch="\\\\"),
    Leg("request_proxy_work", "request work",
        "the sidecar reads the request -> hands it to the kernel upstream",
        "ds_rx_beg", "us_tx_end", parent="request_proxy", color="#4c78a8"),
    Leg("upstream", "upstream",
        "request handed upstream -> first response bytes arrive at the sidecar's socket",
        "us_tx_end", "us_rx_arr", color="#f5c48f", hatch="//"),
    Leg("response_proxy", "response proxy",
        "first response bytes arrive at the sidecar's socket -> response handed downstream",
        "us_rx_arr", "ds_tx_end", color="#54a24b"),
    Leg("response_proxy_queue", "response queue",
        "response bytes wait in the sidecar's upstream socket until it reads them",
        "us_rx_arr", "us_rx_beg", parent="response_proxy", color="#88d27a", hatch="\\\\"),
    Leg("response_proxy_work", "response work",
        "the sidecar reads the response -> hands it to the kernel downstream",
        "us_rx_beg", "ds_tx_end", parent="response_proxy", color="#54a24b"),
    Leg("sidecar_total", "sidecar total", "request_proxy + response_proxy",
        parts=("request_proxy", "response_proxy")),
    Leg("mesh_added", "mesh added",
        "sidecar_total + the loopback hop to the app: the one-run estimate of an A/B delta",
        joined=True),
)  # fmt: skip
APP: tuple[Leg, ...] = (
    Leg("app", "app", "the app reads the request -> writes its response", "ds_rx_beg",
        "ds_tx_end"),
    Leg("loopback", "loopback", "the sidecar's upstream leg minus the app's own time",
        joined=True),
)  # fmt: skip
BY_NAME: dict[str, Leg] = {leg.name: leg for leg in (*PROXY, *APP)}
PROXY_LEGS = tuple(leg.name for leg in PROXY)
APP_LEGS = tuple(leg.name for leg in APP)
# The three legs one after the other, and each split in queue and work.
MAIN = ("request_proxy", "upstream", "response_proxy")
SPLIT = {"request_proxy": ("request_proxy_queue", "request_proxy_work"),
         "response_proxy": ("response_proxy_queue", "response_proxy_work")}  # fmt: skip
INSTANTS = ("ds_rx_arr", "ds_rx_beg", "us_tx_end", "us_rx_arr", "us_rx_beg", "ds_tx_end")


def title(name: str) -> str:
    leg = BY_NAME.get(name)
    return leg.title if leg else name.replace("_", " ")


def proxy_instants(spans: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(complete, instants): which records are complete requests (read and write instants
    in order) and their six instants in ns (int64). An arrival stamp that is unknown (0) or
    out of its place is its read's instant (queue 0) and the arrival is never before the
    instant that precedes it (a response cannot arrive before the request went up)."""
    get = {k: spans[k].astype(np.int64) for k in ("ds_rx_beg", "us_tx_end", "us_rx_beg",
                                                  "ds_tx_end")}  # fmt: skip
    ds_rx, us_tx, us_rx, ds_tx = (
        get["ds_rx_beg"],
        get["us_tx_end"],
        get["us_rx_beg"],
        get["ds_tx_end"],
    )
    ok = (ds_rx > 0) & (ds_rx <= us_tx) & (us_tx <= us_rx) & (us_rx <= ds_tx)
    names = spans.dtype.names or ()
    zero = np.zeros(len(spans), dtype=np.int64)
    ds_arr = spans["ds_rx_arr"].astype(np.int64) if "ds_rx_arr" in names else zero
    us_arr = spans["us_rx_arr"].astype(np.int64) if "us_rx_arr" in names else zero
    ds_arr = np.where((ds_arr > 0) & (ds_arr <= ds_rx), ds_arr, ds_rx)
    us_arr = np.where((us_arr > 0) & (us_arr <= us_rx), np.maximum(us_arr, us_tx), us_rx)
    return ok, {"ds_rx_arr": ds_arr, "ds_rx_beg": ds_rx, "us_tx_end": us_tx,
                "us_rx_arr": us_arr, "us_rx_beg": us_rx, "ds_tx_end": ds_tx}  # fmt: skip


def arrivals_missing(spans: np.ndarray) -> tuple[int, int]:
    """(requests, responses) whose arrival stamp is unknown (their queue counts as 0)."""
    names = spans.dtype.names or ()
    if "ds_rx_arr" not in names:
        return len(spans), len(spans)
    return int(np.count_nonzero(spans["ds_rx_arr"] == 0)), int(
        np.count_nonzero(spans["us_rx_arr"] == 0)
    )


def proxy_legs_ns(instants: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every proxy leg that needs no join, in ns, from ``proxy_instants``."""
    out: dict[str, np.ndarray] = {}
    for leg in PROXY:
        if leg.start and leg.end:
            out[leg.name] = instants[leg.end] - instants[leg.start]
        elif leg.parts:
            out[leg.name] = sum((out[p] for p in leg.parts), np.zeros_like(instants["ds_rx_beg"]))
    return out


def to_us(ns: np.ndarray) -> np.ndarray:
    """Nanoseconds to whole microseconds (rounded, never negative): the one rounding of the
    histograms, so every leg, capture and bundle counts the same microsecond."""
    out: np.ndarray = np.maximum((ns + 500) // 1000, 0)
    return out


def proxy_legs_us(rows: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Per-request proxy legs in whole microseconds (the histograms' rounding) from batches of
    complete struct smp_span records."""
    if not rows:
        return {}
    _, at = proxy_instants(np.concatenate(rows))
    return {name: to_us(ns).astype(np.float64) for name, ns in proxy_legs_ns(at).items()}
