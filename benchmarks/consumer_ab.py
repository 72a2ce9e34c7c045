"""A/B of the user-space side per proxied request: this tree's engine and spans-file writer
against git ``REF``'s (default ``main``), on the same synthetic records, alternated.

    python -m benchmarks.consumer_ab [--base REF] [--rounds N] [--requests N]

Each round runs both in turn (which goes first alternates), each in a fresh child process
with its own ``profiler`` package on ``sys.path``: ``Engine._on_batch`` over batches of 1,500
requests (a sidecar's and its app's record each, request ids on both: what 100 ms hold at
15,000 req/s), the daemon's way (no spans kept) and the capture's (spans kept), then the
capture's spans file. CPU seconds (process time) per request; paired after/before ratios.
No root, no BPF: the records are the probe's own layout (bpf/sidecar.h).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BATCH = 1500

CHILD = r"""
import json, sys, time
from pathlib import Path
import numpy as np
sys.path.insert(0, sys.argv[1])
from benchmarks.analysis import _synthetic, _NoProbe, SIDECAR, APP
from profiler.capture import engine as engine_mod, document
from profiler.capture.engine import Engine
from profiler.probes.sidecar import SPAN_DTYPE, F_MATCH_RID, KIND_PROXY, KIND_SERVER
n, batch, out = int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
d = _synthetic(n)
ids = np.array([f"{i:08x}-aaaa-bbbb-cccc-{i:012x}".encode() for i in range(n)], dtype="S48")
def records(fields):
    a = np.zeros(n, dtype=SPAN_DTYPE)
    for k, v in fields.items():
        a[k] = v
    a["rid"] = ids.view("S1").reshape(n, 48)
    a["rid_len"] = 36
    return a
common = {"rid_hash": d["hash"], "flags": F_MATCH_RID, "req_bytes": 200, "resp_bytes": 128}
app = records({**common, "kind": KIND_SERVER, "tgid": APP, "tid": APP + 1,
               "ds_rx_beg": d["app_beg"], "ds_tx_end": d["app_end"], "ds_fd": 5, "us_fd": -1})
side = records({**common, "kind": KIND_PROXY, "tgid": SIDECAR, "tid": SIDECAR + 1,
                "ds_rx_beg": d["start"], "us_tx_beg": d["us_tx"] - 5000,
                "us_tx_end": d["us_tx"], "us_rx_beg": d["us_rx"], "ds_tx_end": d["ds_tx"],
                "ds_rx_arr": d["start"] - 3000, "us_rx_arr": d["us_rx"] - 2000,
                "ds_fd": 40, "us_fd": 41})
batches = [np.concatenate([side[i:i + batch], app[i:i + batch]]) for i in range(0, n, batch)]
res = {}
vars(engine_mod)["SidecarProbe"] = _NoProbe
for keep in (False, True, False, True):  # the first pass of each warms imports and caches
    e = Engine(keep_spans=keep, max_spans=n)
    e.add_target(SIDECAR, "sidecar")
    e.add_target(APP, "app")
    t0 = time.process_time()
    for b in batches:
        e._on_batch(b)
    res["capture_engine_us" if keep else "daemon_engine_us"] = (time.process_time() - t0) / n * 1e6
    assert e.targets[APP].legs["loopback"].count == n, "join lost requests"
rows = [("sidecar", c) for c in e.targets[SIDECAR].rows] + [("app", c) for c in e.targets[APP].rows]
t0 = time.process_time()
document.write_spans(out, rows)
res["spans_file_us"] = (time.process_time() - t0) / n * 1e6
print(json.dumps(res))
"""


def export(ref: str, into: Path) -> Path:
    tar = subprocess.run(
        ["git", "-C", str(ROOT), "archive", ref, "profiler", "bpf", "benchmarks"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        t.extractall(into, filter="data")
    return into


def one(tree: Path, n: int, tmp: Path) -> dict[str, float]:
    p = subprocess.run(
        [sys.executable, "-c", CHILD, str(tree), str(n), str(BATCH), str(tmp / "spans.csv")],
        capture_output=True,
        text=True,
        cwd=tmp,
        timeout=600,
    )
    if p.returncode != 0:
        raise RuntimeError(p.stderr.strip()[-400:])
    r: dict[str, float] = json.loads(p.stdout.strip().splitlines()[-1])
    return r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--base", default="main")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=150_000)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="smp-consumer-ab-") as tmp_s:
        tmp = Path(tmp_s)
        trees = {"before": export(a.base, tmp / "base"), "after": ROOT}
        out: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
        for r in range(a.rounds):
            for name in ("before", "after") if r % 2 == 0 else ("after", "before"):
                out[name].append(one(trees[name], a.requests, tmp))
                print(f"round {r} {name}: {out[name][-1]}", file=sys.stderr)
    print("| CPU per proxied request (us) | before | after | after/before (paired) |")
    print("|---|---|---|---|")
    for key in out["before"][0]:
        b = [w[key] for w in out["before"]]
        f = [w[key] for w in out["after"]]
        ratios = [y / x for x, y in zip(b, f, strict=True)]
        print(
            f"| {key} | {statistics.median(b):.2f} | {statistics.median(f):.2f} | "
            f"{statistics.median(ratios):.2f} [{min(ratios):.2f}..{max(ratios):.2f}] |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
