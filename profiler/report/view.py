"""The numbers a report shows, taken from a :class:`Source` once, for every renderer.

Bundles (and converted load-test results) read the ``details`` the SMP builder derives from
the raw records; SMP documents from other tools give only what their results hold; captures
give per-sidecar legs and costs. Confidence intervals that the details do not carry (eBPF legs
without a baseline, captures) are bootstrapped here from the histograms, seeded, so a report
of the same file is always the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from profiler import stats
from profiler.analysis.details import LEGS, N_BOOT, merge_histograms
from profiler.capture.document import UNPARSED_WARN_SHARE
from profiler.histogram import LatencyHistogram
from profiler.legs import SPLIT
from profiler.report.source import Source

Interval = tuple[float, float]
PS = ("p50", "p90", "p99")
NO_STAMPS = "no arrival stamps"
OLD_FILE_NOTE = (
    "this file has no queue/work split of the proxy legs (written before arrival stamps): "
    "queue and work are shown as -, not 0"
)


@dataclass
class QueueWork:
    """One proxy leg (request_proxy, response_proxy) split in queue (its bytes wait in the
    sidecar's socket) and work (the sidecar handles them), p50 and p99 in ms.

    ``state`` says what the queue figure is worth: "measured"; "partial" (some requests had
    no arrival stamp: their queue counts as 0, so the figure is low); NO_STAMPS (none had
    one: the queue is unknown, never 0); "not in file" (a file from before the split)."""

    leg: str
    queue_ms: float | None
    work_ms: float | None
    queue_p99_ms: float | None
    work_p99_ms: float | None
    requests: int | None  # requests measured on the leg
    missing: int | None  # of them, without an arrival stamp (None: the file does not say)
    state: str


def split_legs(
    p50: dict[str, float | None],
    p99: dict[str, float | None],
    counts: dict[str, int | None],
    missing: dict[str, int] | None,
) -> list[QueueWork]:
    """Queue vs work of each proxy leg, from the legs table (``legs.SPLIT``)."""
    out = []
    for parent, (queue, work) in SPLIT.items():
        n = counts.get(queue) or counts.get(parent)
        gone = None if missing is None else missing.get(parent.removesuffix("_proxy"))
        if p50.get(queue) is None and p50.get(parent) is None:
            continue  # no span of this leg at all: nothing to split
        if p50.get(queue) is None:
            state = "not in file"
        elif n and gone is not None and gone >= n:
            state = NO_STAMPS
        elif gone:
            state = "partial"
        else:
            state = "measured"
        unknown = state in (NO_STAMPS, "not in file")
        out.append(
            QueueWork(
                leg=parent,
                queue_ms=None if unknown else p50.get(queue),
                work_ms=p50.get(work),
                queue_p99_ms=None if unknown else p99.get(queue),
                work_p99_ms=p99.get(work),
                requests=n,
                missing=gone,
                state=state,
            )
        )
    return out


def stamps_note(where: str, qw: list[QueueWork]) -> str | None:
    """One note on the requests (responses) of a step or sidecar that had no arrival stamp."""
    parts = []
    for q in qw:
        what = q.leg.removesuffix("_proxy") + "s"
        if q.state == NO_STAMPS:
            parts.append(f"none of the {q.requests:,} {what} had an arrival stamp (queue unknown)")
        elif q.state == "partial":
            parts.append(
                f"{q.missing:,} of {q.requests:,} {what} had no arrival stamp (their queue "
                "counted as 0)"
            )
    return f"{where}: " + "; ".join(parts) if parts else None


def _missing_sum(sidecars: list[dict[str, Any]]) -> dict[str, int] | None:
    """``arrival_missing`` of the sidecars, summed; None when any of them does not say."""
    out = {"request": 0, "response": 0}
    for sc in sidecars:
        m = sc.get("arrival_missing")
        if not isinstance(m, dict):
            return None
        for k in out:
            out[k] += int(m.get(k) or 0)
    return out if sidecars else None


@dataclass
class StepView:
    """One rate step of a run (mesh role; repetitions merged)."""

    rate_asked: float | None
    rate_achieved: float | None
    requests: int | None = None
    errors: int = 0
    latency: dict[str, float | None] = field(default_factory=dict)  # p50/p90/p99 ms
    latency_ci: dict[str, Interval | None] = field(default_factory=dict)
    baseline: dict[str, float | None] | None = None
    overhead: dict[str, tuple[float, Interval]] | None = None  # A/B delta p50/p90/p99 ms
    p_value: float | None = None
    significant: bool | None = None
    legs: dict[str, float | None] = field(default_factory=dict)  # eBPF p50 per leg, ms
    legs_p99: dict[str, float | None] = field(default_factory=dict)
    sidecar_ci: Interval | None = None  # eBPF sidecar_total p50
    cpu_mcores: float | None = None
    cpu_ms_per_1k: float | None = None
    cores_per_1k_rps: float | None = None
    mem_rss_mb: float | None = None
    drops: int | None = None
    complete: bool | None = None
    mesh_hist: LatencyHistogram | None = None
    baseline_hist: LatencyHistogram | None = None
    leg_hists: dict[str, LatencyHistogram] = field(default_factory=dict)
    # per repetition (between-run variance for compare): "p50", "p99", "sidecar p50", "A/B +p50"
    reps: dict[str, list[float]] = field(default_factory=dict)
    error_rate: float | None = None  # failed / attempted requests of the mesh path
    error_latency_p50: float | None = None  # the error responses' own latency, ms
    errors_in_latency: int = 0  # error responses the generator could not keep apart
    ebpf_vs_ab: dict[str, Any] | None = None  # details.steps[i].ebpf_vs_ab
    sidecar_error: str | None = None  # the sidecar saw none (or few) of the step's requests
    leg_counts: dict[str, int | None] = field(default_factory=dict)
    arrival_missing: dict[str, int] | None = None  # requests/responses without arrival stamp
    queue_work: list[QueueWork] = field(default_factory=list)  # per proxy leg


@dataclass
class SidecarView:
    """One traced process of a capture."""

    pid: int
    comm: str
    role: str  # "sidecar" | "app"
    requests: int
    legs: dict[str, dict[str, Any]]
    leg_ci: dict[str, Interval]  # p50 CIs, ms
    cpu_mcores: float | None
    cpu_seconds: float | None
    mem_rss_mb: float | None
    exited: bool
    unparsed_bytes: int = 0  # socket bytes no span explains
    unparsed_share: float = 0.0
    arrival_missing: dict[str, int] | None = None
    queue_work: list[QueueWork] = field(default_factory=list)


@dataclass
class RunView:
    """Everything a renderer of a run (or a converted result) needs."""

    kind: str
    title: str
    steps: list[StepView]
    meshmark: dict[str, Any] | None
    facts: list[tuple[str, str]]  # (label, value) lines of the header
    notes: list[str]


@dataclass
class CaptureView:
    kind: str
    title: str
    complete: bool
    incomplete_reason: str | None
    duration_s: float
    drops: int
    processes: list[SidecarView]
    facts: list[tuple[str, str]]
    notes: list[str]


def _f(x: Any) -> float | None:
    return None if x is None or isinstance(x, bool) else float(x)


def _pair(x: Any) -> Interval | None:
    return (float(x[0]), float(x[1])) if isinstance(x, list | tuple) and len(x) == 2 else None


def _ci50(h: LatencyHistogram | None, rng: np.random.Generator) -> Interval | None:
    if h is None or not h.count:
        return None
    i = stats.bootstrap_percentiles(*h.midpoints(), rng, (50.0,), N_BOOT)[50.0]
    return (i.low / 1000.0, i.high / 1000.0)


def _leg_hists(src: Source, step: int) -> dict[str, LatencyHistogram]:
    if src.bundle is None:
        return {}
    by_leg: dict[str, list[LatencyHistogram | None]] = {}
    for r in src.bundle.records_of(step, "mesh"):
        for sc in (r.capture or {}).get("sidecars", []):
            for leg, v in (sc.get("legs") or {}).items():
                if isinstance(v, dict) and v.get("histogram"):
                    by_leg.setdefault(leg, []).append(LatencyHistogram.from_json(v["histogram"]))
    out = {}
    for leg, hs in by_leg.items():
        m = merge_histograms(hs)
        if m is not None:
            out[leg] = m
    return out


def _repetitions(src: Source, step: int) -> dict[str, list[float]]:
    """Per-repetition p50/p99, eBPF sidecar p50 and paired A/B p50 delta of one step (ms)."""
    from profiler.analysis.details import _rep_value

    if src.bundle is None:
        return {}
    mesh = src.bundle.records_of(step, "mesh")
    base = {r.repetition: r.load for r in src.bundle.records_of(step, "baseline")}
    out: dict[str, list[float]] = {"p50": [], "p99": [], "sidecar p50": [], "A/B +p50": []}
    for r in mesh:
        p50, p99 = _rep_value(r.load, 50.0), _rep_value(r.load, 99.0)
        if p50 is not None:
            out["p50"].append(p50)
        if p99 is not None:
            out["p99"].append(p99)
        b = base.get(r.repetition)
        b50 = _rep_value(b, 50.0) if b is not None else None
        if p50 is not None and b50 is not None:
            out["A/B +p50"].append(p50 - b50)
        hs = [
            LatencyHistogram.from_json(h)
            for sc in (r.capture or {}).get("sidecars", [])
            if (h := ((sc.get("legs") or {}).get("sidecar_total") or {}).get("histogram"))
        ]
        m = merge_histograms(hs) if hs else None
        if m is not None:
            out["sidecar p50"].append(m.percentile(50.0) / 1000.0)
    return {k: v for k, v in out.items() if v}


def _step_from_details(src: Source, d: dict[str, Any], rng: np.random.Generator) -> StepView:
    mesh = d["mesh"]
    lat = mesh.get("latency") or {}
    ci = d.get("mesh_ci") or {}
    v = StepView(
        rate_asked=_f(d.get("rate_asked")),
        rate_achieved=_f(mesh.get("rate_achieved")),
        requests=mesh.get("requests"),
        errors=sum((mesh.get("errors") or {}).values()),
        latency={p: _f(lat.get(p + "_ms")) for p in PS},
        latency_ci={p: _pair(ci.get(p + "_ms")) for p in PS},
    )
    fails = mesh.get("failures") or {}
    if fails:
        v.errors = int(fails.get("failed", 0))
        v.error_rate = _f(fails.get("rate"))
        v.errors_in_latency = int(fails.get("in_latency_histogram") or 0)
        v.error_latency_p50 = _f((fails.get("latency") or {}).get("p50_ms"))
    v.ebpf_vs_ab = d.get("ebpf_vs_ab")
    if d.get("baseline"):
        blat = d["baseline"].get("latency") or {}
        v.baseline = {p: _f(blat.get(p + "_ms")) for p in PS}
    ov = d.get("overhead")
    if ov:
        v.overhead = {
            p: (float(ov[p]["delta_ms"]), _pair(ov[p]["ci_ms"]) or (0.0, 0.0))
            for p in PS
            if p in ov
        }
        sig = ov.get("significance") or {}
        v.p_value, v.significant = _f(sig.get("p_value")), sig.get("significant")
    sc = d.get("sidecar")
    if sc:
        legs = sc.get("legs") or {}
        v.legs = {leg: _f((legs.get(leg) or {}).get("p50_ms")) for leg in LEGS}
        v.legs_p99 = {leg: _f((legs.get(leg) or {}).get("p99_ms")) for leg in LEGS}
        v.leg_counts = {leg: (legs.get(leg) or {}).get("count") for leg in LEGS}
        v.cpu_mcores = _f(sc.get("cpu_mcores"))
        v.cpu_ms_per_1k = _f(sc.get("cpu_ms_per_1k_requests"))
        v.cores_per_1k_rps = _f(sc.get("cores_per_1k_rps"))
        v.mem_rss_mb = _f((sc.get("mem_mb") or {}).get("rss"))
        v.drops, v.complete = sc.get("drops"), sc.get("complete")
        v.sidecar_error = sc.get("error")
    if src.bundle is not None:
        step = int(d["index"])
        v.mesh_hist = merge_histograms(
            r.load.histogram for r in src.bundle.records_of(step, "mesh")
        )
        base = src.bundle.records_of(step, "baseline")
        v.baseline_hist = merge_histograms(r.load.histogram for r in base) if base else None
        v.leg_hists = _leg_hists(src, step)
        v.reps = _repetitions(src, step)
        caps = [r.capture for r in src.bundle.records_of(step, "mesh") if r.capture]
        v.arrival_missing = _missing_sum([sc for c in caps for sc in c.get("sidecars") or []])
    if sc:
        v.queue_work = split_legs(v.legs, v.legs_p99, v.leg_counts, v.arrival_missing)
    ab = d.get("ebpf_vs_ab") or {}
    if ab.get("ebpf_ci_ms") and ab.get("ebpf_basis", "sidecar_total") == "sidecar_total":
        v.sidecar_ci = _pair(ab["ebpf_ci_ms"])  # the interval the SMP details carry
    else:  # none, or of another leg (mesh_added): the sidecar's own, from its histograms
        v.sidecar_ci = _ci50(v.leg_hists.get("sidecar_total"), rng)
    return v


def _step_from_result(r: dict[str, Any]) -> StepView:
    lat = r.get("latencies_ms") or {}
    labels = r.get("labels") or {}
    try:
        asked: float | None = float(labels.get("rate_asked", ""))
    except ValueError:
        asked = None
    return StepView(
        rate_asked=asked,
        rate_achieved=_f(r.get("actual_qps")),
        latency={p: _f(lat.get(p)) for p in PS},
        latency_ci={p: None for p in PS},
    )


def _run_facts(src: Source) -> list[tuple[str, str]]:
    facts: list[tuple[str, str]] = [("file", f"{src.name} ({src.kind})")]
    docs = src.documents or {}
    b = src.bundle
    if b is not None:
        first = b.records[0].load if b.records else None
        if first is not None:
            facts.append(("load", f"{first.generator} {first.mode}, {first.connections} conns"))
        facts.append(("target", b.config.target))
        if src.kind == "bundle":
            e = b.environment
            facts.append(("node", f"{e.cpu_model}, {e.cores} cores, kernel {e.kernel}"))
            if b.mesh.proxy_build:
                conc = b.mesh.proxy_concurrency
                facts.append(
                    ("sidecar", f"Envoy {b.mesh.proxy_build.split('/')[0]}, concurrency {conc}")
                )
            facts.append(("test id", b.test_id))
        else:
            facts.append(("mesh, node", "unknown (not in the load-test result)"))
    else:
        cfg = docs.get("performance_test_config") or {}
        if cfg.get("name"):
            facts.append(("test", str(cfg["name"])))
        env = docs.get("environment_config") or {}
        nodes = env.get("nodes") or []
        if nodes:
            facts.append(
                ("node", f"{nodes[0].get('type', '?')}, {nodes[0].get('cores', '?')} cores")
            )
    return facts


def run_view(src: Source) -> RunView:
    docs = src.documents or {}
    details = docs.get("details")
    seed = src.bundle.seed if src.bundle is not None else 0
    rng = np.random.default_rng(seed)
    if isinstance(details, dict) and details.get("steps"):
        steps = [_step_from_details(src, d, rng) for d in details["steps"]]
        mark = details.get("meshmark") if src.kind == "bundle" else None
        notes = [str(n) for n in details.get("notes") or []]
    else:
        steps = [_step_from_result(r) for r in docs.get("performance_test_results") or []]
        mark, notes = None, []
    title = {
        "bundle": "smp-profiler run",
        "fortio": "fortio result",
        "nighthawk": "Nighthawk result",
        "smp": "SMP result",
    }.get(src.kind, src.kind)
    if any(q.state == "not in file" for s in steps for q in s.queue_work):
        notes.append(OLD_FILE_NOTE)
    for i, s in enumerate(steps):
        r = "max" if not s.rate_asked else f"{s.rate_asked:g}"
        note = stamps_note(f"step {i} ({r} req/s)", s.queue_work)
        notes += [note] if note else []
    notes = list(dict.fromkeys(notes + src.notes))
    return RunView(src.kind, f"{title}: {src.name}", steps, mark, _run_facts(src), notes)


def _process(p: dict[str, Any], role: str, rng: np.random.Generator) -> SidecarView:
    legs = {k: v for k, v in (p.get("legs") or {}).items() if isinstance(v, dict)}
    ci = {}
    for leg, v in legs.items():
        h = LatencyHistogram.from_json(v["histogram"]) if v.get("histogram") else None
        c = _ci50(h, rng)
        if c is not None:
            ci[leg] = c
    mem = p.get("mem_mb")
    missing = p.get("arrival_missing") if role == "sidecar" else None
    missing = (
        {k: int(missing.get(k) or 0) for k in ("request", "response")}
        if isinstance(missing, dict)
        else None
    )
    queue_work = (
        split_legs(
            {k: _f(d.get("p50_ms")) for k, d in legs.items()},
            {k: _f(d.get("p99_ms")) for k, d in legs.items()},
            {k: d.get("count") for k, d in legs.items()},
            missing,
        )
        if role == "sidecar"
        else []
    )
    return SidecarView(
        pid=int(p.get("pid", 0)),
        comm=str(p.get("comm", "?")),
        role=role,
        requests=int(p.get("requests") or 0),
        legs=legs,
        leg_ci=ci,
        cpu_mcores=_f(p.get("cpu_mcores")),
        cpu_seconds=_f(p.get("cpu_seconds")),
        mem_rss_mb=_f(mem.get("rss")) if isinstance(mem, dict) else _f(mem),
        exited=bool(p.get("exited", False)),
        unparsed_bytes=int((p.get("unparsed") or {}).get("bytes") or 0),
        unparsed_share=float((p.get("unparsed") or {}).get("share") or 0.0),
        arrival_missing=missing,
        queue_work=queue_work,
    )


def _statuses(st: dict[str, Any], lost: int = 0) -> str:
    """The kernel-decoded HTTP/2 statuses of a sidecar, one line: "200 x 3900, 503 x 12;
    grpc 0 x 3400, 14 x 500; 3 not decoded", and the header blocks the probe lost (``lost``:
    from then on, statuses the encoder had put in its table before are not decoded)."""
    parts = []
    for name, label in (("http", ""), ("grpc", "grpc ")):
        codes = st.get(name) or {}
        if codes:
            parts.append(label + ", ".join(f"{c} x {n:,}" for c, n in codes.items()))
    parts.append(f"{int(st.get('unknown') or 0):,} not decoded")
    if lost:
        parts.append(f"{lost:,} header blocks not followed to their end")
    return "; ".join(parts)


def _http1_statuses(st: dict[str, Any]) -> str:
    """The HTTP/1.1 statuses of a process's spans, one line: "200 x 3,900, 503 x 12; 0
    unknown" (unknown: a status the probe could not read, e.g. a TLS downstream)."""
    codes = [f"{c} x {int(n):,}" for c, n in st.items() if c != "unknown"]
    parts = [", ".join(codes)] if codes else []
    parts.append(f"{int(st.get('unknown') or 0):,} unknown")
    return "; ".join(parts)


def capture_view(src: Source) -> CaptureView:
    from profiler.errors import BadInputFile

    cap = src.capture or {}
    rng = np.random.default_rng(0)
    try:
        procs = [_process(p, "sidecar", rng) for p in cap.get("sidecars") or []]
        procs += [_process(p, "app", rng) for p in cap.get("apps") or []]
        host = cap.get("host") or {}
        facts = [
            ("file", f"{src.name} (capture)"),
            ("window", f"{cap.get('start_time', '?')} .. {cap.get('end_time', '?')}"),
            ("host", f"kernel {host.get('kernel', '?')}, {host.get('cpus', '?')} CPUs"),
            ("method", str(cap.get("method", "?"))),
        ]
        for sc in cap.get("sidecars") or []:
            st = sc.get("http2_statuses")
            if st and (st.get("http") or st.get("grpc") or st.get("unknown")):
                lost = int((sc.get("unparsed") or {}).get("http2_blocks_lost") or 0)
                facts.append((f"HTTP/2 statuses, pid {sc.get('pid', '?')}", _statuses(st, lost)))
        for role, key in (("sidecar", "sidecars"), ("app", "apps")):
            for p in cap.get(key) or []:
                h1 = p.get("http1_statuses")  # absent in files from before it was counted
                if h1 and any(h1.values()):
                    name = f"HTTP/1.1 statuses, {role} pid {p.get('pid', '?')}"
                    facts.append((name, _http1_statuses(h1)))
        notes = [*src.notes, *(f"WARNING: {w}" for w in cap.get("warnings") or [])]
        if any(q.state == "not in file" for p in procs for q in p.queue_work):
            notes.append(OLD_FILE_NOTE)
        for p in procs:
            note = stamps_note(f"{p.comm} ({p.pid})", p.queue_work)
            notes += [note] if note else []
        return CaptureView(
            kind="capture",
            title=f"capture: {src.name}",
            complete=bool(cap.get("complete", False)),
            incomplete_reason=cap.get("incomplete_reason"),
            duration_s=float(cap.get("duration_s") or 0.0),
            drops=int(cap.get("drops") or 0),
            processes=procs,
            facts=facts,
            notes=notes,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise BadInputFile(f"{src.path}: malformed capture: {type(e).__name__}: {e}") from None


def view(src: Source) -> RunView | CaptureView:
    return capture_view(src) if src.kind == "capture" else run_view(src)


def _rate(x: float | None) -> str:
    if not x:
        return "as fast as possible"
    return f"{x:,.0f} req/s" if x >= 10 else f"{x:.2g} req/s"


def sentence(v: RunView | CaptureView) -> str:
    """What it means, in one sentence."""
    if isinstance(v, CaptureView):
        sc = [p for p in v.processes if p.role == "sidecar"]
        if not sc:
            return "the capture traced no sidecar"
        p = sc[0]
        tot = p.legs.get("sidecar_total") or {}
        ci = p.leg_ci.get("sidecar_total")
        ci_s = f" (95% CI {ci[0]:.2f}-{ci[1]:.2f})" if ci else ""
        state = "" if v.complete else f"; INCOMPLETE: {v.incomplete_reason or 'see the file'}"
        p50 = tot.get("p50_ms")
        lat = f"spent {p50:.2f} ms at p50{ci_s} in the sidecar per request" if p50 else "no spans"
        unparsed = ""
        if p.unparsed_share > UNPARSED_WARN_SHARE:
            unparsed = (
                f"; {p.unparsed_bytes:,} bytes ({100 * p.unparsed_share:.0f}% of its traffic) "
                "were not parsed as HTTP: those requests are not counted"
            )
        return (
            f"over {v.duration_s:.1f} s, {p.comm} (pid {p.pid}) handled {p.requests:,} requests, "
            f"{lat}, and used {(p.cpu_mcores or 0) / 1000:.2f} cores; {v.drops} events "
            f"dropped{unparsed}{state}"
        )
    if not v.steps:
        return "no rate step"
    s = v.steps[-1]
    at = f"at {_rate(s.rate_achieved or s.rate_asked)}"
    parts = []
    if s.overhead and "p50" in s.overhead:
        d, (lo, hi) = s.overhead["p50"]
        parts.append(f"the sidecar adds {d:.2f} ms at p50 (95% CI {lo:.2f}-{hi:.2f}, A/B)")
    sc50 = s.legs.get("sidecar_total")
    if sc50 is not None:
        sci = f" (95% CI {s.sidecar_ci[0]:.2f}-{s.sidecar_ci[1]:.2f})" if s.sidecar_ci else ""
        parts.append(f"{'eBPF sees' if parts else 'the sidecar adds'} {sc50:.2f} ms at p50{sci}")
    if s.cpu_mcores is not None and not s.sidecar_error:
        per = f" ({s.cores_per_1k_rps:.2f} per 1,000 req/s)" if s.cores_per_1k_rps else ""
        parts.append(f"costs {s.cpu_mcores / 1000:.2f} cores{per}")
    a = s.ebpf_vs_ab
    if a and s.overhead and sc50 is not None:
        diff = a.get("difference_ms")
        parts.append(
            "eBPF and A/B agree"
            if a.get("agree")
            else f"eBPF and A/B DISAGREE by {abs(float(diff or 0.0)):.2f} ms"
        )
    if s.error_rate:
        parts.append(f"{s.error_rate:.1%} of its requests failed")
    if s.sidecar_error:
        parts.append(f"the captured sidecar is not on the path ({s.sidecar_error})")
    if not parts:
        p50 = s.latency.get("p50")
        if p50 is None:
            return f"{at} the file has no latency"
        return f"{at} requests took {p50:.2f} ms at p50 (no baseline, no sidecar measurement)"
    return f"{at} " + ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]
