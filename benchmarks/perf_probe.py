"""Where the probe's BPF time goes: ``perf`` samples of the whole node, attributed to the
sidecar probe's programs and to what each calls (issue 11).

    python -m benchmarks.perf_probe [--seconds S] [--data FILE]

wrk (``-t1 -c16``, saturation) through the testbed's 1-worker Envoy with the probe attached to
the Envoy and its app (records read by this process's engine, as the daemon reads them), and
``perf record -a -g -e cpu-clock`` meanwhile (needs ``perf`` and
``net.core.bpf_jit_kallsyms=1``, so that JIT-ed programs have symbols). Printed: per program,
its share of all samples (its own code and everything it calls), and of those, how many fell
in the program's own code (``(self)``) or in each helper or kernel function it called. A share
of samples, not a time: it says where to look, and ``probe_ab`` measures what a change gains.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.common import poll_during, testbed
from benchmarks.overhead import CONNECTIONS

_PROG = re.compile(r"bpf_prog_[0-9a-f]+_(\w+)")


def attribute(script: str) -> tuple[int, dict[str, collections.Counter[str]]]:
    """(all samples, program -> Counter of the frame it called or "(self)") from ``perf
    script -F ip,sym`` text: one block of frames per sample, leaf first."""
    total, out = 0, collections.defaultdict(collections.Counter)
    for block in script.split("\n\n"):
        frames = [line.split(None, 1)[-1] for line in block.strip().splitlines() if line.strip()]
        if not frames:
            continue
        total += 1
        for i, frame in enumerate(frames):
            m = _PROG.search(frame)
            if m:
                out[m.group(1)][frames[i - 1].split("+")[0] if i else "(self)"] += 1
                break
    return total, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.perf_probe")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--data", type=Path, default=Path("/tmp/smp-perf-probe.data"))
    args = ap.parse_args(argv)
    if shutil.which("perf") is None:
        print("perf_probe: needs perf (Debian: apt-get install linux-perf)", file=sys.stderr)
        return 2
    from profiler.capture.engine import Engine
    from profiler.loadgen.common import netns_prefix

    with testbed("pp") as tb:
        st = tb.state
        engine = Engine(ringbuf_pages=256, keep_spans=False)
        try:
            engine.add_target(st.server.envoy_pid, "sidecar")
            engine.add_target(st.server.app_pid, "app")
            wrk = [*netns_prefix(st.client.netns), "wrk", "-t1", f"-c{CONNECTIONS}"]
            wrk += [f"-d{args.seconds}s", "--timeout=5s", st.url]
            perf = ["perf", "record", "-q", "-e", "cpu-clock", "-F", "4999", "-a", "-g"]
            perf += ["-o", str(args.data), "--", "sleep", str(max(args.seconds - 2, 1))]
            rec = subprocess.Popen(perf)  # ends 2 s before the load does
            poll_during(
                lambda: engine.poll(100),
                lambda: subprocess.run(wrk, capture_output=True, text=True, check=True),
            )
            rec.wait()
            requests = engine.targets[st.server.envoy_pid].requests
        finally:
            engine.close()
    script = subprocess.run(
        ["perf", "script", "-i", str(args.data), "-F", "ip,sym"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    total, progs = attribute(script)
    print(f"{total} samples of the node, {requests} requests through Envoy")
    for name, calls in sorted(progs.items(), key=lambda kv: -sum(kv[1].values())):
        n = sum(calls.values())
        print(f"{name}: {100 * n / max(total, 1):.2f}% of all samples")
        for callee, k in calls.most_common(10):
            print(f"    {callee:44s} {100 * k / n:5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
