"""How far down the probe's cost can go on these hooks: the floor, measured (issue 11).

    python -m benchmarks.floor [--rounds N] [--window S] [--json FILE]

wrk (``-t1 -c16``, saturation) through the testbed's 1-worker Envoy, one window per variant
per round, the variants' order rotated each round:

- ``off``: nothing attached;
- ``hooks``: every hook the sidecar probe uses on the sock path, each with a program that
  returns at once (``benchmarks/floor.c``, level 0): the price of being called at all;
- ``least``: the least each hook must do to time requests (level 1: the PID filter, the
  syscall's registers, the clock and 12 bytes of the buffer for a traced call; an array slot
  per data arrival; the length, a per-CPU slot and the clock per packet), Envoy and its app
  traced, nothing sent to user space;
- ``timing``: the least a probe must do to time every request and hand it to user space
  (level 2: level 1, the data's first bytes through the iovec, the socket's entry in a hash
  with each call's instant, an arrival stamp per traced socket, one ring record per response
  written: two a proxied request), read in batches as the probe's are (``RingReader``, polls
  of up to 100 ms or half a ring) and counted, nothing more: no request ids, roles, HTTP/2
  or answer queue;
- ``probe``: the sidecar probe itself, Envoy and its app traced, its records read by this
  process's engine as the daemon reads them (no spans file);
- ``unread``: the same probe with its ring buffer never read: once the ring is full every
  record is dropped in the kernel, so this is the probe's in-kernel work without any consumer
  (what keeping the daemon's histograms in the kernel could reach at best).
- ``probe-batch``, ``probe-idle``: ``probe`` with its reading thread (this process's) at
  SCHED_BATCH or SCHED_IDLE for the window: whether the reader's CPU or its wakeups cost the
  proxy (docs/overhead.md, "The reader's priority");
- ``burnN`` (``burn250``, ``burn500``, ``burn1000``, ``burn2000``): ``least``, and each socket
  call of the sidecar that moved data spins on the clock N ns first, in the sidecar's own
  thread (the app's calls are not burned): a known dose of BPF time per request (4 such calls
  a proxied request, counted), so the slope of throughput against the dose says what each us
  of a probe's work in the proxy's thread costs at saturation on this node.

Printed: each variant's throughput as a ratio to the same round's ``off`` window (median
[min..max] over rounds). With ``--stats``, also the BPF ns per request the kernel counted
(``kernel.bpf_stats_enabled``, which itself reads the clock twice per program run, so the
ratios then include that). The ``hooks`` and ``least`` ratios bound what any probe on these
hooks can reach on this node.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import build_c, paired_deltas, paired_ratios, poll_during, rotate, testbed
from benchmarks.overhead import (
    CONNECTIONS,
    OPEN_CONNECTIONS,
    TAX_LABELS,
    TAX_REPS,
    TAX_SCALE,
    TAX_SOURCE,
    parse_tax,
    parse_wrk,
)

FLOOR_SOURCE = Path(__file__).resolve().parent / "floor.c"
BURNS = {"burn250": 250, "burn500": 500, "burn1000": 1000, "burn2000": 2000}  # ns a call
PROBES = ("probe", "unread", "probe-batch", "probe-idle")  # the sidecar probe itself
VARIANTS = ("off", "hooks", "least", "timing", *PROBES, *BURNS)
RING_PAGES = 256  # as the probe variant's engine
FLOOR_TAX_CALLS = ("sockpair", "tcp")  # the calls whose packets and socket calls run the hooks
FLOOR_RECORD = np.dtype(  # struct floor_conn (floor.c)
    [("sk", "<u8"), ("t", "<u8", 4), ("arr", "<u8"), ("n", "<u4"), ("tgid", "<u4")]
)


def _wrk(tb: Any, seconds: float) -> float:
    from profiler.loadgen.common import netns_prefix

    st = tb.state
    argv = [*netns_prefix(st.client.netns), "wrk", "-t1", f"-c{CONNECTIONS}"]
    argv += [f"-d{int(seconds)}s", "--timeout=5s", st.url]
    p = subprocess.run(argv, capture_output=True, text=True, check=True)
    return parse_wrk(p.stdout)["rps"]


class Loads:
    """What one window measures: wrk at saturation (``rps``; BPF counted around it only,
    ``snap()`` before and after), then with ``--latency`` the built-in open-loop generator at
    ``rate`` (``p50_us``, ``p99_us``), then with ``--tax`` the C loop of ``benchmarks/tax.c``
    in a process nobody traces (``tax``: ns per call, best of its repetitions)."""

    def __init__(self, tb: Any, seconds: float, rate: float, tax_exe: Path | None) -> None:
        self.tb, self.seconds, self.rate, self.tax_exe = tb, seconds, rate, tax_exe

    def run(self, snap: Callable[[], Any]) -> dict[str, Any]:
        a = snap()
        out: dict[str, Any] = {"rps": _wrk(self.tb, self.seconds)}
        b = snap()
        out["bpf_ns"] = _bpf_ns(a, b) if a is not None else 0
        if self.rate:
            from profiler.loadgen import LoadSpec, run_load

            st = self.tb.state
            spec = LoadSpec(
                "builtin",
                st.url,
                self.rate,
                self.seconds,
                OPEN_CONNECTIONS,
                warmup_s=0.3,
                netns=st.client.netns,
            )
            r = run_load(spec)
            out["p50_us"] = float(r.percentiles_ms[50.0]) * 1000.0
            out["p99_us"] = float(r.percentiles_ms[99.0]) * 1000.0
            out["fixed_requests"] = r.requests
        if self.tax_exe is not None:
            p = subprocess.run(
                [str(self.tax_exe), str(TAX_REPS), f"{TAX_SCALE:g}"],
                capture_output=True,
                text=True,
                check=True,
                timeout=120,
            )
            out["tax"] = {k: v["best"] for k, v in parse_tax(p.stdout).items()}
        return out


def _bpf_ns(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> int:
    return sum(after[k][1] - before[k][1] for k in after)


@contextlib.contextmanager
def _stats(on: bool) -> Iterator[None]:
    from profiler.probes import loader

    if not on:
        yield
        return
    with loader.bpf_stats_enabled():
        yield


def _consume(ring: Any, counted: list[int]) -> None:
    """One poll as the probe's (``SidecarProbe.poll``): up to 100 ms, less once half full."""
    deadline = time.monotonic() + 0.1
    while ring.filled() < ring.size // 2 and time.monotonic() < deadline:
        time.sleep(0.025)
    counted[0] += len(ring.read())


def _floor_window(loads: Loads, level: int, stats: bool, burn_ns: int = 0) -> dict[str, Any]:
    from profiler import btf, capabilities
    from profiler.probes import loader
    from profiler.probes.ringbuf import RingReader

    bpf_class, detail = capabilities.import_bcc()
    if bpf_class is None:
        raise RuntimeError(detail)
    skb_len = btf.member_offset("sk_buff", "len")
    if skb_len is None:
        raise RuntimeError("no skb->len offset in the kernel's BTF")
    defines = {"FLOOR_LEVEL": level, "SKB_LEN_OFF": skb_len, "FLOOR_RING_PAGES": RING_PAGES}
    if burn_ns:
        defines["FLOOR_BURN_NS"] = burn_ns
    with capabilities.captured_stderr():
        bpf = bpf_class(src_file=str(FLOOR_SOURCE), cflags=loader.cflags(defines))
    ring = None
    try:
        pids = bpf["floor_pids"]
        st = loads.tb.state
        pids[pids.Key(st.server.envoy_pid)] = pids.Leaf(2 if burn_ns else 1)
        pids[pids.Key(st.server.app_pid)] = pids.Leaf(1)
        counted = [0]
        with _stats(stats):
            if level < 2:
                out = loads.run(lambda: loader.prog_stats(bpf))
                if burn_ns:
                    out["burned_calls"] = int(bpf["floor_burned"].sum(0).value)
                    out["burn_ns"] = burn_ns
                return out
            ring = RingReader(bpf["floor_ring"].map_fd, RING_PAGES, FLOOR_RECORD)
            out, cpu = poll_during(
                lambda: _consume(ring, counted), lambda: loads.run(lambda: loader.prog_stats(bpf))
            )
        out.update(records=counted[0], consumer_s=cpu)
        return out
    finally:
        if ring is not None:
            ring.close()
        bpf.cleanup()


def _probe_window(loads: Loads, stats: bool, read: bool, policy: int = 0) -> dict[str, Any]:
    from profiler.capture.engine import Engine
    from profiler.probes import loader

    st = loads.tb.state
    engine = Engine(ringbuf_pages=RING_PAGES)
    try:
        engine.add_target(st.server.envoy_pid, "sidecar")
        engine.add_target(st.server.app_pid, "app")
        bpf = engine._probe._bpf  # type: ignore[attr-defined]
        with _stats(stats):
            snap = lambda: loader.prog_stats(bpf)  # noqa: E731
            if read:
                own = os.sched_getscheduler(0)
                os.sched_setscheduler(0, policy or own, os.sched_param(0))
                try:
                    out, cpu = poll_during(lambda: engine.poll(100), lambda: loads.run(snap))
                finally:
                    os.sched_setscheduler(0, own, os.sched_param(0))
                engine.drain()
            else:
                out, cpu = loads.run(snap), 0.0
        out.update(requests=engine.targets[st.server.envoy_pid].requests, consumer_s=cpu)
    finally:
        engine.close()
    return out


def window(loads: Loads, variant: str, stats: bool) -> dict[str, Any]:
    if variant == "off":
        return loads.run(lambda: None)
    if variant in PROBES:
        policy = {"probe-batch": os.SCHED_BATCH, "probe-idle": os.SCHED_IDLE}.get(variant, 0)
        return _probe_window(loads, stats, read=variant != "unread", policy=policy)
    if variant in BURNS:
        return _floor_window(loads, 1, stats, BURNS[variant])
    return _floor_window(loads, {"hooks": 0, "least": 1, "timing": 2}[variant], stats)


def _requests(w: dict[str, Any], seconds: float) -> float:
    """The requests through the sidecar in a window: wrk's, and the fixed rate's if any."""
    return float(w["rps"] * seconds + w.get("fixed_requests", 0))


def _dose_ns(w: dict[str, Any], seconds: float) -> float:
    """The BPF ns a window's burn spun per request (0 for a window without a burn)."""
    return float(w.get("burned_calls", 0) * w.get("burn_ns", 0) / _requests(w, seconds))


def _span(xs: list[float], fmt: str) -> str:
    return f"{statistics.median(xs):{fmt}} [{min(xs):{fmt}}..{max(xs):{fmt}}]"


def render(out: dict[str, list[dict[str, Any]]], seconds: float, stats: bool) -> str:
    """One row per variant: paired with the same round's ``off`` (ratio or difference),
    median [min..max] over the rounds."""
    off = out["off"]
    latency = "p50_us" in off[0]
    tax = "tax" in off[0]
    head = ["variant", "req/s (median)", "throughput vs off", "BPF ns per request"]
    burns = any("burned_calls" in out[v][0] for v in out)
    if burns:
        head.append("burned ns per request")
    if latency:
        head += ["p50 added (us)", "p99 added (us)"]
    if tax:
        head += [f"{TAX_LABELS[c]} added (ns)" for c in FLOOR_TAX_CALLS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v in out:
        ws = out[v]
        rps = statistics.median(w["rps"] for w in ws)
        if v == "off":
            cells = ["off", f"{rps:,.0f}", "1", "-"] + (["-"] if burns else [])
            if latency:
                cells += [
                    f"p50 {_span([w['p50_us'] for w in ws], ',.0f')}",
                    f"p99 {_span([w['p99_us'] for w in ws], ',.0f')}",
                ]
            if tax:
                cells += [_span([w["tax"][c] for w in ws], ",.1f") for c in FLOOR_TAX_CALLS]
            lines.append("| " + " | ".join(cells) + " |")
            continue
        ratios = paired_ratios([o["rps"] for o in off], [w["rps"] for w in ws])
        # (the requests wrk counted: about the window's; off without --stats)
        ns = statistics.median(w["bpf_ns"] / (w["rps"] * seconds) for w in ws)
        cells = [v, f"{rps:,.0f}", _span(ratios, ".3f"), f"{ns:,.0f}" if stats else "- (--stats)"]
        if burns:
            dose = [_dose_ns(w, seconds) for w in ws if "burn_ns" in w]
            cells.append(f"{statistics.median(dose):,.0f}" if dose else "-")
        if latency:
            for k in ("p50_us", "p99_us"):
                cells.append(_span(paired_deltas([o[k] for o in off], [w[k] for w in ws]), "+,.0f"))
        if tax:
            for c in FLOOR_TAX_CALLS:
                d = paired_deltas([o["tax"][c] for o in off], [w["tax"][c] for w in ws])
                cells.append(_span(d, "+,.1f"))
        lines.append("| " + " | ".join(cells) + " |")
    if burns and "least" in out:
        lines += ["", dose_response(out, seconds)]
    return "\n".join(lines)


def dose_response(out: dict[str, list[dict[str, Any]]], seconds: float) -> str:
    """The line through every round's (dose, throughput ratio) of ``least`` (dose 0) and the
    burn variants, by least squares: the throughput each us of BPF per request in the
    sidecar's thread costs, and the dose at which the line reaches the goal's 0.97."""
    xs: list[float] = []
    ys: list[float] = []
    off = [o["rps"] for o in out["off"]]
    for v in ("least", *BURNS):
        if v not in out:
            continue
        ws = out[v]
        for w, r in zip(ws, paired_ratios(off, [w["rps"] for w in ws]), strict=True):
            xs.append(_dose_ns(w, seconds) / 1e3)
            ys.append(r)
    if len(xs) < 3:
        return f"Dose-response: {len(xs)} windows, too few for a line and its error"
    slope, at0 = np.polyfit(xs, ys, 1)
    resid = np.asarray(ys) - (at0 + slope * np.asarray(xs))
    # the slope's standard error, from the residuals (n - 2 degrees of freedom)
    se = float(np.sqrt(resid @ resid / (len(xs) - 2) / (np.var(xs) * len(xs))))
    goal = (0.97 - at0) / slope if slope < 0 else float("inf")
    return (
        f"Dose-response over {len(xs)} windows: throughput ratio = {at0:.3f} "
        f"{slope:+.4f} x (us of BPF per request in the sidecar's thread), slope +- {se:.4f} "
        f"(one standard error); the line reaches 0.97 at {goal:+.2f} us a request"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--window", type=float, default=5.0)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--stats", action="store_true", help="count BPF ns (bpf_stats) too")
    ap.add_argument(
        "--latency",
        action="store_true",
        help="p50/p99 at a quarter of the warm-up's wrk rate, per window",
    )
    ap.add_argument(
        "--tax",
        action="store_true",
        help="the node tax (benchmarks/tax.c) per window, in an untraced process",
    )
    ap.add_argument("--only", action="append", choices=VARIANTS[1:], help="these (and off)")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("benchmarks.floor: need root (BPF, the testbed)", file=sys.stderr)
        return 77
    variants = ("off", *a.only) if a.only else VARIANTS
    with testbed("fl") as tb, tempfile.TemporaryDirectory(prefix="smp-floor-") as tmp:
        tax_exe = build_c(TAX_SOURCE, Path(tmp)) if a.tax else None
        top = _wrk(tb, 2)  # warm-up: Envoy's first connections, the caches
        loads = Loads(tb, a.window, top / 4 if a.latency else 0.0, tax_exe)

        def run(v: str) -> dict[str, Any]:
            w = window(loads, v, a.stats)
            extra = ""
            n = _requests(w, a.window)
            if "records" in w:  # timing: two a proxied request (the app's, the sidecar's)
                extra = f", {w['records'] / n:.2f} records per request"
            if "burned_calls" in w:  # four a proxied request
                extra = f", {w['burned_calls'] / n:.2f} burned calls per request"
            print(f"{v}: {w['rps']:,.0f} req/s{extra}", file=sys.stderr, flush=True)
            return w

        results = rotate(a.rounds, [lambda v=v: run(v) for v in variants])
    out = dict(zip(variants, results, strict=True))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    print(render(out, a.window, a.stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
