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
- ``probe``: the sidecar probe itself, Envoy and its app traced, its records read by this
  process's engine as the daemon reads them (no spans file);
- ``unread``: the same probe with its ring buffer never read: once the ring is full every
  record is dropped in the kernel, so this is the probe's in-kernel work without any consumer
  (what keeping the daemon's histograms in the kernel could reach at best).

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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.common import paired_ratios, poll_during, rotate, testbed
from benchmarks.overhead import CONNECTIONS, parse_wrk

FLOOR_SOURCE = Path(__file__).resolve().parent / "floor.c"
VARIANTS = ("off", "hooks", "least", "probe", "unread")


def _wrk(tb: Any, seconds: float) -> float:
    from profiler.loadgen.common import netns_prefix

    st = tb.state
    argv = [*netns_prefix(st.client.netns), "wrk", "-t1", f"-c{CONNECTIONS}"]
    argv += [f"-d{int(seconds)}s", "--timeout=5s", st.url]
    p = subprocess.run(argv, capture_output=True, text=True, check=True)
    return parse_wrk(p.stdout)["rps"]


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


def _floor_window(tb: Any, level: int, seconds: float, stats: bool) -> dict[str, float]:
    from profiler import btf, capabilities
    from profiler.probes import loader

    bpf_class, detail = capabilities.import_bcc()
    if bpf_class is None:
        raise RuntimeError(detail)
    skb_len = btf.member_offset("sk_buff", "len")
    if skb_len is None:
        raise RuntimeError("no skb->len offset in the kernel's BTF")
    defines = {"FLOOR_LEVEL": level, "SKB_LEN_OFF": skb_len}
    with capabilities.captured_stderr():
        bpf = bpf_class(src_file=str(FLOOR_SOURCE), cflags=loader.cflags(defines))
    try:
        pids = bpf["floor_pids"]
        for pid in (tb.state.server.envoy_pid, tb.state.server.app_pid):
            pids[pids.Key(pid)] = pids.Leaf(1)
        with _stats(stats):
            a = loader.prog_stats(bpf)
            rps = _wrk(tb, seconds)
            b = loader.prog_stats(bpf)
    finally:
        bpf.cleanup()
    return {"rps": rps, "bpf_ns": _bpf_ns(a, b)}


def _probe_window(tb: Any, seconds: float, stats: bool, read: bool) -> dict[str, float]:
    from profiler.capture.engine import Engine
    from profiler.probes import loader

    st = tb.state
    engine = Engine(ringbuf_pages=256)
    try:
        engine.add_target(st.server.envoy_pid, "sidecar")
        engine.add_target(st.server.app_pid, "app")
        bpf = engine._probe._bpf  # type: ignore[attr-defined]
        with _stats(stats):
            a = loader.prog_stats(bpf)
            if read:
                rps, cpu = poll_during(lambda: engine.poll(100), lambda: _wrk(tb, seconds))
                engine.drain()
            else:
                rps, cpu = _wrk(tb, seconds), 0.0
            b = loader.prog_stats(bpf)
        requests = engine.targets[st.server.envoy_pid].requests
    finally:
        engine.close()
    return {"rps": rps, "bpf_ns": _bpf_ns(a, b), "requests": requests, "consumer_s": cpu}


def window(tb: Any, variant: str, seconds: float, stats: bool) -> dict[str, float]:
    if variant == "off":
        return {"rps": _wrk(tb, seconds)}
    if variant in ("probe", "unread"):
        return _probe_window(tb, seconds, stats, read=variant == "probe")
    return _floor_window(tb, {"hooks": 0, "least": 1}[variant], seconds, stats)


def render(out: dict[str, list[dict[str, float]]], seconds: float, stats: bool) -> str:
    off = out["off"]
    lines = [
        "| variant | req/s (median) | throughput vs off (paired, median [min..max]) "
        "| BPF ns per request (median) |",
        "|---|---|---|---|",
    ]
    for v in out:
        ws = out[v]
        rps = statistics.median(w["rps"] for w in ws)
        if v == "off":
            lines.append(f"| off | {rps:,.0f} | 1 | - |")
            continue
        ratios = paired_ratios([o["rps"] for o in off], [w["rps"] for w in ws])
        # (the requests wrk counted: about the window's; off without --stats)
        ns = statistics.median(w["bpf_ns"] / (w["rps"] * seconds) for w in ws)
        shown = f"{ns:,.0f}" if stats else "- (--stats)"
        lines.append(
            f"| {v} | {rps:,.0f} | {statistics.median(ratios):.3f} "
            f"[{min(ratios):.3f}..{max(ratios):.3f}] | {shown} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--window", type=float, default=5.0)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--stats", action="store_true", help="count BPF ns (bpf_stats) too")
    ap.add_argument("--only", action="append", choices=VARIANTS[1:], help="these (and off)")
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("benchmarks.floor: need root (BPF, the testbed)", file=sys.stderr)
        return 77
    variants = ("off", *a.only) if a.only else VARIANTS
    with testbed("fl") as tb:
        _wrk(tb, 2)  # warm-up: Envoy's first connections, the caches

        def run(v: str) -> dict[str, float]:
            w = window(tb, v, a.window, a.stats)
            print(f"{v}: {w['rps']:,.0f} req/s", file=sys.stderr, flush=True)
            return w

        results = rotate(a.rounds, [lambda v=v: run(v) for v in variants])
    out = dict(zip(variants, results, strict=True))
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    print(render(out, a.window, a.stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
