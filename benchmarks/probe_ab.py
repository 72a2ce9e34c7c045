"""A/B of two builds of the sidecar probe, per hook and per proxied request (issue 11).

    python -m benchmarks.probe_ab [--base REF] [--rounds N] [--window S] [--path sock|syscalls]

The probe's C from git ``REF`` (default ``main``) and from this tree are loaded in turn, in
this process, each for one wrk window (saturation, ``-t1 -c16``) through the testbed's Envoy
with the Envoy and its app traced (as the daemon traces a pod), ``kernel.bpf_stats_enabled``
on. Rounds alternate which build goes first. Per build and round: every program's runs and ns
per proxied request (the kernel's own count, so the noise of a shared machine does not blur
it; the node's background rate, measured in the second before and after the load, is
subtracted), the consumer's CPU per request (this process's polling thread; the same Python
for both builds), the spans file written per request, and the C loop's untraced calls with
each build attached (BPF runs and ns per call). Printed as medians over rounds and the paired
after/before ratio per round.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import build_c, poll_during, testbed
from benchmarks.overhead import (
    CONNECTIONS,
    PAIRS,
    TAX_CALLS,
    TAX_SOURCE,
    parse_tax,
    parse_wrk,
    tax_syscalls,
)

ROOT = Path(__file__).resolve().parent.parent
IDLE_S = 1.0  # the node's background program runs are measured this long before and after


def export_bpf(ref: str, into: Path) -> Path:
    """``bpf/`` as it is at git ``ref``, unpacked under ``into``."""
    tar = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "bpf"], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(into, filter="data")
    return into / "bpf"


@contextlib.contextmanager
def bpf_tree(path: Path) -> Any:
    from profiler.probes import loader

    saved = loader._PACKAGED
    loader._PACKAGED = path
    try:
        yield
    finally:
        loader._PACKAGED = saved


def window(tb: Any, tree: Path, seconds: float, tax_exe: Path, spans_dir: Path) -> dict[str, Any]:
    from profiler.capture import document
    from profiler.capture.engine import Engine
    from profiler.loadgen.common import netns_prefix
    from profiler.probes import loader

    st = tb.state
    with bpf_tree(tree):
        engine = Engine(ringbuf_pages=256, keep_spans=True)
    try:
        engine.add_target(st.server.envoy_pid, "sidecar")
        engine.add_target(st.server.app_pid, "app")
        bpf = engine._probe._bpf  # type: ignore[attr-defined]
        argv = [*netns_prefix(st.client.netns), "wrk", "-t1", f"-c{CONNECTIONS}"]
        argv += [f"-d{int(seconds)}s", "--timeout=5s", st.url]
        with loader.bpf_stats_enabled():
            # the node's other socket traffic runs the programs too (other processes, other
            # tests): its rate in the second before and after the load is subtracted
            b0 = loader.prog_stats(bpf)
            time.sleep(IDLE_S)
            s0 = loader.prog_stats(bpf)
            t0 = time.monotonic()
            res, cpu = poll_during(
                lambda: engine.poll(100),
                lambda: subprocess.run(argv, capture_output=True, text=True, check=True),
            )
            engine.drain()
            s1 = loader.prog_stats(bpf)
            load_s = time.monotonic() - t0
            time.sleep(IDLE_S)
            b1 = loader.prog_stats(bpf)
            tax = {}
            for call in TAX_CALLS:
                a = loader.prog_stats(bpf)
                p = subprocess.run([str(tax_exe), "3", "0.3", call], capture_output=True, text=True)
                b = loader.prog_stats(bpf)
                one = parse_tax(p.stdout, call)[call]
                n = tax_syscalls(one, call) // (2 if call in PAIRS else 1)
                tax[call] = {
                    "best_ns": one["best"],
                    "runs": sum(b[k][0] - a[k][0] for k in b) / n,
                    "ns": sum(b[k][1] - a[k][1] for k in b) / n,
                }
        envoy = engine.targets[st.server.envoy_pid]
        app = engine.targets[st.server.app_pid]
        rows = [("sidecar", c) for c in envoy.rows] + [("app", c) for c in app.rows]
        t0 = time.process_time()
        document.write_spans(spans_dir / "spans.csv", rows)
        write_s = time.process_time() - t0
    finally:
        engine.close()
    n = max(envoy.requests, 1)
    progs = {}
    for k in s1:
        bg = [(s0[k][i] - b0[k][i] + b1[k][i] - s1[k][i]) / (2 * IDLE_S) * load_s for i in (0, 1)]
        progs[k] = (
            max(s1[k][0] - s0[k][0] - bg[0], 0.0) / n,
            max(s1[k][1] - s0[k][1] - bg[1], 0.0) / n,
        )
    return {
        "wrk_rps": parse_wrk(res.stdout)["rps"],
        "requests": envoy.requests,
        "app_requests": app.requests,
        "consumer_us": cpu / n * 1e6,
        "spans_file_us": write_s / n * 1e6,
        "progs": progs,
        "tax": tax,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="main")
    ap.add_argument("--after", type=Path, default=ROOT / "bpf", help="a bpf/ directory")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--window", type=float, default=4.0)
    ap.add_argument("--path", choices=("sock", "syscalls"), default=None)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    if a.path:
        os.environ["SMP_PROBE_PATH"] = a.path
    with tempfile.TemporaryDirectory(prefix="smp-ab-") as tmp_s:
        tmp = Path(tmp_s)
        trees = {"before": export_bpf(a.base, tmp / "base"), "after": a.after}
        tax_exe = build_c(TAX_SOURCE, tmp)
        out: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
        with testbed("ab") as tb:
            for r in range(a.rounds):
                order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
                for name in order:
                    w = window(tb, trees[name], a.window, tax_exe, tmp)
                    out[name].append(w)
                    print(
                        f"round {r} {name}: {w['requests']} req, {w['wrk_rps']:.0f} req/s, "
                        f"bpf {sum(v[1] for v in w['progs'].values()):.0f} ns/req, "
                        f"consumer {w['consumer_us']:.2f} us/req, "
                        f"spans file {w['spans_file_us']:.2f} us/req",
                        file=sys.stderr,
                    )
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    print(render(out))
    return 0


def _med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def render(out: dict[str, list[dict[str, Any]]]) -> str:
    b, f = out["before"], out["after"]
    lines = [
        "| program | before runs/req | before ns/req | after runs/req | after ns/req "
        "| after/before ns (paired, median [min..max]) |",
        "|---|---|---|---|---|---|",
    ]
    names = sorted({k for w in b + f for k in w["progs"]})
    for k in [*names, "all programs"]:

        def get(w: dict[str, Any], i: int, k: str = k) -> float:
            if k == "all programs":
                return float(sum(v[i] for v in w["progs"].values()))
            return float(w["progs"].get(k, (0.0, 0.0))[i])

        ratios = [get(y, 1) / get(x, 1) for x, y in zip(b, f, strict=False) if get(x, 1)]
        rr = f"{_med(ratios):.2f} [{min(ratios):.2f}..{max(ratios):.2f}]" if ratios else "-"
        lines.append(
            f"| {k} | {_med([get(w, 0) for w in b]):.2f} | "
            f"{_med([get(w, 1) for w in b]):.0f} | {_med([get(w, 0) for w in f]):.2f} | "
            f"{_med([get(w, 1) for w in f]):.0f} | {rr} |"
        )
    lines += ["", "| per request | before | after |", "|---|---|---|"]
    for key, label in (
        ("consumer_us", "consumer CPU (us)"),
        ("spans_file_us", "spans file write (us)"),
        ("wrk_rps", "wrk req/s"),
    ):
        lines.append(
            f"| {label} | {_med([w[key] for w in b]):.2f} | {_med([w[key] for w in f]):.2f} |"
        )
    lines += [
        "",
        "| untraced call | before runs | before BPF ns | after runs | after BPF ns |",
        "|---|---|---|---|---|",
    ]
    for call in TAX_CALLS:
        lines.append(
            f"| {call} | {_med([w['tax'][call]['runs'] for w in b]):.2f} | "
            f"{_med([w['tax'][call]['ns'] for w in b]):.1f} | "
            f"{_med([w['tax'][call]['runs'] for w in f]):.2f} | "
            f"{_med([w['tax'][call]['ns'] for w in f]):.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
