"""Run bundles built from real LoadResult and histogram objects, with capture documents of the
capture contract (issue 4), for the SMP mapping tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from profiler.histogram import LatencyHistogram
from profiler.loadgen.result import LoadResult, percentiles_from_histogram
from profiler.model import Environment, MeshInfo, RunBundle, RunConfig, StepRecord

T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


def hist(samples_us: np.ndarray) -> LatencyHistogram:
    h = LatencyHistogram()
    h.record_many(np.round(samples_us).astype(np.int64))
    return h


def load(
    rate: float, samples_us: np.ndarray, start: datetime, duration_s: float = 10.0
) -> LoadResult:
    h = hist(samples_us)
    return LoadResult(
        generator="builtin",
        generator_version="0.1.0",
        mode="open-loop",
        target="http://10.0.0.2:8080/",
        connections=8,
        rate_asked=rate,
        rate_achieved=h.count / duration_s,
        duration_s=duration_s,
        requests=h.count,
        histogram=h,
        percentiles_ms=percentiles_from_histogram(h),
        min_ms=h.min / 1000,
        mean_ms=h.mean / 1000,
        max_ms=h.max / 1000,
        status_counts={200: h.count},
        errors={},
        start_time=start,
        end_time=start + timedelta(seconds=duration_s),
        bytes_received=h.count * 100,
        target_reached=True,
    )


def leg(samples_us: np.ndarray) -> dict[str, Any]:
    h = hist(samples_us)
    p = {k: h.percentile(v) / 1000 for k, v in [("p50", 50), ("p90", 90), ("p95", 95)]}
    return {
        "count": h.count,
        "min_ms": h.min / 1000,
        "mean_ms": h.mean / 1000,
        "p50_ms": p["p50"],
        "p90_ms": p["p90"],
        "p95_ms": p["p95"],
        "p99_ms": h.percentile(99) / 1000,
        "p999_ms": h.percentile(99.9) / 1000,
        "max_ms": h.max / 1000,
        "histogram": h.to_json(),
    }


def capture(
    requests: int, cpu_s: float, rss: float, sidecar_us: np.ndarray, duration_s: float = 10.0
) -> dict[str, Any]:
    return {
        "complete": True,
        "duration_s": duration_s,
        "drops": 0,
        "method": "tracepoints",
        "start_time": T0.isoformat(),
        "end_time": (T0 + timedelta(seconds=duration_s)).isoformat(),
        "sidecars": [
            {
                "pid": 4242,
                "comm": "envoy",
                "cgroup": "/smp-test/pod-a",
                "requests": requests,
                "legs": {"sidecar_total": leg(sidecar_us)},
                "cpu_seconds": cpu_s,
                "cpu_mcores": cpu_s / duration_s * 1000,
                "threads": [{"tid": 4242, "comm": "envoy", "cpu_seconds": cpu_s}],
                "mem_mb": {"rss": rss, "pss": rss * 0.8, "cgroup_current": None},
                "bytes_rx": requests * 120,
                "bytes_tx": requests * 200,
            }
        ],
        "apps": [
            {
                "pid": 4243,
                "comm": "python3",
                "legs": {},
                "cpu_seconds": cpu_s * 2,
                "cpu_mcores": 0,
                "mem_mb": 30.0,
            }
        ],
        "spans_file": None,
    }


def bundle(
    rates: tuple[float, ...] = (100.0, 200.0),
    repeat: int = 2,
    baseline: bool = True,
    with_capture: bool = True,
    shift_us: float = 500.0,
    seed: int = 1,
    scale: float = 1.0,
    rep_noise_us: float = 0.0,
) -> RunBundle:
    """Baseline latency ~ N(1000, 50) us; the mesh adds ``shift_us``; the sidecar leg is
    ~ N(shift_us, 20) us; the sidecar burns 0.02 CPU-s per 100 requests. ``scale`` multiplies
    every latency (a seeded shift); ``rep_noise_us`` is the sd of an offset drawn per window,
    the drift between windows that only repetitions show."""
    rng = np.random.default_rng(seed)
    recs: list[StepRecord] = []
    t = T0
    for i, rate in enumerate(rates):
        for rep in range(repeat):
            n = int(rate * 10)
            drift = rng.normal(0.0, rep_noise_us) if rep_noise_us else 0.0
            base = np.clip(rng.normal(1000.0, 50.0, n) + drift, 1, None) * scale
            recs.append(
                StepRecord(
                    i,
                    rate,
                    "mesh",
                    rep,
                    load(rate, base + shift_us * scale, t),
                    capture(
                        n,
                        0.0002 * n,
                        40.0 + i,
                        np.clip(rng.normal(shift_us, 20.0, n) * scale, 1, None),
                    )
                    if with_capture
                    else None,
                )
            )
            t += timedelta(seconds=11)
            if baseline:
                other = np.clip(rng.normal(1000.0, 50.0, n) + drift, 1, None) * scale
                recs.append(StepRecord(i, rate, "baseline", rep, load(rate, other, t)))
                t += timedelta(seconds=11)
    return RunBundle(
        config=RunConfig(
            target="http://10.0.0.2:8080/",
            rates=list(rates),
            step_duration_s=10.0,
            warmup_s=2.0,
            repeat=repeat,
            generator="builtin",
            connections=8,
            baseline_target="http://10.0.1.2:8080/" if baseline else None,
            sidecar_pids=[4242],
        ),
        mesh=MeshInfo(
            proxy="envoy",
            proxy_build="1.40.0/Clean/RELEASE/BoringSSL",
            proxy_concurrency=2,
            sidecar_count=1,
            evidence="PID 4242 is a plain Envoy: no Istio or other mesh seen",
        ),
        environment=Environment(
            hostname="node-1",
            kernel="6.18.0",
            os="Debian GNU/Linux 12 (bookworm)",
            arch="x86_64",
            cpu_model="AMD EPYC",
            cores=2,
            threads_per_core=1,
            mem_mb=3900,
        ),
        records=recs,
        test_id=str(uuid.UUID(int=1)),
        mesh_config_id=str(uuid.UUID(int=2)),
        env_id=str(uuid.UUID(int=3)),
        result_ids=[str(uuid.UUID(int=10 + i)) for i in range(len(rates))],
        created=T0,
        tool_version="0.1.0",
        seed=seed,
    )
