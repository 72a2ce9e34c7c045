"""Two or more results side by side: differences against the first, and whether they are real.

Latency percentiles are compared on the (merged) histograms: the difference of the percentile
with a bootstrap 95% interval (significant when it excludes 0) and a Mann-Whitney test of the
whole distribution. Single numbers (CPU, memory) are shown with their difference only: one
window gives no spread to test against. Results whose environments differ in CPU model or core
count are refused (the comparison would measure the machines), unless forced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from profiler import stats
from profiler.errors import UsageError
from profiler.histogram import LatencyHistogram
from profiler.report.source import Source
from profiler.report.tables import DASH, Document, Table, num, rate
from profiler.report.view import CaptureView, RunView, StepView, view
from profiler.smp.details import N_BOOT, arrays

RUN_KINDS = ("bundle", "fortio", "nighthawk", "smp")


@dataclass
class Row:
    """One metric of one step: the value of each file, and each one's difference to the first."""

    step: str
    metric: str
    unit: str
    values: list[float | None]
    deltas: list[float | None]  # against values[0]; None for the first
    ci: list[tuple[float, float] | None]
    p_value: list[float | None]
    significant: list[bool | None]


def environment(src: Source) -> tuple[str | None, int | None]:
    """(CPU model, cores) as far as the file says."""
    if src.bundle is not None and src.kind == "bundle":
        e = src.bundle.environment
        return e.cpu_model or None, e.cores or None
    if src.capture is not None:
        cpus = (src.capture.get("host") or {}).get("cpus")
        return None, int(cpus) if isinstance(cpus, int) else None
    nodes = ((src.documents or {}).get("environment_config") or {}).get("nodes") or []
    if nodes:
        n = nodes[0]
        return (str(n.get("type")) or None), (int(n.get("cores") or 0) or None)
    return None, None


def check_comparable(sources: list[Source], force: bool) -> list[str]:
    """Refuse (UsageError) what cannot be compared; with ``force``, return the reasons as notes."""
    if len(sources) < 2:
        raise UsageError("compare needs two or more files")
    kinds = {"capture" if s.kind == "capture" else "run" for s in sources}
    if len(kinds) > 1:
        raise UsageError("cannot compare a capture with a run: compare captures or runs")
    reasons = []
    a = sources[0]
    ea = environment(a)
    for s in sources[1:]:
        es = environment(s)
        if ea[0] and es[0] and ea[0] != es[0]:
            reasons.append(f"CPU model differs: {a.name} {ea[0]!r}, {s.name} {es[0]!r}")
        if ea[1] and es[1] and ea[1] != es[1]:
            reasons.append(f"core count differs: {a.name} {ea[1]}, {s.name} {es[1]}")
    if reasons and not force:
        raise UsageError(
            f"refusing to compare: {reasons[0]} (the difference would measure the machines; "
            "--force to compare anyway)"
        )
    return [f"compared anyway (--force): {r}" for r in reasons]


def _test(
    ha: LatencyHistogram | None, hb: LatencyHistogram | None, p: float, rng: np.random.Generator
) -> tuple[tuple[float, float] | None, float | None, bool | None]:
    if ha is None or hb is None or not ha.count or not hb.count:
        return None, None, None
    d = stats.bootstrap_deltas(arrays(hb), arrays(ha), rng, (p,), N_BOOT)[p]
    mw = stats.mann_whitney(arrays(hb), arrays(ha))
    ci = (d.low / 1000.0, d.high / 1000.0)
    return ci, mw.p_value, not (ci[0] <= 0.0 <= ci[1])


def _row(
    step: str,
    metric: str,
    unit: str,
    values: list[float | None],
    hists: list[LatencyHistogram | None] | None = None,
    p: float = 50.0,
    rng: np.random.Generator | None = None,
) -> Row:
    row = Row(step, metric, unit, values, [None], [None], [None], [None])
    for i in range(1, len(values)):
        a, b = values[0], values[i]
        row.deltas.append(None if a is None or b is None else b - a)
        if hists is not None and rng is not None:
            ci, pv, sig = _test(hists[0], hists[i], p, rng)
        else:
            ci, pv, sig = None, None, None
        row.ci.append(ci)
        row.p_value.append(pv)
        row.significant.append(sig)
    return row


def _match(views: list[RunView]) -> list[tuple[str, list[StepView | None]]]:
    """Steps of the first run, each with the step of the same asked rate in the others."""
    out = []
    for i, s in enumerate(views[0].steps):
        same = []
        for v in views:
            by_rate = [t for t in v.steps if t.rate_asked == s.rate_asked and s.rate_asked]
            same.append(by_rate[0] if by_rate else (v.steps[i] if i < len(v.steps) else None))
        out.append((rate(s.rate_asked), same))
    return out


def _run_rows(views: list[RunView], rng: np.random.Generator) -> list[Row]:
    rows = []
    for label, steps in _match(views):

        def val(f: Any, steps: list[StepView | None] = steps) -> list[float | None]:
            return [None if s is None else f(s) for s in steps]

        mesh = [None if s is None else s.mesh_hist for s in steps]
        legs = [None if s is None else s.leg_hists.get("sidecar_total") for s in steps]
        rows.append(_row(label, "p50", "ms", val(lambda s: s.latency.get("p50")), mesh, 50, rng))
        rows.append(_row(label, "p99", "ms", val(lambda s: s.latency.get("p99")), mesh, 99, rng))
        if any(s is not None and s.legs.get("sidecar_total") is not None for s in steps):
            sc = val(lambda s: s.legs.get("sidecar_total"))
            rows.append(_row(label, "sidecar p50 (eBPF)", "ms", sc, legs, 50, rng))
        if any(s is not None and s.overhead for s in steps):
            ab = val(lambda s: s.overhead["p50"][0] if s.overhead else None)
            row = _row(label, "A/B +p50", "ms", ab)
            cis = [s.overhead["p50"][1] if s is not None and s.overhead else None for s in steps]
            for i in range(1, len(steps)):
                a, b = cis[0], cis[i]
                # two intervals of their own: apart is a difference (conservatively)
                row.significant[i] = (
                    None if a is None or b is None else (b[0] > a[1] or a[0] > b[1])
                )
            rows.append(row)
        if any(s is not None and s.cpu_mcores is not None for s in steps):
            rows.append(_row(label, "CPU / 1k req", "ms", val(lambda s: s.cpu_ms_per_1k)))
            rows.append(_row(label, "sidecar RSS", "MB", val(lambda s: s.mem_rss_mb)))
    return rows


def _capture_rows(views: list[CaptureView], rng: np.random.Generator) -> list[Row]:
    rows = []
    firsts = [next((p for p in v.processes if p.role == "sidecar"), None) for v in views]
    for leg in ("request_proxy", "upstream", "response_proxy", "sidecar_total"):
        vals: list[float | None] = []
        hists: list[LatencyHistogram | None] = []
        for p in firsts:
            d = (p.legs.get(leg) if p else None) or {}
            vals.append(d.get("p50_ms"))
            hj = d.get("histogram")
            hists.append(LatencyHistogram.from_json(hj) if hj else None)
        rows.append(_row("sidecar", f"{leg} p50", "ms", vals, hists, 50, rng))
    cpu = [p.cpu_mcores if p else None for p in firsts]
    rows.append(_row("sidecar", "CPU", "mcores", cpu))
    rows.append(_row("sidecar", "RSS", "MB", [p.mem_rss_mb if p else None for p in firsts]))
    return rows


def compare(sources: list[Source], force: bool = False) -> tuple[list[Row], list[str]]:
    notes = check_comparable(sources, force)
    rng = np.random.default_rng(0)
    views = [view(s) for s in sources]
    if all(isinstance(v, CaptureView) for v in views):
        return _capture_rows([v for v in views if isinstance(v, CaptureView)], rng), notes
    return _run_rows([v for v in views if isinstance(v, RunView)], rng), notes


def _delta(row: Row, i: int) -> str:
    d = row.deltas[i]
    if d is None:
        return DASH
    a = row.values[0]
    rel = f" ({d / a:+.0%})" if a else ""
    ci = row.ci[i]
    return f"{d:+.3f}{rel}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")


def _sig(row: Row, i: int) -> str:
    s = row.significant[i]
    if s is None:
        return "n/a (one number)" if row.deltas[i] is not None else DASH
    if row.p_value[i] is None:  # A/B: each run's own 95% interval
        return "yes (CIs apart)" if s else "no (CIs overlap)"
    return ("yes" if s else "no") + f" (MW p={row.p_value[i]:.2g})"


def document(sources: list[Source], rows: list[Row], notes: list[str]) -> Document:
    names = [chr(ord("A") + i) if i < 26 else str(i) for i in range(len(sources))]
    headers = ["step", "metric", *names]
    for n in names[1:]:
        headers += [f"{n} - {names[0]} [95% CI]", "significant"]
    table = Table("Differences against the first file", headers, [])
    for r in rows:
        cells = [r.step, f"{r.metric} ({r.unit})"] + [num(v, 3) for v in r.values]
        for i in range(1, len(names)):
            cells += [_delta(r, i), _sig(r, i)]
        table.rows.append(cells)
    sig = [(r, i) for r in rows for i in range(1, len(names)) if r.significant[i]]
    if sig:
        r, i = sig[0]
        meaning = (
            f"{len(sig)} significant difference(s); e.g. {names[i]} at {r.step}: {r.metric} "
            f"{_delta(r, i)} {r.unit} against {names[0]}"
        )
    else:
        meaning = "no latency difference is significant at the 95% level"
    facts = []
    for n, s in zip(names, sources, strict=True):
        model, cores = environment(s)
        node = f"; {model or '?'}, {cores or '?'} cores" if model or cores else ""
        facts.append((n, f"{s.path} ({s.kind}{node})"))
    footer = [f"note: {n}" for n in notes]
    footer.append(
        "significant: the 95% bootstrap interval of the difference excludes 0 "
        "(MW: Mann-Whitney U on the whole distribution)"
    )
    title = "compare: " + " vs ".join(s.name for s in sources)
    return Document(title, facts, [table], meaning, footer)


def to_json(sources: list[Source], rows: list[Row], notes: list[str]) -> dict[str, Any]:
    return {
        "kind": "smp-profiler/compare",
        "files": [{"path": str(s.path), "kind": s.kind} for s in sources],
        "rows": [
            {
                "step": r.step,
                "metric": r.metric,
                "unit": r.unit,
                "values": r.values,
                "deltas": r.deltas,
                "ci": [list(c) if c else None for c in r.ci],
                "p_value": r.p_value,
                "significant": r.significant,
            }
            for r in rows
        ],
        "notes": notes,
    }
