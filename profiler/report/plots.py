"""The HTML report's plots: matplotlib figures as inline SVG (no JS, offline, deterministic).

Each function returns an SVG string, or None when the file has no data for that plot.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from html import escape
from typing import TYPE_CHECKING, Any

import numpy as np

from profiler.analysis.details import arrays
from profiler.histogram import LatencyHistogram
from profiler.report.view import NO_STAMPS, CaptureView, QueueWork, RunView, StepView

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# the sidecar's own time (request + response legs), then the wait for the app on top
STACK = (
    ("request_proxy", "#4c78a8", ""),
    ("response_proxy", "#54a24b", ""),
    ("upstream", "#f5c48f", "//"),
)
PALETTE = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#9d755d")
RC: dict[str, Any] = {
    "svg.hashsalt": "smp-profiler",  # stable ids: the same file renders the same SVG
    "svg.fonttype": "none",
    "font.size": 9.0,
    "axes.grid": True,
    "grid.alpha": 0.3,
}


@contextmanager
def _figure(w: float = 6.4, h: float = 3.4, ncols: int = 1) -> Iterator[tuple[Figure, list[Axes]]]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    with matplotlib.rc_context(RC):  # type: ignore[arg-type]
        fig = Figure(figsize=(w, h), layout="constrained")
        axes = list(fig.subplots(1, ncols, squeeze=False)[0])
        yield fig, axes


def _svg(fig: Figure, series: dict[str, list[tuple[float, float]]] | None = None) -> str:
    """The figure as SVG; ``series``: the (x, y) data of each line drawn with gid
    ``series-<name>``, written into the <svg> as ``data-series`` JSON, so that a reader (and
    the tests) can check what is drawn against the file's numbers."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    if series:
        data = escape(json.dumps({k: [[x, y] for x, y in v] for k, v in series.items()}))
        text = text.replace("<svg", f'<svg data-series="{data}"', 1)
    return text


def _line(
    ax: Axes,
    series: dict[str, list[tuple[float, float]]],
    name: str,
    x: list[float],
    y: list[float],
    *args: Any,
    **kw: Any,
) -> None:
    """Plot one data series, named (gid ``series-<name>``) and recorded for ``_svg``."""
    (line,) = ax.plot(x, y, *args, **kw)
    line.set_gid(f"series-{name}")
    series[name] = [(float(a), float(b)) for a, b in zip(x, y, strict=True)]


def _label(s: StepView) -> str:
    r = s.rate_asked
    return "max" if not r else f"{r:g}"


def _rates(steps: list[StepView]) -> list[float]:
    return [s.rate_achieved or s.rate_asked or 0.0 for s in steps]


def legs_stacked(v: RunView | CaptureView) -> str | None:
    """Per step (or per sidecar of a capture): the p50 of each leg, stacked."""
    if isinstance(v, CaptureView):
        bars = [
            (f"{p.comm} {p.pid}", {k: d.get("p50_ms") for k, d in p.legs.items()})
            for p in v.processes
            if p.role == "sidecar"
        ]
    else:
        bars = [(f"{_label(s)} req/s", dict(s.legs)) for s in v.steps if s.legs]
    if not bars:
        return None
    with _figure() as (fig, (ax,)):
        x = np.arange(len(bars))
        bottom = np.zeros(len(bars))
        for leg, color, hatch in STACK:
            vals = np.array([float(b[1].get(leg) or 0.0) for b in bars])
            label = "upstream (waiting for the app)" if leg == "upstream" else leg
            ax.bar(x, vals, 0.6, bottom=bottom, label=label, color=color, hatch=hatch)
            bottom += vals
        totals = [b[1].get("sidecar_total") for b in bars]
        for xi, t in zip(x, totals, strict=True):
            if t is not None:
                ax.plot([xi - 0.3, xi + 0.3], [t, t], color="black", lw=1.5)
        ax.set_xticks(x, [b[0] for b in bars])
        ax.set_ylabel("ms (p50 of each leg)")
        ax.set_title("Latency breakdown per leg (black: sidecar total p50)")
        ax.legend(loc="upper right", fontsize=8)
        return _svg(fig)


# per proxy leg of legs.SPLIT: (queue colour, work colour); queues are hatched
QUEUE_WORK_COLORS = (("#9ecae9", "#4c78a8"), ("#88d27a", "#54a24b"))
QUEUE_HATCH = "\\\\"


def _queue_bars(v: RunView | CaptureView) -> list[tuple[str, list[QueueWork]]]:
    if isinstance(v, CaptureView):
        bars = [(f"{p.comm} {p.pid}", p.queue_work) for p in v.processes if p.role == "sidecar"]
    else:
        bars = [(f"{_label(s)} req/s", s.queue_work) for s in v.steps]
    return [(name, qw) for name, qw in bars
            if any(q.queue_ms is not None or q.work_ms is not None for q in qw)]  # fmt: skip


def queue_work(v: RunView | CaptureView) -> str | None:
    """Per rate step (per sidecar of a capture), the sidecar's own time as queue vs work (p50
    of each part, stacked, queues hatched at the bottom): queue growing with the rate is the
    sidecar saturating. A queue without arrival stamps is not drawn (never a 0 bar) and says so.
    Each part's bars are the series ``<leg>`` (x = bar index, y = ms) of ``data-series``."""
    bars = _queue_bars(v)
    if not bars:
        return None
    from profiler.legs import SPLIT, title

    parts = [(i, k) for k in (0, 1) for i in range(len(SPLIT))]  # queues first, then works
    series: dict[str, list[tuple[float, float]]] = {}
    with _figure() as (fig, (ax,)):
        x = np.arange(len(bars))
        bottom = np.zeros(len(bars))
        for i, k in parts:
            parent, name = list(SPLIT)[i], list(SPLIT.values())[i][k]
            qws = [{q.leg: q for q in qw}.get(parent) for _, qw in bars]
            vals = [None if q is None else (q.queue_ms if k == 0 else q.work_ms) for q in qws]
            h = np.array([float(y or 0.0) for y in vals])
            color, hatch = QUEUE_WORK_COLORS[i][k], QUEUE_HATCH if k == 0 else ""
            rects = ax.bar(x, h, 0.6, bottom=bottom, label=title(name), color=color, hatch=hatch)
            for j, (r, y) in enumerate(zip(rects, vals, strict=True)):
                if y is not None:
                    r.set_gid(f"series-{name}-{j}")
            series[name] = [(float(j), float(y)) for j, y in enumerate(vals) if y is not None]
            bottom += h
        for j, (_, qw) in enumerate(bars):
            unknown = [title(SPLIT[q.leg][0]) for q in qw if q.state == NO_STAMPS]
            if unknown:
                note = f"{NO_STAMPS}:\n{', '.join(unknown)}"
                ax.annotate(note, (x[j], bottom[j]), ha="center", va="bottom", fontsize=7)
        ax.set_xticks(x, [b[0] for b in bars])
        ax.set_ylabel("ms (p50 of each part)")
        ax.set_ylim(0, float(bottom.max()) * 1.3 or 1.0)
        ax.set_title("Sidecar time: waiting in its sockets (hatched) vs working")
        ax.legend(loc="upper left", fontsize=8)
        return _svg(fig, series)


def _cdf(ax: Axes, h: LatencyHistogram, label: str, style: str, color: str) -> None:
    v, c = arrays(h)
    y = np.cumsum(c) / c.sum()
    ax.step(v / 1000.0, y, where="post", label=label, ls=style, color=color)


def cdfs(v: RunView | CaptureView) -> str | None:
    """Latency CDFs: mesh (solid) vs baseline (dashed) per step; a capture's sidecar legs."""
    colors = PALETTE
    curves: list[tuple[LatencyHistogram, str, str, str]] = []
    if isinstance(v, CaptureView):
        for i, p in enumerate(x for x in v.processes if x.role == "sidecar"):
            d = p.legs.get("sidecar_total") or {}
            if d.get("histogram"):
                h = LatencyHistogram.from_json(d["histogram"])
                curves.append((h, f"{p.comm} {p.pid} sidecar_total", "-", colors[i % len(colors)]))
    else:
        for i, s in enumerate(v.steps):
            c = colors[i % len(colors)]
            if s.mesh_hist is not None and s.mesh_hist.count:
                curves.append((s.mesh_hist, f"mesh {_label(s)} req/s", "-", c))
            if s.baseline_hist is not None and s.baseline_hist.count:
                curves.append((s.baseline_hist, f"baseline {_label(s)} req/s", "--", c))
    if not curves:
        return None
    with _figure() as (fig, (ax,)):
        for h, label, style, color in curves:
            _cdf(ax, h, label, style, color)
        ax.set_xscale("log")
        ax.set_xlabel("end-to-end latency, ms (log)")
        ax.set_ylabel("fraction of requests")
        ax.set_title("Latency CDF: mesh (solid) vs baseline (dashed)")
        ax.legend(loc="lower right", fontsize=8)
        return _svg(fig)


def cost(v: RunView) -> str | None:
    """Sidecar CPU (cores) and memory (RSS MB) against the achieved request rate."""
    steps = [s for s in v.steps if s.cpu_mcores is not None]
    if not steps:
        return None
    series: dict[str, list[tuple[float, float]]] = {}
    with _figure(ncols=2) as (fig, (ax1, ax2)):
        x = _rates(steps)
        cores = [(s.cpu_mcores or 0) / 1000 for s in steps]
        _line(ax1, series, "cpu-cores", x, cores, "o-", color="#e45756")
        ax1.set_xlabel("request rate, req/s")
        ax1.set_ylabel("sidecar CPU, cores")
        ax1.set_ylim(bottom=0)
        ax1.set_title("Sidecar CPU vs rate")
        rss = [s.mem_rss_mb or 0.0 for s in steps]
        _line(ax2, series, "rss-mib", x, rss, "s-", color="#72b7b2")
        ax2.set_xlabel("request rate, req/s")
        ax2.set_ylabel("sidecar RSS, MiB")
        ax2.set_ylim(0, max(rss) * 1.2 or 1.0)
        ax2.set_title("Sidecar memory vs rate")
        return _svg(fig, series)


def overhead(v: RunView) -> str | None:
    """What the sidecar adds against the rate, with 95% confidence bands."""
    ab = [s for s in v.steps if s.overhead]
    eb = [s for s in v.steps if s.legs.get("sidecar_total") is not None]
    if not (ab or eb):
        return None
    series: dict[str, list[tuple[float, float]]] = {}
    with _figure() as (fig, (ax,)):
        for p, color in (("p50", "#4c78a8"), ("p99", "#f58518")):
            pts = [
                (r, s.overhead[p])
                for r, s in zip(_rates(ab), ab, strict=True)
                if s.overhead and p in s.overhead
            ]
            if not pts:
                continue
            x = [r for r, _ in pts]
            ys = [d for _, (d, _) in pts]
            _line(ax, series, f"ab-{p}", x, ys, "o-", color=color, label=f"A/B {p}")
            lo = [ci[0] for _, (_, ci) in pts]
            hi = [ci[1] for _, (_, ci) in pts]
            ax.fill_between(x, lo, hi, color=color, alpha=0.2, label=f"A/B {p} 95% CI")
        if eb:
            x = _rates(eb)
            ys = [s.legs.get("sidecar_total") or 0.0 for s in eb]
            _line(ax, series, "ebpf-p50", x, ys, "s-", color="#54a24b", label="eBPF sidecar p50")
            if all(s.sidecar_ci for s in eb):
                lo = [s.sidecar_ci[0] for s in eb if s.sidecar_ci]
                hi = [s.sidecar_ci[1] for s in eb if s.sidecar_ci]
                ax.fill_between(x, lo, hi, color="#54a24b", alpha=0.2, label="eBPF 95% CI")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel("request rate, req/s")
        ax.set_ylabel("added latency, ms")
        ax.set_title("Sidecar overhead vs rate")
        ax.legend(loc="upper right", fontsize=8)
        return _svg(fig, series)
