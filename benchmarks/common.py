"""What the benchmarks share: the run profile, A/B alternation, summaries, the testbed, CPU
and memory readers, the machine's description, and the result files.

Every benchmark module has ``run(profile) -> dict`` returning ``{"summary": {...}, "tables":
[Table, ...]}`` as plain JSON; ``__main__`` writes them all into one document.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Profile:
    """How long and how often: ``full`` for ``make bench``, ``quick`` for a fast check."""

    name: str
    rounds: int  # A/B rounds (each round runs A and B once, order alternating)
    window_s: float  # one measured window of the overhead benchmark
    step_s: float  # one rate step of the accuracy sweep
    sweep_points: int  # rate steps per accuracy variant (100 .. near max)
    capacity_s: float  # one capacity window
    analysis_spans: int  # spans for the analysis-speed benchmark


FULL = Profile(
    "full",
    rounds=5,
    window_s=4.0,
    step_s=3.0,
    sweep_points=4,
    capacity_s=2.0,
    analysis_spans=1_000_000,
)
QUICK = Profile(
    "quick",
    rounds=3,
    window_s=2.0,
    step_s=1.5,
    sweep_points=2,
    capacity_s=1.0,
    analysis_spans=200_000,
)


# -- statistics ---------------------------------------------------------------------------
def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and relative spread ((max - min) / |median|) of repeated runs."""
    if not values:
        return {"n": 0, "median": None, "min": None, "max": None, "spread": None}
    med = statistics.median(values)
    lo, hi = min(values), max(values)
    spread = (hi - lo) / abs(med) if med else None
    return {
        "n": len(values),
        "median": round(med, 6),
        "min": round(lo, 6),
        "max": round(hi, 6),
        "spread": None if spread is None else round(spread, 4),
    }


def paired_ratios(a: Sequence[float], b: Sequence[float]) -> list[float]:
    """b_i / a_i for each round (rounds where a_i is 0 are left out)."""
    if len(a) != len(b):
        raise ValueError("A and B need the same number of rounds")
    return [y / x for x, y in zip(a, b, strict=True) if x]


def paired_deltas(a: Sequence[float], b: Sequence[float]) -> list[float]:
    if len(a) != len(b):
        raise ValueError("A and B need the same number of rounds")
    return [y - x for x, y in zip(a, b, strict=True)]


def alternate(
    rounds: int, run_a: Callable[[], T], run_b: Callable[[], T]
) -> tuple[list[T], list[T]]:
    """A and B ``rounds`` times each, in the order AB, BA, AB, ... so that a slow drift of the
    machine falls on both equally; returns (A results, B results) in round order."""
    a_out: list[T] = []
    b_out: list[T] = []
    for i in range(rounds):
        if i % 2 == 0:
            a_out.append(run_a())
            b_out.append(run_b())
        else:
            b_out.append(run_b())
            a_out.append(run_a())
    return a_out, b_out


def rotate(rounds: int, fns: Sequence[Callable[[], T]]) -> list[list[T]]:
    """Like :func:`alternate` for any number of variants: round ``i`` starts with variant
    ``i mod n``; returns one list of results per variant, in round order."""
    out: list[list[T]] = [[] for _ in fns]
    for i in range(rounds):
        for k in range(len(fns)):
            j = (i + k) % len(fns)
            out[j].append(fns[j]())
    return out


# -- tables ---------------------------------------------------------------------------------
def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
    return {"title": title, "columns": list(columns), "rows": [list(r) for r in rows]}


def fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        if x != 0 and abs(x) < 0.01:
            return f"{x:.2e}"
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        return f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def markdown(tables: Sequence[dict[str, Any]]) -> str:
    out: list[str] = []
    for t in tables:
        out.append(f"### {t['title']}\n")
        out.append("| " + " | ".join(t["columns"]) + " |")
        out.append("|" + "---|" * len(t["columns"]))
        for row in t["rows"]:
            out.append("| " + " | ".join(fmt(c) for c in row) + " |")
        out.append("")
    return "\n".join(out)


def med_range(s: dict[str, Any], scale: float = 1.0) -> str:
    """``median [min..max]`` of a :func:`summary`, scaled."""
    if s["median"] is None:
        return "-"
    return f"{fmt(s['median'] * scale)} [{fmt(s['min'] * scale)}..{fmt(s['max'] * scale)}]"


# -- processes ------------------------------------------------------------------------------


def rss_bytes(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def poll_during(poll: Callable[[], None], fn: Callable[[], T]) -> tuple[T, float]:
    """Run ``fn`` in a thread while this thread calls ``poll()`` (the profiler's consumer);
    returns fn's result and the CPU seconds this (polling) thread used, user + system."""
    box: dict[str, Any] = {}

    def drive() -> None:
        try:
            box["result"] = fn()
        except BaseException as e:  # re-raised here
            box["error"] = e

    worker = threading.Thread(target=drive, name="bench-load", daemon=True)
    cpu0 = time.thread_time()
    worker.start()
    while worker.is_alive():
        poll()
    poll()
    cpu = time.thread_time() - cpu0
    worker.join()
    if "error" in box:
        raise box["error"]
    result: T = box["result"]
    return result, cpu


def build_c(source: Path, out_dir: Path) -> Path:
    """Compile a benchmark's C program (gcc -O2) into ``out_dir``; its name without ``.c``."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise RuntimeError("no C compiler (apt-get install gcc; scripts/setup.sh installs it)")
    exe = out_dir / source.stem
    p = subprocess.run([cc, "-O2", "-Wall", "-o", str(exe), str(source)], capture_output=True)
    if p.returncode != 0:
        raise RuntimeError(f"gcc {source.name}: {p.stderr.decode(errors='replace')[-300:]}")
    return exe


# -- priority ------------------------------------------------------------------------------
# The niceness the benchmark gives itself and the testbed's pods (set by __main__; 0: leave).
# With the scheduler's autogroups (kernel.sched_autogroup_enabled) a nice value counts only
# inside a session's group: the benchmark sets its session's group nice (put back after the
# run) and the pods' processes' (each pod process has a session of its own).
NICE = 0


def prioritize(pid: int | str, nice: int) -> bool:
    """Give ``pid`` (every thread) and its autogroup ``nice``; False when it could not."""
    ok = True
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/autogroup").write_text(f"{nice}\n")
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in tids:
        try:
            os.setpriority(os.PRIO_PROCESS, int(tid), nice)
        except OSError:
            ok = False
    return ok


def autogroup_nice(pid: int | str = "self") -> int | None:
    """The nice value of ``pid``'s autogroup (None without autogroups)."""
    try:
        return int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


# -- the testbed ----------------------------------------------------------------------------
@contextlib.contextmanager
def testbed(prefix: str, **options: Any) -> Iterator[Any]:
    """A running testbed with a fresh name (``<prefix><hex>``) and a derived subnet, state in
    a temporary directory; torn down on exit, also on failure."""
    from profiler.errors import TestbedError
    from profiler.testbed import Testbed, TestbedConfig, teardown

    tmp = Path(tempfile.mkdtemp(prefix="smp-bench-"))
    names: list[str] = []
    tb = None
    try:
        for attempt in range(3):
            name = f"{prefix}{secrets.token_hex(3)}"
            names.append(name)
            try:
                tb = Testbed.up(TestbedConfig(name=name, state_dir=tmp / name, **options))
                for pod in (tb.state.server, tb.state.client):
                    for pid in (pod.app_pid, pod.envoy_pid):
                        if pid is not None and NICE:
                            prioritize(pid, NICE)
                break
            except TestbedError as e:  # the derived subnet is taken: another name
                if "subnet" not in str(e) or attempt == 2:
                    raise
        yield tb
    finally:
        if tb is not None:
            with contextlib.suppress(Exception):
                tb.down()
        for name in names:
            with contextlib.suppress(Exception):
                teardown(name)
        shutil.rmtree(tmp, ignore_errors=True)


# -- the machine and the files --------------------------------------------------------------
def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    lscpu = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    keep = (
        "Architecture",
        "CPU(s)",
        "Model name",
        "Thread(s) per core",
        "Hypervisor vendor",
        "L3 cache",
        "CPU MHz",
        "BogoMIPS",
    )
    info = {
        k.strip(): v.strip()
        for k, _, v in (ln.partition(":") for ln in lscpu.splitlines())
        if k.strip() in keep
    }
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "lscpu": info,
    }


def write_results(doc: dict[str, Any], out_dir: Path = RESULTS) -> list[Path]:
    """``<date>.json``, ``latest.json`` and ``latest.md`` under ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = doc["started"].replace(":", "").replace("-", "")[:15]
    text = json.dumps(doc, indent=2, sort_keys=False) + "\n"
    dated, latest, md = out_dir / f"{stamp}.json", out_dir / "latest.json", out_dir / "latest.md"
    dated.write_text(text)
    latest.write_text(text)
    md.write_text(render_markdown(doc))
    return [dated, latest, md]


def render_markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    head = [
        f"# smp-profiler benchmarks ({doc['profile']} run, {doc['started']})",
        "",
        f"Machine: {m['cpus']} CPUs, {m['cpu_model']}, kernel {m['kernel']}, "
        f"load average at start {m['load_avg']}, at end {m.get('load_avg_end', '-')}; "
        f"benchmark processes at nice {m.get('nice', 0)}. Total {doc['seconds']:.0f} s.",
        "",
    ]
    body = []
    for name, res in doc["benchmarks"].items():
        body.append(f"## {name} ({res.get('seconds', 0):.0f} s)\n")
        if "error" in res:
            body.append(f"failed: {res['error']}\n")
            continue
        body.append(markdown(res.get("tables", [])))
    return "\n".join(head + body)
