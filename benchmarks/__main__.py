"""``python -m benchmarks [--quick] [--only NAME ...] [--out DIR]``: run the benchmarks, write
``<date>.json``, ``latest.json`` and ``latest.md`` under benchmarks/results/, print the tables."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import FULL, QUICK, RESULTS, machine, markdown, write_results

BENCHMARKS = ("overhead", "accuracy", "capacity", "loadgens", "analysis")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="shorter windows, fewer rounds")
    ap.add_argument("--only", action="append", choices=BENCHMARKS, help="run only these")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("benchmarks: need root (BPF, the testbed)", file=sys.stderr)
        return 77
    profile = QUICK if args.quick else FULL
    names = args.only or list(BENCHMARKS)
    doc: dict[str, Any] = {
        "kind": "smp-profiler/benchmarks",
        "profile": profile.name,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
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
    doc["seconds"] = round(time.monotonic() - t0, 1)
    doc["machine"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    for path in write_results(doc, args.out):
        print(f"wrote {path}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
