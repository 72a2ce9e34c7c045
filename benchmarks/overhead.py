"""1. What the profiler costs, goal by goal (issue 11), for each probe path and configuration,
measured side by side in one run against the testbed's 1-worker Envoy sidecar.

Variants, rotated round by round (round ``i`` starts with variant ``i mod n``):
  off                     no profiler
  capture/<path>          ``smp-profiler capture --sidecar-pid <envoy>`` writing its spans file
  daemon/<path>           ``smp-profiler daemon --no-kubernetes`` on the server pod (its Envoy and
                          app), at its default snapshot interval
and, asked for with ``SMP_BENCH_CONFIGS`` (e.g. ``daemon,daemon-nice0``), a daemon setting
side by side with the default (``daemon-nice0``: ``--nice 0``, the daemon at the sidecars'
priority); with ``<path>`` the probe path forced by ``SMP_PROBE_PATH``: ``sock`` (raw socket
tracepoints) and ``syscalls`` (syscall tracepoints, the probe before issue 11), each where the
node and the probe support it. The profiler runs as its own process, started for the variant's
window and stopped after it, as a user would run it.

Per variant window, in this order:
  node tax     (off, daemon) the C loop ``tax.c`` in a process nobody traces: ns per getppid(),
               read() of /dev/zero, unix socket write+read; best and median of 15 short
               repetitions (a neighbour's burst spoils a few, the best stays clean)
  saturation   (all) wrk -t1 -c16 for ``window_s``: req/s, Envoy's access-log lines vs the
               requests the profiler counted (completeness), CPU of Envoy and of the profiler
  fixed rate   (off, daemon) the built-in open-loop generator at a quarter of the maximum
               (measured by wrk at the start): p50/p99, CPU per request
After the rounds, per path, the per-hook costs: the daemon's engine in this process with
``kernel.bpf_stats_enabled`` on, at the fixed rate and during the C loop (runs and ns per run of
every BPF program).

Every "on" number is paired with the "off" window of the same round (ratio or difference) and
printed next to its goal with met / not met; the medians of the paired values decide.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import (
    Profile,
    build_c,
    fmt,
    med_range,
    poll_during,
    rotate,
    summary,
    table,
    testbed,
)

TAX_SOURCE = Path(__file__).resolve().parent / "tax.c"
CLI = [sys.executable, "-m", "profiler.cli"]
CONNECTIONS = 16  # wrk -t1 -c16, the saturation load
# the built-in generator's at the fixed rate: with 8, each connection (one request at a time)
# runs ~70% busy at a quarter of the maximum and queues in the generator (p99 x10 here)
OPEN_CONNECTIONS = 32
FIXED_FRACTION = 0.25  # of the maximum rate: the "a quarter of the maximum rate"
# The daemon's default, so its fixed costs per interval (the reconcile's /proc scan and the
# snapshot) weigh per request as they do on a node: idle on the testbed it used 10.5 ms of CPU
# a second at 1 s (the first runs' setting) and 4 ms at 5 s.
DAEMON_INTERVAL_S = 5.0
PATHS = ("sock", "syscalls")
CONFIGS = ("capture", "daemon")
# A daemon setting A/B'd side by side in the same run: SMP_BENCH_CONFIGS=daemon,daemon-nice0
# (a configuration name -> the daemon's extra arguments)
DAEMON_CONFIGS: dict[str, list[str]] = {
    "daemon": [],
    "daemon-nice0": ["--nice", "0"],
    "daemon-poll100": ["--poll-ms", "100"],  # the wait before it became 500 ms
}
TAX_CALLS = ("getppid", "read", "sockpair", "tcp")
TAX_REPS, TAX_SCALE = 15, 0.3  # repetitions of ~10-15 ms each per call, ~0.6 s in all
TAX_LABELS = {
    "getppid": "getppid()",
    "read": "read() of /dev/zero, 64 B",
    "sockpair": "unix socket write+read, 64 B",
    "tcp": "TCP loopback write+read, 64 B",
}
PAIRS = ("sockpair", "tcp")  # calls that are two system calls (a write and a read)


# -- goals ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Goal:
    """One target of issue 11: ``value`` meets it when >= target (higher_better) or <=."""

    label: str
    target: float
    unit: str
    higher_better: bool

    def met(self, value: float | None) -> bool | None:
        if value is None or math.isnan(value):
            return None
        return value >= self.target if self.higher_better else value <= self.target

    def verdict(self, value: float | None) -> str:
        m = self.met(value)
        return "n/a" if m is None else "met" if m else "NOT met"

    def text(self) -> str:
        op = ">=" if self.higher_better else "<="
        sign = "+" if self.unit in ("ns", "us added") else ""
        return f"{op} {sign}{self.target:g} {self.unit.replace(' added', '')}".strip()


GOALS = {
    "throughput_ratio": Goal("throughput ratio (median)", 0.97, "", True),
    "throughput_worst": Goal("throughput ratio (worst round)", 0.90, "", True),
    "cpu_us_per_req": Goal("profiler CPU per request", 5.0, "us", False),
    "tax_getppid": Goal("getppid added", 20.0, "ns", False),
    "tax_read": Goal("read added", 20.0, "ns", False),
    "tax_sockpair": Goal("socket pair added", 150.0, "ns", False),
    "tax_tcp": Goal("TCP loopback pair added", 150.0, "ns", False),
    "p50_added": Goal("p50 added", 10.0, "us added", False),
    "p99_added": Goal("p99 added", 50.0, "us added", False),
    "completeness": Goal("requests with a span", 0.995, "", True),
}


# -- pure helpers (unit-tested) ---------------------------------------------------------------
def paired(off: Sequence[float | None], on: Sequence[float | None], op: str) -> list[float]:
    """Per round: on / off (``ratio``) or on - off (``delta``); rounds missing either side or
    with off == 0 for a ratio are left out."""
    if len(off) != len(on):
        raise ValueError("off and on need the same number of rounds")
    out: list[float] = []
    for a, b in zip(off, on, strict=True):
        if a is None or b is None or (op == "ratio" and a == 0):
            continue
        out.append(b / a if op == "ratio" else b - a)
    return out


def parse_tax(text: str, only: str | None = None) -> dict[str, dict[str, Any]]:
    """tax.c's output -> {call: {"iters": n, "best": ns, "median": ns, "runs": [ns, ...]}}."""
    out: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0] in TAX_CALLS:
            vals = [float(x) for x in parts[2:]]
            out[parts[0]] = {
                "iters": int(parts[1]),
                "best": vals[0],
                "median": vals[1],
                "runs": vals[2:],
            }
    missing = [c for c in TAX_CALLS if c not in out and not (only and c != only)]
    if missing:
        raise ValueError(f"tax output lacks {', '.join(missing)}: {text[:200]!r}")
    return out


def parse_wrk(text: str) -> dict[str, float]:
    """wrk's summary -> {"rps": req/s, "requests": n, "errors": socket errors + non-2xx}."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    n = re.search(r"(\d+) requests in", text)
    if not rps or not n:
        raise ValueError(f"not wrk output: {text[:200]!r}")
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors += int(non2xx.group(1)) if non2xx else 0
    return {"rps": float(rps.group(1)), "requests": float(n.group(1)), "errors": float(errors)}


def tax_syscalls(call: dict[str, Any], name: str) -> int:
    """System calls one tax.c run made for a call: the warm-up (iters / 10 + 1) and every
    repetition; a socket pair is two (write and read)."""
    per = 2 if name in PAIRS else 1
    return per * (call["iters"] // 10 + 1 + call["iters"] * len(call["runs"]))


def count_lines(path: Path, offset: int) -> tuple[int, int]:
    """Complete lines appended to ``path`` after byte ``offset``: (lines, offset after the last
    complete line). A line still being written is not counted."""
    with path.open("rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    return data.count(b"\n", 0, end), offset + end


def choose_paths(switch: bool, sock: bool, detail: str) -> tuple[list[str], str]:
    """The probe paths to measure, and why one is missing: both where the probe has the
    ``SMP_PROBE_PATH`` switch and its fast-path feature probe passes; else the syscalls path
    (without the switch, the probe's only one)."""
    if not switch:
        return ["syscalls"], "the probe has no SMP_PROBE_PATH: its only path (syscall tracepoints)"
    if not sock:
        return ["syscalls"], f"no sock path on this node: {detail}"
    return list(PATHS), ""


def probe_paths() -> tuple[list[str], str]:
    """:func:`choose_paths` for this probe on this node (the probe's own feature probe)."""
    from profiler import capabilities

    check = getattr(capabilities, "check_sock_path", None)
    if check is None or not hasattr(capabilities, "PROBE_PATHS"):
        return choose_paths(False, False, "")
    bpf_class, detail = capabilities.import_bcc()
    if bpf_class is None:
        return choose_paths(True, False, detail)
    c = check(bpf_class)
    return choose_paths(True, c.ok, c.detail)


@contextlib.contextmanager
def probe_path_env(path: str | None) -> Iterator[None]:
    """``SMP_PROBE_PATH`` set for this process (the in-process engine), put back after."""
    old = os.environ.get("SMP_PROBE_PATH")
    if path is not None:
        os.environ["SMP_PROBE_PATH"] = path
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SMP_PROBE_PATH", None)
        else:
            os.environ["SMP_PROBE_PATH"] = old


# BPF program types that run on a node's events (kprobe, tracepoint, perf_event,
# raw_tracepoint, raw_tracepoint_writable, tracing): what another tracer adds to every window
TRACING_PROG_TYPES = {2, 5, 7, 17, 24, 26}


def foreign_tracers(exclude: set[int]) -> dict[int, int]:
    """pid -> tracing BPF programs it holds open, for every process but ``exclude`` (another
    profiler, a test suite: on a shared machine they tax the "off" windows too)."""
    out: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in exclude:
            continue
        n = 0
        try:
            for fd in (proc / "fd").iterdir():
                try:
                    if os.readlink(fd) != "anon_inode:bpf-prog":
                        continue
                    info = (proc / "fdinfo" / fd.name).read_text()
                except OSError:
                    continue
                m = re.search(r"^prog_type:\s*(\d+)", info, re.M)
                if m and int(m.group(1)) in TRACING_PROG_TYPES:
                    n += 1
        except OSError:
            continue
        if n:
            out[int(proc.name)] = n
    return out


def proc_cpu_s(pid: int) -> float:
    """Seconds on CPU of a process's live threads, from the scheduler's nanosecond account
    (/proc/<pid>/task/*/schedstat; /proc/<pid>/stat counts in 10 ms ticks, which is 1 us a
    request over a 2 s window at 5,000 req/s)."""
    from profiler.capture.engine import thread_runtime_ns

    return sum(thread_runtime_ns(pid).values()) / 1e9


# -- the profiler as a process ----------------------------------------------------------------
class ProfilerProc:
    """``smp-profiler capture`` or ``daemon`` in its own process, on the testbed's server pod.

    ``counted()`` is the profiler's own request count so far (the daemon's /metrics; the
    capture's only when it has stopped), ``stop()`` ends it and returns its total CPU (from
    wait4's rusage, so the capture's writing of its files after the window is included)."""

    def __init__(self, config: str, path: str, tb: Any, workdir: Path) -> None:
        self.config, self.path = config, path
        server = tb.state.server
        self.envoy = server.envoy_pid
        self.log = workdir / f"{config}-{path}.log"
        self.output = workdir / f"{config}-{path}.json"
        if config == "capture":
            argv = [*CLI, "capture", "--sidecar-pid", str(self.envoy), "--duration", "3600s"]
            argv += ["-o", str(self.output), "--quiet"]
        else:
            pod_cgroup = str(Path(server.cgroups["istio-proxy"]).parent)
            argv = [*CLI, "daemon", "--no-kubernetes", "--metrics-port", "0"]
            argv += ["--metrics-address", "127.0.0.1", "--interval", str(DAEMON_INTERVAL_S)]
            argv += ["--cgroup-root", pod_cgroup, *DAEMON_CONFIGS[config]]
        env = dict(os.environ, SMP_PROBE_PATH=path)
        with self.log.open("w") as err:
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env)
        self.pid = self.proc.pid
        self.url: str | None = None
        self.doc: dict[str, Any] | None = None
        self.started = time.monotonic()
        try:
            self._wait_attached(120.0)
        except BaseException:
            self.kill()
            raise
        self.attach_s = time.monotonic() - self.started

    def _fail(self, why: str) -> RuntimeError:
        tail = self.log.read_text().strip().splitlines()[-3:]
        return RuntimeError(f"{self.config}/{self.path}: {why}: {' | '.join(tail)}")

    def _wait_attached(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise self._fail(f"exited {self.proc.returncode} before attaching")
            if time.monotonic() > deadline:
                raise self._fail(f"not attached after {timeout:.0f} s")
            text = self.log.read_text()
            if self.config == "capture":
                if "attached to" in text:
                    return
            else:
                m = re.search(r"metrics on 127\.0\.0\.1:(\d+)", text)
                if m:
                    self.url = f"http://127.0.0.1:{m.group(1)}"
                    # attached once the first snapshot lists the sidecar
                    if self._metric("smp_sidecar_requests_total") is not None:
                        return
            time.sleep(0.1)

    def _metric(self, name: str) -> float | None:
        from prometheus_client.parser import text_string_to_metric_families

        assert self.url is not None
        try:
            with urllib.request.urlopen(self.url + "/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return None
        total = None
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name == name and s.labels.get("container", "envoy") == "envoy":
                    total = (total or 0.0) + s.value
        return total

    def counted(self) -> tuple[float | None, float | None]:
        """(requests, drops) the profiler has reported so far (daemon only; else Nones)."""
        if self.config == "capture":
            return None, None
        return self._metric("smp_sidecar_requests_total"), self._metric(
            "smp_probe_events_dropped_total"
        )

    def settle(self, quiet_s: float) -> tuple[float | None, float | None]:
        """The daemon's count once it has stopped moving for ``quiet_s`` (a snapshot interval
        and a half), at most 15 s."""
        if self.config == "capture":
            return None, None
        deadline = time.monotonic() + 15.0
        last, since = self.counted(), time.monotonic()
        while time.monotonic() - since < quiet_s and time.monotonic() < deadline:
            time.sleep(0.25)
            now = self.counted()
            if now != last:
                last, since = now, time.monotonic()
        return last

    def cpu_s(self) -> float:
        """The profiler process's CPU so far as wait4 will count it at the end: all its
        threads, exited ones included (the capture compiles in a start-up thread), and its
        reaped children (/proc/<pid>/stat utime + stime + cutime + cstime, 10 ms ticks)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> float:
        """Stop (capture: SIGINT, which writes its files; daemon: SIGTERM) and return the
        process's total CPU seconds."""
        self.proc.send_signal(signal.SIGINT if self.config == "capture" else signal.SIGTERM)
        deadline = time.monotonic() + 90
        while True:
            pid, status, ru = os.wait4(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                self.kill()
                raise self._fail("did not exit within 90 s of the signal")
            time.sleep(0.05)
        if self.config == "capture":
            if not self.output.is_file():
                raise self._fail(f"exited {self.proc.returncode} without writing its capture")
            self.doc = json.loads(self.output.read_text())
        elif self.proc.returncode != 0:
            raise self._fail(f"exited {self.proc.returncode}")
        return float(ru.ru_utime + ru.ru_stime)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.wait(10)


# -- one window of each kind ------------------------------------------------------------------
class Bench:
    """The testbed, the C loop and the loads; one ``variant()`` call is one variant's window."""

    def __init__(self, tb: Any, profile: Profile, workdir: Path) -> None:
        self.tb, self.profile, self.workdir = tb, profile, workdir
        self.envoy = tb.state.server.envoy_pid
        self.access_log = Path(tb.state.access_log)
        self.tax_exe = build_c(TAX_SOURCE, workdir)
        self.rate = 0.0

    # loads
    def wrk(self, seconds: float) -> dict[str, float]:
        from profiler.loadgen.common import netns_prefix

        argv = [*netns_prefix(self.tb.state.client.netns), "wrk", "-t1", f"-c{CONNECTIONS}"]
        argv += [f"-d{max(1, math.ceil(seconds))}s", "--timeout=5s", self.tb.state.url]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
        if p.returncode != 0:
            raise RuntimeError(f"wrk failed: {(p.stderr or p.stdout).strip()[-200:]}")
        return parse_wrk(p.stdout)

    def fixed(self) -> Any:
        from profiler.loadgen import LoadSpec, run_load

        st = self.tb.state
        spec = LoadSpec(
            "builtin",
            st.url,
            self.rate,
            self.profile.window_s,
            OPEN_CONNECTIONS,
            warmup_s=0.3,
            netns=st.client.netns,
        )
        return run_load(spec)

    def tax(self, scale: float = TAX_SCALE, only: str | None = None) -> dict[str, dict[str, Any]]:
        p = subprocess.run(
            [str(self.tax_exe), str(TAX_REPS), f"{scale:g}", *([only] if only else [])],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if p.returncode != 0:
            raise RuntimeError(f"tax loop failed: {p.stderr.strip()[-200:]}")
        return parse_tax(p.stdout, only)

    def access_lines_settled(self, offset: int) -> tuple[int, int]:
        """Access-log lines since ``offset`` once Envoy has flushed them all (its file flush
        is every 200 ms: no growth for 0.6 s)."""
        total, last_change = 0, time.monotonic()
        deadline = last_change + 10
        while time.monotonic() - last_change < 0.6 and time.monotonic() < deadline:
            time.sleep(0.15)
            n, offset = count_lines(self.access_log, offset)
            if n:
                total += n
                last_change = time.monotonic()
        return total, offset

    # one variant's window
    def variant(self, name: str) -> dict[str, Any]:
        config, _, path = name.partition("/")
        prof = ProfilerProc(config, path, self.tb, self.workdir) if config != "off" else None
        out: dict[str, Any] = {"variant": name}
        mine = {os.getpid()} | ({prof.pid} if prof else set())
        foreign = foreign_tracers(mine)
        try:
            if prof is not None:
                out["attach_s"] = round(prof.attach_s, 1)
            if config != "capture":
                out["tax"] = self.tax()
            out["sat"] = self._saturation(prof)
            if config != "capture":
                out["fixed"] = self._fixed(prof)
        except BaseException:
            if prof is not None:
                prof.kill()
            raise
        for pid, n in foreign_tracers(mine).items():
            foreign[pid] = max(n, foreign.get(pid, 0))
        out["foreign_tracers"] = len(foreign)
        out["foreign_programs"] = sum(foreign.values())
        if prof is not None:
            cpu0 = out["sat"]["prof_cpu0"]
            total = prof.stop()
            if prof.doc is not None:  # the capture: its own count, drops and method
                doc = prof.doc
                out["sat"]["counted"] = sum(s["requests"] for s in doc["sidecars"])
                out["sat"]["drops"] = doc["drops"]
                out["sat"]["incomplete"] = sum(
                    s.get("incomplete_spans", 0) for s in doc["sidecars"]
                )
                out["method"] = doc.get("method")
                out["probe_path"] = doc.get("probe_path")
                out["sat"]["prof_cpu_total_s"] = total - cpu0  # incl. writing its files
        return out

    def _saturation(self, prof: ProfilerProc | None) -> dict[str, Any]:
        _, off = count_lines(self.access_log, 0)
        c0, d0 = prof.settle(0.0) if prof else (None, None)
        e0, p0 = proc_cpu_s(self.envoy), prof.cpu_s() if prof else 0.0
        w = self.wrk(self.profile.window_s)
        e1, p1 = proc_cpu_s(self.envoy), prof.cpu_s() if prof else 0.0
        envoy_n, _ = self.access_lines_settled(off)
        c1, d1 = prof.settle(DAEMON_INTERVAL_S * 1.6) if prof else (None, None)
        return {
            **w,
            "envoy_requests": envoy_n,
            "envoy_cpu_s": e1 - e0,
            "prof_cpu_s": p1 - p0,
            "prof_cpu0": p0,
            "counted": None if c0 is None or c1 is None else c1 - c0,
            "drops": None if d0 is None or d1 is None else d1 - d0,
        }

    def _fixed(self, prof: ProfilerProc | None) -> dict[str, Any]:
        _, off = count_lines(self.access_log, 0)
        c0, _ = prof.settle(0.0) if prof else (None, None)
        e0, p0 = proc_cpu_s(self.envoy), prof.cpu_s() if prof else 0.0
        r = self.fixed()
        e1, p1 = proc_cpu_s(self.envoy), prof.cpu_s() if prof else 0.0
        envoy_n, _ = self.access_lines_settled(off)
        c1, _ = prof.settle(DAEMON_INTERVAL_S * 1.6) if prof else (None, None)
        return {
            "rate": r.rate_achieved,
            "requests": r.requests,
            "p50_us": float(r.percentiles_ms[50.0]) * 1000.0,
            "p99_us": float(r.percentiles_ms[99.0]) * 1000.0,
            "envoy_requests": envoy_n,
            "envoy_cpu_s": e1 - e0,
            "prof_cpu_s": p1 - p0,
            "counted": None if c0 is None or c1 is None else c1 - c0,
        }

    # per-hook costs: the engine in this process, bpf_stats on
    def hooks(self, path: str) -> dict[str, Any]:
        from profiler.capture.engine import Engine
        from profiler.probes import loader

        with probe_path_env(path):
            engine = Engine(ringbuf_pages=256, keep_spans=False)
        try:
            engine.add_target(self.envoy, "sidecar", {"pod": "server"})
            bpf = _bpf_of(engine)
            with loader.bpf_stats_enabled() as on:
                if not on:
                    return {"error": "kernel.bpf_stats_enabled cannot be set"}
                s0 = loader.prog_stats(bpf)
                r, _ = poll_during(lambda: engine.poll(100), self.fixed)
                s1 = loader.prog_stats(bpf)
                tax = self.tax()
                s2 = loader.prog_stats(bpf)
                per_call = {}
                for call in TAX_CALLS:  # each call alone: BPF runs and ns per untraced call
                    a = loader.prog_stats(bpf)
                    one = self.tax(only=call)[call]
                    b = loader.prog_stats(bpf)
                    n = tax_syscalls(one, call) // (2 if call in PAIRS else 1)
                    per_call[call] = {
                        "calls": n,
                        "bpf_runs_per_call": sum(b[k][0] - a[k][0] for k in b) / n,
                        "bpf_ns_per_call": sum(b[k][1] - a[k][1] for k in b) / n,
                    }
            engine.drain()
            traced = engine.targets[self.envoy].requests
        finally:
            engine.close()
        calls = sum(tax_syscalls(tax[c], c) for c in TAX_CALLS)
        progs = {}
        for k in s1:
            runs, ns = s1[k][0] - s0[k][0], s1[k][1] - s0[k][1]
            t_runs, t_ns = s2[k][0] - s1[k][0], s2[k][1] - s1[k][1]
            progs[k] = {
                "runs_per_req": runs / max(traced, 1),
                "ns_per_run": ns / runs if runs else None,
                "ns_per_req": ns / max(traced, 1),
                "tax_runs": t_runs,
                "tax_ns_per_run": t_ns / t_runs if t_runs else None,
            }
        return {
            "traced": traced,
            "sent": r.requests,
            "rate": r.rate_achieved,
            "tax_syscalls": calls,
            "programs": progs,
            "per_call": per_call,
        }


def _bpf_of(engine: Any) -> Any:
    """The BCC object under the engine (for prog_stats)."""
    probe = engine._probe
    for attr in ("_bpf", "bpf"):
        if hasattr(probe, attr):
            return getattr(probe, attr)
    raise RuntimeError("cannot find the probe's BPF object for bpf_stats")


# -- the run --------------------------------------------------------------------------------
def variants(paths: Sequence[str], configs: Sequence[str] = CONFIGS) -> list[str]:
    return ["off"] + [f"{c}/{p}" for p in paths for c in configs]


def run(profile: Profile) -> dict[str, Any]:
    env_paths = os.environ.get("SMP_BENCH_PATHS")
    paths, why = probe_paths()
    if env_paths:
        paths = [p for p in env_paths.split(",") if p in paths]
    configs = os.environ.get("SMP_BENCH_CONFIGS", ",".join(CONFIGS)).split(",")
    unknown = [c for c in configs if c != "capture" and c not in DAEMON_CONFIGS]
    if unknown:
        raise SystemExit(f"SMP_BENCH_CONFIGS: unknown configuration {unknown[0]!r}")
    names = variants(paths, configs)
    load0 = [round(x, 2) for x in os.getloadavg()]
    with (
        tempfile.TemporaryDirectory(prefix="smp-overhead-") as tmp,
        testbed("bo") as tb,
    ):
        bench = Bench(tb, profile, Path(tmp))
        bench.wrk(1.0)  # warm
        calib = bench.wrk(profile.window_s)
        bench.rate = round(FIXED_FRACTION * calib["rps"], -1)
        rounds = rotate(profile.rounds, [lambda n=n: bench.variant(n) for n in names])
        hooks = {p: bench.hooks(p) for p in paths}
    res = report(profile, names, rounds, hooks, calib["rps"], bench.rate)
    res["windows"] = dict(zip(names, rounds, strict=True))  # every window's raw numbers
    res["summary"]["paths"] = paths
    res["summary"]["paths_note"] = why
    res["summary"]["load_avg_start"] = load0
    res["summary"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    return res


# -- the report -------------------------------------------------------------------------------
def _sat(w: dict[str, Any], key: str) -> float | None:
    v = w["sat"].get(key)
    return None if v is None else float(v)


def _fixed(w: dict[str, Any], key: str) -> float | None:
    f = w.get("fixed")
    return None if f is None or f.get(key) is None else float(f[key])


def _fixeds(ws: Sequence[dict[str, Any]], key: str) -> list[float | None]:
    return [_fixed(w, key) for w in ws]


def _cpu_per_req(part: dict[str, Any], prof_key: str = "prof_cpu_s") -> tuple[float, float]:
    """(Envoy us/request, profiler us/request) of one window, per Envoy access-log request."""
    n = max(part["envoy_requests"], 1)
    return part["envoy_cpu_s"] * 1e6 / n, part.get(prof_key, 0.0) * 1e6 / n


def node_cpu_added(off: dict[str, Any], on: dict[str, Any], prof_key: str = "prof_cpu_s") -> float:
    """Envoy's + the profiler's CPU per request with the profiler minus Envoy's without (us)."""
    e_off, _ = _cpu_per_req(off)
    e_on, p_on = _cpu_per_req(on, prof_key)
    return e_on + p_on - e_off


def completeness(w: dict[str, Any]) -> float | None:
    c, n = w["sat"].get("counted"), w["sat"]["envoy_requests"]
    return None if c is None or not n else c / n


def report(
    profile: Profile,
    names: Sequence[str],
    rounds: list[list[dict[str, Any]]],
    hooks: dict[str, dict[str, Any]],
    max_rps: float,
    rate: float,
) -> dict[str, Any]:
    by = dict(zip(names, rounds, strict=True))
    off = by["off"]
    summ: dict[str, Any] = {
        "rounds": profile.rounds,
        "window_s": profile.window_s,
        "max_rps_calibration": max_rps,
        "fixed_rate": rate,
        "off": {
            "rps": summary([_sat(w, "rps") or 0.0 for w in off]),
            "p50_us": summary([_fixed(w, "p50_us") or 0.0 for w in off]),
            "p99_us": summary([_fixed(w, "p99_us") or 0.0 for w in off]),
        },
        "variants": {},
    }
    windows = [w for r in rounds for w in r]
    dirty = [w for w in windows if w.get("foreign_tracers")]
    summ["windows_with_foreign_tracers"] = len(dirty)
    summ["windows"] = len(windows)
    summ["foreign_tracers_max"] = max((w.get("foreign_tracers", 0) for w in windows), default=0)
    summ["off_windows_with_foreign_tracers"] = sum(1 for w in off if w.get("foreign_tracers"))
    goal_rows: list[list[Any]] = []
    detail_rows: list[list[Any]] = []
    for name in names[1:]:
        on = by[name]
        config = name.split("/")[0]
        ratios = paired([_sat(w, "rps") for w in off], [_sat(w, "rps") for w in on], "ratio")
        thr = summary(ratios)
        comp = summary([c for c in (completeness(w) for w in on) if c is not None])
        drops = sum(int(w["sat"].get("drops") or 0) for w in on)
        incomplete = sum(int(w["sat"].get("incomplete") or 0) for w in on)
        inc = f", {incomplete} incomplete" if config == "capture" else ""
        prof_key = "prof_cpu_total_s" if config == "capture" else "prof_cpu_s"
        pairs = list(zip(off, on, strict=True))
        cpu_sat = summary([node_cpu_added(a["sat"], b["sat"], prof_key) for a, b in pairs])
        v: dict[str, Any] = {
            "throughput_ratio": thr,
            "completeness": comp,
            "drops": drops,
            "incomplete": incomplete,
            "cpu_us_per_req_saturation": cpu_sat,
            "profiler_us_per_req_saturation": summary(
                [_cpu_per_req(b["sat"], prof_key)[1] for b in on]
            ),
            "attach_s": summary([w.get("attach_s", 0.0) for w in on]),
            "method": sorted({str(w.get("method")) for w in on if w.get("method")}),
            "probe_path": sorted({str(w.get("probe_path")) for w in on if w.get("probe_path")}),
        }
        worst = thr["min"]
        rows: list[tuple[str, float | None, str, dict[str, Any] | None]] = [
            ("throughput_ratio", thr["median"], med_range(thr), thr),
            ("throughput_worst", worst, fmt(worst), None),
            ("completeness", comp["median"], f"{_pct_range(comp)}, {drops} dropped{inc}", comp),
        ]
        if config == "capture":
            rows.append(
                (
                    "cpu_us_per_req",
                    cpu_sat["median"],
                    f"{signed(cpu_sat)} us at saturation, incl. writing the spans file",
                    cpu_sat,
                )
            )
        else:
            cpu_fixed = summary(
                [node_cpu_added(a["fixed"], b["fixed"]) for a, b in zip(off, on, strict=True)]
            )
            d50 = summary(paired(_fixeds(off, "p50_us"), _fixeds(on, "p50_us"), "delta"))
            d99 = summary(paired(_fixeds(off, "p99_us"), _fixeds(on, "p99_us"), "delta"))
            v["cpu_us_per_req_fixed"] = cpu_fixed
            v["profiler_us_per_req_fixed"] = summary([_cpu_per_req(b["fixed"])[1] for b in on])
            v["p50_added_us"], v["p99_added_us"] = d50, d99
            v["p50_us_on"] = summary([_fixed(w, "p50_us") or 0.0 for w in on])
            v["p99_us_on"] = summary([_fixed(w, "p99_us") or 0.0 for w in on])
            cores = None if cpu_fixed["median"] is None else cpu_fixed["median"] / 1000.0
            rows.append(
                (
                    "cpu_us_per_req",
                    cpu_fixed["median"],
                    f"{signed(cpu_fixed)} us at {rate:.0f} req/s "
                    f"({fmt(cores)} cores per 1,000 req/s); at saturation {signed(cpu_sat)}",
                    cpu_fixed,
                )
            )
            rows.append(("p50_added", d50["median"], f"{signed(d50)} us at {rate:.0f} req/s", d50))
            rows.append(("p99_added", d99["median"], f"{signed(d99)} us", d99))
            for call in TAX_CALLS:
                best = summary(
                    paired(
                        [w["tax"][call]["best"] for w in off],
                        [w["tax"][call]["best"] for w in on],
                        "delta",
                    )
                )
                med = summary(
                    paired(
                        [w["tax"][call]["median"] for w in off],
                        [w["tax"][call]["median"] for w in on],
                        "delta",
                    )
                )
                v[f"tax_{call}_best"], v[f"tax_{call}_median"] = best, med
                rows.append(
                    (
                        f"tax_{call}",
                        best["median"],
                        f"best {signed(best)} ns; median {signed(med)} ns (of {TAX_REPS})",
                        best,
                    )
                )
        verdicts = {}
        for key, value, shown, spread in rows:
            g = GOALS[key]
            verdicts[key] = g.met(value)
            goal_rows.append([name, g.label, shown, g.text(), judge(g, value, spread)])
        v["goals_met"] = verdicts
        summ["variants"][name] = v
        detail_rows.append(
            [
                name,
                med_range(summary([_sat(w, "rps") or 0.0 for w in on])),
                med_range(v["profiler_us_per_req_saturation"]),
                med_range(v["attach_s"]),
                _path_shown(v["probe_path"], name.split("/")[1]),
                ", ".join(v["method"]) or "-",
            ]
        )
    daemons = [n for n in names if n.startswith("daemon")]
    tax_rows = [
        [
            TAX_LABELS[c],
            med_range(summary([w["tax"][c]["best"] for w in off])),
            *[
                signed(summ["variants"][n][f"tax_{c}_best"])
                for n in names
                if n.startswith("daemon")
            ],
            GOALS[f"tax_{c}"].text(),
        ]
        for c in TAX_CALLS
    ]
    hook_rows = []
    hook_summ: dict[str, Any] = {}
    for path, h in hooks.items():
        if "error" in h:
            hook_rows.append([path, h["error"], "", "", "", ""])
            continue
        progs = h["programs"]
        total_req = sum(p["ns_per_req"] for p in progs.values())
        runs_req = sum(p["runs_per_req"] for p in progs.values())
        tax_ns = sum((p["tax_ns_per_run"] or 0) * p["tax_runs"] for p in progs.values())
        tax_runs = sum(p["tax_runs"] for p in progs.values())
        hook_summ[path] = {
            "bpf_ns_per_req": total_req,
            "bpf_runs_per_req": runs_req,
            "tax_bpf_ns_per_untraced_syscall": tax_ns / max(h["tax_syscalls"], 1),
            "tax_bpf_runs_per_untraced_syscall": tax_runs / max(h["tax_syscalls"], 1),
            "programs": progs,
            "traced_of_sent": h["traced"] / max(h["sent"], 1),
            "per_call": h.get("per_call", {}),
        }
        for k, p in sorted(progs.items(), key=lambda kv: -kv[1]["ns_per_req"]):
            if not p["runs_per_req"] and not p["tax_runs"]:
                continue
            hook_rows.append(
                [
                    path,
                    k,
                    round(p["runs_per_req"], 2),
                    p["ns_per_run"],
                    round(p["ns_per_req"]),
                    p["tax_ns_per_run"],
                ]
            )
        hook_rows.append(
            [
                path,
                "all programs",
                round(runs_req, 1),
                total_req / runs_req if runs_req else None,
                round(total_req),
                tax_ns / tax_runs if tax_runs else None,
            ]
        )
    summ["hooks"] = hook_summ
    off_s = summ["off"]
    return {
        "summary": summ,
        "tables": [
            table(
                f"Issue 11 goals: profiler on vs off, {profile.rounds} rotated rounds of "
                f"{profile.window_s:g} s, paired with the round's off window (median "
                f"[min..max]); off: {med_range(off_s['rps'])} req/s at saturation (wrk -t1 "
                f"-c16), p50 {med_range(off_s['p50_us'])} us, p99 {med_range(off_s['p99_us'])} "
                f"us at {rate:.0f} req/s; another process had tracing BPF programs loaded in "
                f"{len(dirty)} of {len(windows)} windows (up to {summ['foreign_tracers_max']} "
                "processes), off windows included",
                ["variant", "goal", "measured (paired)", "target", "verdict"],
                goal_rows,
            ),
            table(
                "Node tax: ns per call in a process the profiler does not trace, best of "
                f"{TAX_REPS} (off: absolute; on: paired difference, median [min..max] of rounds)",
                ["call", "off (ns)", *[f"{n} added" for n in daemons], "target"],
                tax_rows,
            ),
            table(
                "Per variant: throughput, the profiler process's own CPU per request at "
                "saturation, time to attach, the probe path and method the capture reported",
                ["variant", "req/s on", "profiler us/req", "attach s", "probe path", "method"],
                detail_rows,
            ),
            table(
                f"Per-hook costs (bpf_stats): BPF programs per proxied request at {rate:.0f} "
                "req/s, and ns per run on the C loop's untraced syscalls",
                ["path", "program", "runs/req", "ns/run", "ns/req", "ns/run untraced"],
                hook_rows,
            ),
            table(
                "Node tax by the kernel's own count (bpf_stats, each call of the C loop alone): "
                "BPF program runs and ns in them per untraced call; a lower bound (the "
                "tracepoint's dispatch is not in run_time_ns; other processes' calls in the "
                "same moments are in it)",
                ["call", *[f"{p}: runs/call" for p in hooks], *[f"{p}: ns/call" for p in hooks]],
                [
                    [
                        TAX_LABELS[c],
                        *[_per_call(hooks[p], c, "bpf_runs_per_call") for p in hooks],
                        *[_per_call(hooks[p], c, "bpf_ns_per_call") for p in hooks],
                    ]
                    for c in TAX_CALLS
                ],
            ),
        ],
    }


def _per_call(h: dict[str, Any], call: str, key: str) -> float | None:
    v = h.get("per_call", {}).get(call, {}).get(key)
    return None if v is None else round(float(v), 2)


def signed(s: dict[str, Any]) -> str:
    """``median [min..max]`` of a difference, every number with its sign."""
    if s["median"] is None:
        return "-"

    def sg(x: float) -> str:
        return ("+" if x >= 0 else "") + fmt(float(x))

    return f"{sg(s['median'])} [{sg(s['min'])}..{sg(s['max'])}]"


def judge(goal: Goal, value: float | None, rounds: dict[str, Any] | None = None) -> str:
    """met / NOT met by ``value`` (the median of the paired rounds), and whether the rounds
    themselves fell on both sides of the target (then the noise is as large as the goal)."""
    verdict = goal.verdict(value)
    lo, hi = (rounds or {}).get("min"), (rounds or {}).get("max")
    if lo is not None and hi is not None and goal.met(lo) != goal.met(hi):
        verdict += " (rounds on both sides)"
    return verdict


def _path_shown(reported: list[str], asked: str) -> str:
    """The path the capture reported; flagged when it is not the one asked for."""
    if not reported:
        return "-"
    text = ", ".join(reported)
    return text if reported == [asked] else f"{text} (asked for {asked}!)"


def _pct_range(s: dict[str, Any]) -> str:
    if s["median"] is None:
        return "-"
    return f"{s['median'] * 100:.2f}% [{s['min'] * 100:.2f}..{s['max'] * 100:.2f}%]"
