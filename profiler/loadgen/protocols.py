"""What the built-in generator's HTTP/2 and gRPC modes share: the child process they run in
(inside the spec's network namespace and cgroup), its config and tally, and the
:class:`LoadResult` built from its one JSON line.

``protocol_of(spec)``: ``"http1"`` (the asyncio workers), ``"http2"`` (profiler.loadgen.h2)
or ``"grpc"`` (profiler.loadgen.grpc). gRPC statuses are counted by name; the SMP client
protocol of a gRPC run is PROTOCOL_GRPC.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from profiler.errors import TargetUnreachable, UsageError
from profiler.histogram import LatencyHistogram
from profiler.loadgen.common import LoadgenError, launch_prefix
from profiler.loadgen.result import LoadResult, LoadSpec, builtin_result, rate_reached

PROTOCOLS = ("http1", "http2", "grpc")


def protocol_of(spec: LoadSpec) -> str:
    p = str(getattr(spec, "protocol", "http1") or "http1")
    if p not in PROTOCOLS:
        raise UsageError(f"bad protocol {p!r}: use one of {', '.join(PROTOCOLS)}")
    return p


@dataclass
class ChildConfig:
    host: str
    port: int
    path: str  # HTTP/2: the request path; gRPC: /package.Service/Method
    host_header: str
    rate: float | None
    duration_s: float
    warmup_s: float
    connections: int
    timeout_s: float
    headers: dict[str, str]
    run_id: str
    keep_ids: int


@dataclass
class Tally:
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    service: LatencyHistogram = field(default_factory=LatencyHistogram)
    errors: dict[str, int] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)
    bytes_received: int = 0
    keep_ids: int = 10_000

    def record(self, latency_s: float, service_s: float, rid: str) -> None:
        self.latency.record(max(0, round(latency_s * 1e6)))
        self.service.record(max(0, round(service_s * 1e6)))
        if len(self.ids) < self.keep_ids:
            self.ids.append(rid)

    def error(self, kind: str, n: int = 1) -> None:
        if n:
            self.errors[kind] = self.errors.get(kind, 0) + n

    def result(self, status: dict[Any, int], sent: int) -> dict[str, Any]:
        return {
            "latency": self.latency.to_json(),
            "service": self.service.to_json(),
            "status": {str(k): v for k, v in status.items()},
            "errors": self.errors,
            "ids": self.ids,
            "bytes_received": self.bytes_received,
            "sent": sent,
        }


def run_child(spec: LoadSpec, module: str, protocol: str) -> LoadResult:
    """Run ``python -m <module> <config>`` where the spec says and build the result."""
    from profiler.loadgen.common import parse_target

    if spec.rate is not None and spec.rate <= 0:
        raise UsageError(f"rate must be > 0 req/s, not {spec.rate}")
    if spec.connections < 1 or spec.duration_s <= 0:
        raise UsageError("connections must be >= 1 and duration > 0")
    host, port, path, host_header = parse_target(spec.target)
    if protocol == "grpc" and path == "/":
        path = "/smp.Testbed/Unary"
    run_id = spec.run_id or secrets.token_hex(4)
    cfg = ChildConfig(host, port, path, host_header, spec.rate, spec.duration_s, spec.warmup_s,
                      spec.connections, spec.timeout_s, dict(spec.extra_headers or {}), run_id,
                      spec.keep_request_ids)  # fmt: skip
    cmd = [*launch_prefix(spec.netns, spec.cgroup), sys.executable, "-m", module,
           json.dumps(asdict(cfg))]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    t0 = time.time()
    budget = spec.warmup_s + spec.duration_s + spec.timeout_s + 30
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=budget)
    except subprocess.TimeoutExpired:
        raise LoadgenError(
            f"the {protocol} load generator did not finish in {budget:.0f}s"
        ) from None
    last = (r.stderr or "").strip().splitlines()
    if r.returncode != 0 or not r.stdout.strip():
        why = last[-1] if last else f"exit {r.returncode}"
        if "ConnectionRefused" in why or "connect" in why.lower():
            raise TargetUnreachable(f"cannot connect to {spec.target}: {why}")
        raise LoadgenError(f"the {protocol} load generator failed: {why}")
    d = json.loads(r.stdout.strip().splitlines()[-1])
    return _result(spec, protocol, d, t0, run_id)


def child_main(load: Callable[[ChildConfig], dict[str, Any]]) -> int:
    """A protocol child's entry point: its :class:`ChildConfig` as JSON in ``argv[1]``, its
    tally printed as one JSON line (what :func:`run_child` reads)."""
    cfg = ChildConfig(**json.loads(sys.argv[1]))
    print(json.dumps(load(cfg)), flush=True)
    return 0


def _result(spec: LoadSpec, protocol: str, d: dict[str, Any], t0: float,
            run_id: str) -> LoadResult:  # fmt: skip
    lat = LatencyHistogram.from_json(d["latency"])
    svc = LatencyHistogram.from_json(d["service"])
    achieved = lat.count / spec.duration_s
    reached = rate_reached(spec.rate, achieved)
    notes = [f"{protocol} (built-in); run id {run_id}; request ids smp-{run_id}-<n>"]
    if not reached:
        notes.append(f"target rate not reached: {achieved:.1f} of {spec.rate:g} req/s")
    http_status: dict[int, int] = {}
    grpc_status: dict[str, int] = {}
    for k, v in d["status"].items():
        if protocol == "grpc":
            grpc_status[k] = grpc_status.get(k, 0) + v
        else:
            http_status[int(k)] = http_status.get(int(k), 0) + v
    if grpc_status:
        notes.append(
            "grpc-status: " + ", ".join(f"{k} {v}" for k, v in sorted(grpc_status.items()))
        )
    res = builtin_result(
        spec,
        lat,
        start=t0 + spec.warmup_s,
        achieved=achieved,
        reached=reached,
        requests=lat.count,
        status_counts=http_status,
        errors=dict(d["errors"]),
        bytes_received=int(d["bytes_received"]),
        request_ids=list(d["ids"]),
        requests_sent=int(d["sent"]),
        notes=notes,
        service_histogram=svc,
        protocol="grpc" if protocol == "grpc" else "http",  # SMP: PROTOCOL_GRPC
        grpc_status_counts=grpc_status,
    )
    # error responses are timed with the others (the child does not tell them apart)
    res.errors_in_histogram = res.error_responses
    return res.judge()
