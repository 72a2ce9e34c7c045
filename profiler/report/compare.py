"""Two or more results side by side: differences against the first, and whether they are real.

A difference is called significant only by a test that matches the data: the variance that
matters when two runs are compared is the one *between* runs (the node drifts, a window is
disturbed), which only repetitions show. So each metric of a step is compared over its
per-repetition values (p50 and p99 of each repetition, the eBPF sidecar p50 of each, the paired
A/B delta of each) with Welch's t test; the 95% interval of the difference and the verdict come
from the same test and never disagree. With fewer than two repetitions on either side the
within-window spread is all that is known, and that is said: significance is not judged
(``--repeat 3`` or more in ``run``). Single numbers (CPU, memory) show their difference only.
Results whose environments differ in CPU model or core count are refused (the comparison would
measure the machines), unless forced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from profiler import stats
from profiler.errors import UsageError
from profiler.legs import MAIN, SPLIT
from profiler.report.source import Source
from profiler.report.tables import DASH, Document, Table, num, rate
from profiler.report.view import CaptureView, QueueWork, RunView, StepView, view

ALPHA = 0.05
MIN_REPS = 2
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
    significant: list[bool | None]  # None: not judged (see why)
    why: list[str | None] = field(default_factory=list)  # why not judged, or the test used
    reps: list[int] = field(default_factory=list)  # repetitions of each file
    samples: list[list[float]] = field(default_factory=list, repr=False)  # per repetition


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


def _row(
    step: str,
    metric: str,
    unit: str,
    values: list[float | None],
    reps: list[list[float]] | None = None,
    untested: str = "one number",
) -> Row:
    """A row; with per-repetition values, each file's difference tested against the first's."""
    row = Row(step, metric, unit, values, [None], [None], [None], [None], [None])
    row.reps = [len(r) for r in reps] if reps is not None else []
    row.samples = [list(r) for r in reps] if reps is not None else []
    for i in range(1, len(values)):
        a, b = values[0], values[i]
        row.deltas.append(None if a is None or b is None else b - a)
        ci, pv, sig, why = None, None, None, None
        if reps is None:
            why = untested
        elif min(len(reps[0]), len(reps[i])) < MIN_REPS:
            n = min(len(reps[0]), len(reps[i]))
            why = f"{n} repetition{'s' if n != 1 else ''}: between-run variance unknown"
        else:
            d = stats.welch(reps[0], reps[i], ALPHA)
            ci, pv, sig, why = (d.low, d.high), d.p_value, d.significant, "welch"
            # the values shown are the merged runs'; the test is on the repetitions' means
            row.deltas[i] = d.estimate if a is None or b is None else row.deltas[i]
        row.ci.append(ci)
        row.p_value.append(pv)
        row.significant.append(sig)
        row.why.append(why)
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


def _run_rows(views: list[RunView]) -> list[Row]:
    rows = []
    for label, steps in _match(views):

        def val(f: Any, steps: list[StepView | None] = steps) -> list[float | None]:
            return [None if s is None else f(s) for s in steps]

        def reps(key: str, steps: list[StepView | None] = steps) -> list[list[float]]:
            return [[] if s is None else s.reps.get(key, []) for s in steps]

        rows.append(_row(label, "p50", "ms", val(lambda s: s.latency.get("p50")), reps("p50")))
        rows.append(_row(label, "p99", "ms", val(lambda s: s.latency.get("p99")), reps("p99")))
        if any(s is not None and s.legs.get("sidecar_total") is not None for s in steps):
            sc = val(lambda s: s.legs.get("sidecar_total"))
            rows.append(_row(label, "sidecar p50 (eBPF)", "ms", sc, reps("sidecar p50")))
        rows += _queue_rows(label, [None if s is None else s.queue_work for s in steps])
        if any(s is not None and s.overhead for s in steps):
            ab = val(lambda s: s.overhead["p50"][0] if s.overhead else None)
            rows.append(_row(label, "A/B +p50", "ms", ab, reps("A/B +p50")))
        if any(s is not None and s.error_rate is not None for s in steps):
            rows.append(_row(label, "error rate", "%", val(_error_pct)))
        if any(s is not None and s.cpu_mcores is not None for s in steps):
            rows.append(_row(label, "CPU / 1k req", "ms", val(lambda s: s.cpu_ms_per_1k)))
            rows.append(_row(label, "sidecar RSS", "MiB", val(lambda s: s.mem_rss_mb)))
    return rows


def _queue_rows(
    step: str, splits: list[list[QueueWork] | None], untested: str = "one number"
) -> list[Row]:
    """p50 of each proxy leg's queue and work (``legs.SPLIT``) where any file has them: a
    queue that grows from one file to the next while the work stays is the sidecar falling
    behind. A queue without arrival stamps is an empty cell, never 0 (view.split_legs)."""
    rows = []
    for leg, parts in SPLIT.items():
        found = [next((q for q in qs if q.leg == leg), None) if qs else None for qs in splits]
        if not any(q is not None and q.queue_ms is not None for q in found):
            continue
        for part, name in zip(("queue", "work"), parts, strict=True):
            vals = [None if q is None else getattr(q, f"{part}_ms") for q in found]
            rows.append(_row(step, f"{name} p50", "ms", vals, untested=untested))
    return rows


def _error_pct(s: StepView) -> float | None:
    return None if s.error_rate is None else 100.0 * s.error_rate


def _capture_rows(views: list[CaptureView]) -> list[Row]:
    rows = []
    firsts = [next((p for p in v.processes if p.role == "sidecar"), None) for v in views]
    for leg in (*MAIN, "sidecar_total"):
        vals: list[float | None] = [
            ((p.legs.get(leg) if p else None) or {}).get("p50_ms") for p in firsts
        ]
        # one capture is one window: its spread is within the window only
        rows.append(
            _row("sidecar", f"{leg} p50", "ms", vals, untested="one capture: no repetitions")
        )
    rows += _queue_rows(
        "sidecar", [p.queue_work if p else None for p in firsts], "one capture: no repetitions"
    )
    cpu = [p.cpu_mcores if p else None for p in firsts]
    rows.append(_row("sidecar", "CPU", "mcores", cpu))
    rows.append(_row("sidecar", "RSS", "MiB", [p.mem_rss_mb if p else None for p in firsts]))
    return rows


def adjust(rows: list[Row]) -> int:
    """Bonferroni over every judged difference of the table: a table of m tests calls a
    difference significant only when its p < 0.05 / m, and shows p x m (capped at 1) with the
    (1 - 0.05 / m) interval, so the verdict, the p shown and the interval still agree. Without
    it, 14 rows of two identical runs give a 'significant' row half the time. Returns m."""
    judged = [(r, i) for r in rows for i in range(1, len(r.values)) if r.why[i] == "welch"]
    m = len(judged)
    if m <= 1:
        return m
    for r, i in judged:
        d = stats.welch(r.samples[0], r.samples[i], ALPHA / m)
        r.ci[i] = (d.low, d.high)
        r.p_value[i] = min(1.0, d.p_value * m)
        r.significant[i] = d.significant
    return m


def compare(sources: list[Source], force: bool = False) -> tuple[list[Row], list[str]]:
    notes = check_comparable(sources, force)
    views = [view(s) for s in sources]
    if all(isinstance(v, CaptureView) for v in views):
        return _capture_rows([v for v in views if isinstance(v, CaptureView)]), notes
    rows = _run_rows([v for v in views if isinstance(v, RunView)])
    m = adjust(rows)
    if m > 1:
        notes.append(
            f"{m} differences tested: each p is multiplied by {m} (Bonferroni) and each interval "
            f"is at {100 * (1 - ALPHA / m):.2f}%, so that noise is not called significant"
        )
    return rows, notes


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
    if row.deltas[i] is None:
        return DASH
    if s is None:
        return f"not judged ({row.why[i]})"
    p = row.p_value[i]
    return ("yes" if s else "no") + f" (p={p:.2g}, {row.reps[0]} vs {row.reps[i]} reps)"


def document(sources: list[Source], rows: list[Row], notes: list[str]) -> Document:
    names = [chr(ord("A") + i) if i < 26 else str(i) for i in range(len(sources))]
    headers = ["step", "metric", *names]
    for n in names[1:]:
        headers += [f"{n} - {names[0]} [CI]", "significant"]
    table = Table("Differences against the first file", headers, [])
    for r in rows:
        cells = [r.step, f"{r.metric} ({r.unit})"] + [num(v, 3) for v in r.values]
        for i in range(1, len(names)):
            cells += [_delta(r, i), _sig(r, i)]
        table.rows.append(cells)
    sig = [(r, i) for r in rows for i in range(1, len(names)) if r.significant[i]]
    judged = [(r, i) for r in rows for i in range(1, len(names)) if r.significant[i] is not None]
    unjudged = [
        (r, i)
        for r in rows
        for i in range(1, len(names))
        if r.significant[i] is None and r.why[i] and "repetition" in (r.why[i] or "")
    ]
    if sig:
        r, i = sig[0]
        meaning = (
            f"{len(sig)} significant difference(s) between runs; e.g. {names[i]} at {r.step}: "
            f"{r.metric} {_delta(r, i)} {r.unit} against {names[0]}"
        )
    elif judged:
        meaning = "no difference is significant at the 95% level (between-run variance)"
    else:
        meaning = "significance cannot be judged: no metric has two or more repetitions per file"
    if unjudged and not judged:
        meaning += " (run with --repeat 3 or more to compare runs)"
    facts = []
    for n, s in zip(names, sources, strict=True):
        model, cores = environment(s)
        node = f"; {model or '?'}, {cores or '?'} cores" if model or cores else ""
        facts.append((n, f"{s.path} ({s.kind}{node})"))
    footer = [f"note: {n}" for n in notes]
    footer.append(
        "significant: Welch's t test over the repetitions of each file (between-run variance), "
        "p < 0.05 after Bonferroni over the table's tests; the interval shown is that test's "
        "(95%, or 1 - 0.05/m with m tests) and excludes 0 exactly when significant"
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
                "test": r.why,
                "repetitions": r.reps,
            }
            for r in rows
        ],
        "notes": notes,
    }
