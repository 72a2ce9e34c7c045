"""The tables of a report, as plain cells: the terminal and markdown renderers lay them out."""

from __future__ import annotations

from dataclasses import dataclass

from profiler.legs import SPLIT, title
from profiler.report.view import (
    NO_STAMPS,
    PS,
    CaptureView,
    Interval,
    QueueWork,
    RunView,
    StepView,
    sentence,
)

DASH = "-"


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Document:
    """A report as text blocks: title, header facts, tables, the sentence, footer lines."""

    title: str
    facts: list[tuple[str, str]]
    tables: list[Table]
    meaning: str
    footer: list[str]


def ms(x: float | None, nd: int = 3) -> str:
    return DASH if x is None else f"{x:.{nd}f}"


def with_ci(x: float | None, ci: Interval | None, nd: int = 3) -> str:
    if x is None:
        return DASH
    return f"{x:.{nd}f}" + (f" [{ci[0]:.{nd}f}, {ci[1]:.{nd}f}]" if ci else "")


def signed_ci(d: float, ci: Interval, nd: int = 3) -> str:
    return f"{d:+.{nd}f} [{ci[0]:+.{nd}f}, {ci[1]:+.{nd}f}]"


def rate(x: float | None) -> str:
    return DASH if x is None else ("max" if x == 0 else f"{x:g}")


def num(x: float | None, nd: int = 1) -> str:
    return DASH if x is None else f"{x:,.{nd}f}"


def _e2e(steps: list[StepView]) -> Table:
    base = any(s.baseline for s in steps)
    headers = ["rate", "achieved", "p50 ms [95% CI]", "p90 ms", "p99 ms [95% CI]"]
    headers += ["baseline p50", "baseline p99"] if base else []
    headers += ["errors"]
    rows = []
    for s in steps:
        row = [
            rate(s.rate_asked),
            num(s.rate_achieved),
            with_ci(s.latency.get("p50"), s.latency_ci.get("p50")),
            ms(s.latency.get("p90")),
            with_ci(s.latency.get("p99"), s.latency_ci.get("p99")),
        ]
        if base:
            b = s.baseline or {}
            row += [ms(b.get("p50")), ms(b.get("p99"))]
        row.append(_errors(s))
        rows.append(row)
    return Table("End to end (mesh; latency of successful responses)", headers, rows)


def _errors(s: StepView) -> str:
    """Failed requests of a step: rate and count, and whether their latency is mixed in."""
    if s.requests is None:
        return DASH
    if s.error_rate is None:
        return f"{s.errors:,}"
    text = f"{s.error_rate:.2%} ({s.errors:,})"
    return text + (" in latency" if s.errors_in_latency else "")


def _ab(steps: list[StepView]) -> Table | None:
    if not any(s.overhead for s in steps):
        return None
    headers = ["rate", "+p50 [95% CI]", "+p90 [95% CI]", "+p99 [95% CI]", "significant"]
    rows = []
    for s in steps:
        o = s.overhead or {}
        row = [rate(s.rate_asked)] + [signed_ci(*o[p]) if p in o else DASH for p in PS]
        sig = DASH if s.significant is None else ("yes" if s.significant else "no")
        row.append(sig if s.p_value is None else f"{sig} (p={s.p_value:.2g})")
        rows.append(row)
    return Table("What the sidecar adds, A/B: mesh minus baseline (ms)", headers, rows)


def _ebpf(steps: list[StepView]) -> Table | None:
    if not any(s.legs for s in steps):
        return None
    headers = ["rate", "request leg", "response leg", "sidecar p50 [95% CI]", "sidecar p99"]
    headers.append("upstream wait")
    rows = [
        [
            rate(s.rate_asked),
            ms(s.legs.get("request_proxy")),
            ms(s.legs.get("response_proxy")),
            with_ci(s.legs.get("sidecar_total"), s.sidecar_ci),
            ms(s.legs_p99.get("sidecar_total")),
            ms(s.legs.get("upstream")),
        ]
        for s in steps
    ]
    title = "What the sidecar adds, eBPF: time inside the sidecar (ms, p50; upstream = app wait)"
    return Table(title, headers, rows)


QUEUE_TITLE = "Sidecar queue vs work (ms, p50): queue = bytes waiting in its socket"
QUEUE_HEADERS = [title(x) for parts in SPLIT.values() for x in parts]


def _queue_cells(qw: list[QueueWork]) -> list[str]:
    """Queue and work of each proxy leg, in the order of ``legs.SPLIT`` (the notes say how
    many requests had no arrival stamp)."""
    by_leg = {q.leg: q for q in qw}
    cells = []
    for parent in SPLIT:
        q = by_leg.get(parent)
        if q is None:
            cells += [DASH, DASH]
            continue
        cells.append(NO_STAMPS if q.state == NO_STAMPS else ms(q.queue_ms))
        cells.append(ms(q.work_ms))
    return cells


def _queue(steps: list[StepView]) -> Table | None:
    """Per rate step, queue vs work of each proxy leg: queue rising with the rate while work
    stays is the sidecar saturating (its worker is busy, requests wait in its sockets)."""
    if not any(s.queue_work for s in steps):
        return None
    rows = [[rate(s.rate_asked), *_queue_cells(s.queue_work)] for s in steps if s.queue_work]
    return Table(QUEUE_TITLE, ["rate", *QUEUE_HEADERS], rows)


def queue_table(v: RunView | CaptureView) -> Table | None:
    """A run's "Sidecar queue vs work" table, as in its report (for the console summary of
    ``run`` and ``demo``); None for a capture or a run without proxy legs."""
    return _queue(v.steps) if isinstance(v, RunView) else None


def _agreement(steps: list[StepView]) -> Table | None:
    """eBPF's one-run estimate next to the A/B delta: do they agree, and by how much not."""
    if not any(s.ebpf_vs_ab for s in steps):
        return None
    headers = ["rate", "eBPF p50 [95% CI]", "basis", "A/B +p50 [95% CI]", "eBPF - A/B", "agree"]
    rows = []
    for s in steps:
        a = s.ebpf_vs_ab
        if not a:
            rows.append([rate(s.rate_asked), DASH, DASH, DASH, DASH, DASH])
            continue
        e_ci, ab_ci = a.get("ebpf_ci_ms"), a.get("ab_ci_ms")
        rows.append(
            [
                rate(s.rate_asked),
                with_ci(a.get("ebpf_p50_ms"), tuple(e_ci) if e_ci else None),
                str(a.get("ebpf_basis", DASH)),
                signed_ci(a["ab_delta_p50_ms"], tuple(ab_ci))
                if ab_ci and a.get("ab_delta_p50_ms") is not None
                else DASH,
                f"{_difference(a):+.3f}",
                agreement(a),
            ]
        )
    return Table("eBPF vs A/B: does the one-run estimate match mesh minus baseline?", headers, rows)


def _difference(a: dict[str, object]) -> float:
    d = a.get("difference_ms")
    if isinstance(d, int | float):
        return float(d)
    return float(a["ebpf_p50_ms"]) - float(a["ab_delta_p50_ms"])  # type: ignore[arg-type]


def agreement(a: dict[str, object]) -> str:
    """ "yes", or "NO, by X ms" (beyond the tolerance and the two intervals)."""
    if a.get("agree"):
        return "yes"
    return f"NO, by {abs(_difference(a)):.3f} ms"


def _cost(steps: list[StepView]) -> Table | None:
    if not any(s.cpu_mcores is not None for s in steps):
        return None
    headers = ["rate", "sidecar mcores", "CPU-ms / 1k req", "cores / 1k req/s", "RSS MiB"]
    headers += ["drops", "complete"]
    rows = []
    for s in steps:
        if s.sidecar_error:
            rows.append([rate(s.rate_asked), "NOT ON PATH", DASH, DASH, DASH, DASH, DASH])
            continue
        rows.append(
            [
                rate(s.rate_asked),
                num(s.cpu_mcores),
                num(s.cpu_ms_per_1k),
                num(s.cores_per_1k_rps, 3),
                num(s.mem_rss_mb),
                DASH if s.drops is None else str(s.drops),
                DASH if s.complete is None else ("yes" if s.complete else "NO"),
            ]
        )
    return Table("Sidecar cost (over each step's load window)", headers, rows)


def _meshmark(v: RunView) -> list[str]:
    m = v.meshmark
    if not m or m.get("score") is None:
        return []
    classes = ", ".join(f"{k} {c:.2f}" for k, c in (m.get("classes") or {}).items())
    return [f"MeshMark {m['score']:.1f} / 100 (MUE by class: {classes}; see docs/meshmark.md)"]


def run_document(v: RunView) -> Document:
    parts = (
        _e2e(v.steps),
        _ab(v.steps),
        _ebpf(v.steps),
        _queue(v.steps),
        _agreement(v.steps),
        _cost(v.steps),
    )
    tables = [t for t in parts if t is not None]
    footer = _meshmark(v) + [f"note: {n}" for n in v.notes]
    return Document(v.title, v.facts, tables, sentence(v), footer)


def capture_document(v: CaptureView) -> Document:
    legs = Table("Legs (eBPF, ms)", ["process", "leg", "count", "p50 [95% CI]", "p90", "p99"], [])
    for p in v.processes:
        unknown = {SPLIT[q.leg][0] for q in p.queue_work if q.state == NO_STAMPS}
        for leg, d in p.legs.items():
            if not d.get("count"):
                continue
            name, count = f"{p.comm} ({p.pid})", f"{d['count']:,}"
            if leg in unknown:  # every queue counted as 0: not a figure to print
                legs.rows.append([name, leg, count, NO_STAMPS, DASH, DASH])
                continue
            legs.rows.append(
                [
                    f"{p.comm} ({p.pid})",
                    leg,
                    f"{d['count']:,}",
                    with_ci(d.get("p50_ms"), p.leg_ci.get(leg)),
                    ms(d.get("p90_ms")),
                    ms(d.get("p99_ms")),
                ]
            )
    queue = Table(QUEUE_TITLE, ["process", *QUEUE_HEADERS], [])
    for p in v.processes:
        if p.queue_work:
            queue.rows.append([f"{p.comm} ({p.pid})", *_queue_cells(p.queue_work)])
    cost = Table("Cost", ["process", "role", "requests", "CPU mcores", "CPU s", "RSS MiB"], [])
    for p in v.processes:
        cost.rows.append(
            [
                f"{p.comm} ({p.pid})" + (" exited" if p.exited else ""),
                p.role,
                f"{p.requests:,}",
                num(p.cpu_mcores),
                num(p.cpu_seconds, 3),
                num(p.mem_rss_mb),
            ]
        )
    state = "complete" if v.complete else f"INCOMPLETE ({v.incomplete_reason or 'no reason'})"
    facts = [*v.facts, ("state", f"{state}, {v.duration_s:.1f} s, {v.drops} events dropped")]
    footer = [f"note: {n}" for n in v.notes]
    tables = [legs, queue, cost] if queue.rows else [legs, cost]
    return Document(v.title, facts, tables, sentence(v), footer)


def document(v: RunView | CaptureView) -> Document:
    return capture_document(v) if isinstance(v, CaptureView) else run_document(v)
