"""``python -m benchmarks [--quick] [--only NAME ...] [--out DIR] [--nice N]``: run the
benchmarks, write ``<date>.json``, ``latest.json`` and ``latest.md`` under benchmarks/results/,
print the tables.

The benchmark and everything it starts (the testbed's Envoy and app, the load generators, the
profiler) run at nice -10 by default, with their scheduler autogroups (this session's, put back
after the run, and the pods'): on a machine shared with other work the neighbours then take
what the measured processes leave instead of landing at random in one window of a pair."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.common import FULL, QUICK, RESULTS, machine, markdown, write_results

BENCHMARKS = ("overhead", "accuracy", "capacity", "loadgens", "analysis")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="shorter windows, fewer rounds")
    ap.add_argument("--only", action="append", choices=BENCHMARKS, help="run only these")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    ap.add_argument(
        "--nice", type=int, default=-10, help="niceness for the benchmark and its children"
    )
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("benchmarks: need root (BPF, the testbed)", file=sys.stderr)
        return 77
    profile = QUICK if args.quick else FULL
    group_nice = common.autogroup_nice()
    if args.nice:
        common.NICE = args.nice
        common.prioritize("self", args.nice)
    names = args.only or list(BENCHMARKS)
    doc: dict[str, Any] = {
        "kind": "smp-profiler/benchmarks",
        "profile": profile.name,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {**machine(), "nice": os.getpriority(os.PRIO_PROCESS, 0), "autogroup": _ag()},
        "benchmarks": {},
    }
    t0 = time.monotonic()
    failed = 0
    for name in names:
        mod = importlib.import_module(f"benchmarks.{name}")
        print(f"== {name} ({profile.name})", file=sys.stderr, flush=True)
        start = time.monotonic()
        try:
            res: dict[str, Any] = mod.run(profile)
        except Exception as e:
            failed += 1
            traceback.print_exc()
            res = {"error": f"{type(e).__name__}: {e}"}
        res["seconds"] = round(time.monotonic() - start, 1)
        doc["benchmarks"][name] = res
        if "tables" in res:
            print(markdown(res["tables"]), flush=True)
        print(f"== {name}: {res['seconds']:.0f} s", file=sys.stderr, flush=True)
    if args.nice and group_nice is not None:  # the session's group as it was
        with contextlib.suppress(OSError):
            Path("/proc/self/autogroup").write_text(f"{group_nice}\n")
    doc["seconds"] = round(time.monotonic() - t0, 1)
    doc["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    for path in write_results(doc, args.out):
        print(f"wrote {path}", file=sys.stderr)
    return 1 if failed else 0


def _ag() -> str:
    try:
        return Path("/proc/self/autogroup").read_text().strip()
    except OSError:
        return "-"


if __name__ == "__main__":
    sys.exit(main())
