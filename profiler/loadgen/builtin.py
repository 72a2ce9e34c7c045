"""The built-in open-loop HTTP/1.1 load generator: processes of :mod:`profiler.loadgen.worker`.

Each worker process gets an interleaved share of the schedule (request ``n`` goes to worker
``n % W``) and of the connections; their histograms are merged, never their percentiles
averaged. With ``netns`` the workers run under ``ip netns exec NAME``.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import select
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from profiler.errors import TargetUnreachable, UsageError
from profiler.histogram import LatencyHistogram
from profiler.loadgen.common import LoadgenError, launch_prefix, parse_target
from profiler.loadgen.result import LoadResult, LoadSpec, builtin_result, rate_reached
from profiler.loadgen.worker import WorkerConfig

RATE_PER_WORKER = 4000.0  # req/s one process holds with margin here (docs/loadgen.md)
LAG_WARN_S = 0.010  # a worker this late on its schedule is CPU-bound
READY_TIMEOUT_S = 15.0


def worker_count(spec: LoadSpec) -> int:
    if spec.workers is not None:
        n = spec.workers
    elif spec.rate is None:
        n = 1
    else:
        n = math.ceil(spec.rate / RATE_PER_WORKER)
        n = min(n, os.cpu_count() or 1)
    return max(1, min(n, spec.connections))


def _configs(spec: LoadSpec, n: int, run_id: str) -> list[WorkerConfig]:
    host, port, path, host_header = parse_target(spec.target)
    configs = []
    for i in range(n):
        conns = spec.connections // n + (1 if i < spec.connections % n else 0)
        configs.append(
            WorkerConfig(
                host=host,
                port=port,
                path=path,
                host_header=host_header,
                rate=None if spec.rate is None else spec.rate / n,
                duration_s=spec.duration_s,
                warmup_s=spec.warmup_s,
                connections=conns,
                timeout_s=spec.timeout_s,
                headers=dict(spec.extra_headers or {}),
                poisson=spec.poisson,
                run_id=run_id,
                index=i,
                workers=n,
                keep_ids=spec.keep_request_ids // n,
                seed=secrets.randbits(32),
            )
        )
    return configs


def _readline(p: subprocess.Popen[str], deadline: float) -> str:
    assert p.stdout is not None
    left = deadline - time.monotonic()
    if left > 0 and select.select([p.stdout], [], [], left)[0]:
        return p.stdout.readline()
    return ""


def _fail(p: subprocess.Popen[str], what: str) -> str:
    p.kill()
    _, err = p.communicate()
    last = (err or "").strip().splitlines()
    return f"{what}: {last[-1] if last else 'no output'}"


def run(spec: LoadSpec) -> LoadResult:
    from profiler.loadgen.protocols import protocol_of

    protocol = protocol_of(spec)
    if protocol != "http1":  # HTTP/2 and gRPC: profiler.loadgen.h2 / .grpc
        if protocol == "http2":
            from profiler.loadgen import h2 as mod
        else:
            from profiler.loadgen import grpc as mod  # type: ignore[no-redef]
        result: LoadResult = mod.run(spec)
        return result
    if spec.rate is not None and spec.rate <= 0:
        raise UsageError(f"rate must be > 0 req/s, not {spec.rate}")
    if spec.connections < 1 or spec.duration_s <= 0:
        raise UsageError("connections must be >= 1 and duration > 0")
    run_id = spec.run_id or secrets.token_hex(4)
    n = worker_count(spec)
    configs = _configs(spec, n, run_id)
    cmd = [*launch_prefix(spec.netns, spec.cgroup), sys.executable, "-m", "profiler.loadgen.worker"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    procs = [
        subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in configs
    ]
    try:
        return _drive(spec, procs, configs, run_id)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _drive(
    spec: LoadSpec, procs: list[subprocess.Popen[str]], configs: list[WorkerConfig], run_id: str
) -> LoadResult:
    for p, c in zip(procs, configs, strict=True):
        assert p.stdin is not None
        p.stdin.write(json.dumps(asdict(c)) + "\n")
        p.stdin.flush()
    deadline = time.monotonic() + READY_TIMEOUT_S
    for p in procs:
        line = _readline(p, deadline).strip()
        if line.startswith("UNREACHABLE"):
            raise TargetUnreachable(f"cannot connect to {spec.target}: {line[12:]}")
        if line != "READY":
            raise LoadgenError(_fail(p, "load generator worker did not start"))
    start = time.time() + 0.05
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(f"{start!r}\n")
        p.stdin.flush()
    deadline = time.monotonic() + spec.warmup_s + spec.duration_s + spec.timeout_s + 15
    parts: list[dict[str, Any]] = []
    for p in procs:
        line = _readline(p, deadline)
        if not line.strip():
            raise LoadgenError(_fail(p, "load generator worker gave no result"))
        parts.append(json.loads(line))
        p.wait()
    return _merge(spec, parts, start, len(procs), run_id)


def _merge(
    spec: LoadSpec, parts: list[dict[str, Any]], start: float, n: int, run_id: str
) -> LoadResult:
    lat, svc, err = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    status: dict[int, int] = {}
    errors: dict[str, int] = {}
    ids: list[str] = []
    for d in parts:
        lat.merge(LatencyHistogram.from_json(d["latency"]))
        svc.merge(LatencyHistogram.from_json(d["service"]))
        err.merge(LatencyHistogram.from_json(d["error_latency"]))
        for k, v in d["status"].items():
            status[int(k)] = status.get(int(k), 0) + v
        for k, v in d["errors"].items():
            errors[k] = errors.get(k, 0) + v
        ids += d["ids"]
    ids.sort(key=lambda s: int(s.rsplit("-", 1)[1]))
    achieved = sum(d["completed_in_window"] for d in parts) / spec.duration_s
    lag = max(d["max_lag_s"] for d in parts)
    t0 = start + spec.warmup_s
    notes = [f"run id {run_id}; request ids smp-{run_id}-<n>"]
    if lag > LAG_WARN_S:
        notes.append(
            f"the generator fell behind its schedule by up to {lag * 1e3:.1f} ms"
            " (CPU-bound? use more workers); that delay counts as latency"
        )
    reached = rate_reached(spec.rate, achieved)  # judge() then counts successes only
    if not reached:
        notes.append(f"target rate not reached: {achieved:.1f} of {spec.rate:g} req/s")
    return builtin_result(
        spec,
        lat,
        start=t0,
        achieved=achieved,
        reached=reached,
        requests=lat.count + err.count,
        status_counts=status,
        errors=errors,
        bytes_received=sum(d["bytes_received"] for d in parts),
        request_ids=ids,
        requests_sent=sum(d["sent"] for d in parts),
        notes=notes,
        service_histogram=svc,
        workers=n,
        max_send_lag_ms=lag * 1e3,
        cpu_s=sum(float(d.get("cpu_s", 0.0)) for d in parts),
        error_histogram=err,
    ).judge()
