"""Build the SMP v0.6.1 documents of a run bundle (see docs/smp.md for every field)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from profiler.model import RunBundle
from profiler.smp.details import build_details
from profiler.smp.read import format_time
from profiler.smp.schema import INT32_MAX, SMP_VERSION


def int32(x: float | None) -> int:
    """A measured total rounded to the proto's int32 (clamped, never wrapped)."""
    if x is None:
        return 0
    return max(-INT32_MAX - 1, min(INT32_MAX, round(x)))


def duration_string(seconds: float) -> str:
    """Go-style duration, as SMP's ``duration`` is written: "10s", "1.5s", "2m30s"."""
    if seconds < 0:
        raise ValueError("negative duration")
    m, s = divmod(seconds, 60.0)
    sec = f"{s:.3f}".rstrip("0").rstrip(".") or "0"
    return (f"{int(m)}m" if m else "") + (f"{sec}s" if s or not m else "")


def _labels(**kv: object) -> dict[str, str]:
    return {k: str(v) for k, v in kv.items() if v is not None and v != ""}


def performance_test_config(b: RunBundle) -> dict[str, Any]:
    c = b.config
    generator = b.records[0].load.generator if b.records else c.generator
    version = b.records[0].load.generator_version if b.records else None
    mode = b.records[0].load.mode if b.records else None
    rates = ",".join("max" if r == 0 else f"{r:g}" for r in c.rates)
    return {
        "smp_version": SMP_VERSION,
        "id": b.test_id,
        "name": f"smp-profiler sweep {rates} req/s x {c.repeat} against {c.target}",
        "labels": _labels(
            tool="smp-profiler",
            tool_version=b.tool_version,
            rates=rates,
            repeat=c.repeat,
            warmup=duration_string(c.warmup_s),
            generator_version=version,
            generator_mode=mode,
            baseline_target=c.baseline_target,
            testbed=c.testbed,
        ),
        "clients": [
            {
                "internal": generator == "builtin",
                "load_generator": generator,
                "protocol": "HTTP",
                "connections": int32(c.connections),
                "rps": int(max(c.rates)) if c.rates else 0,
                "endpoint_urls": [c.target],
                "additional_options": f"rates={rates} step={duration_string(c.step_duration_s)}",
            }
        ],
        "duration": duration_string(c.step_duration_s),
    }


def _time(ts: str) -> str:
    return format_time(datetime.fromisoformat(ts))


def performance_test_results(b: RunBundle, details: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for i, step in enumerate(details["steps"]):
        mesh = step["mesh"]
        lat = mesh["latency"]
        out.append(
            {
                "smp_version": SMP_VERSION,
                "id": b.result_ids[i],
                "labels": _labels(
                    rate_asked="max" if step["rate_asked"] == 0 else f"{step['rate_asked']:g}",
                    repetitions=step["repetitions"],
                    target_reached=str(mesh["target_reached"]).lower(),
                    step=i,
                ),
                "start_time": _time(mesh["start_time"]),
                "end_time": _time(mesh["end_time"]),
                "latencies_ms": {
                    k: float(lat[src] or 0.0)
                    for k, src in (
                        ("min", "min_ms"),
                        ("average", "mean_ms"),
                        ("p50", "p50_ms"),
                        ("p90", "p90_ms"),
                        ("p99", "p99_ms"),
                        ("max", "max_ms"),
                    )
                },
                "actual_qps": float(mesh["rate_achieved"]),
                "details_uri": f"#/details/steps/{i}",
                "test_id": b.test_id,
                "mesh_config_id": b.mesh_config_id,
                "env_id": b.env_id,
            }
        )
    return out


def _run_sidecar(details: dict[str, Any]) -> dict[str, Any] | None:
    """Run-wide sidecar totals: CPU over all captured windows, peak memory."""
    scs = [s["sidecar"] for s in details["steps"] if s.get("sidecar")]
    if not scs:
        return None
    duration = sum(s["duration_s"] for s in scs)
    cpu = sum(s["cpu_seconds"] for s in scs)
    return {
        "count": max(s["count"] for s in scs),
        "cpu_mcores": cpu / duration * 1000.0 if duration > 0 else 0.0,
        "mem_mb": max(s["mem_mb"]["rss"] or 0.0 for s in scs),
        "rps": sum(s["requests_completed"] for s in scs) / duration if duration > 0 else 0.0,
        "bps": sum(s["bytes_rx"] + s["bytes_tx"] for s in scs) / duration if duration else 0.0,
    }


def service_mesh_config(b: RunBundle, details: dict[str, Any]) -> dict[str, Any]:
    m = b.mesh
    doc: dict[str, Any] = {
        "smp_version": SMP_VERSION,
        "id": b.mesh_config_id,
        "labels": _labels(proxy="envoy"),
        "mtls_enabled": m.mtls_enabled,
        "mesh_type": {"type": m.mesh_type, "labels": _labels(sidecar="envoy")},
    }
    sc = _run_sidecar(details)
    if sc is not None:
        doc["sidecar"] = {k: int32(v) for k, v in sc.items()}
        doc["labels"]["sidecar_measured_by"] = "smp-profiler ebpf capture"
    elif m.sidecar_count:
        doc["sidecar"] = {"count": int32(m.sidecar_count)}
    if m.proxy_concurrency is not None:
        doc["proxy_concurrency"] = int32(m.proxy_concurrency)
    if m.proxy_build:
        doc["proxy_build"] = m.proxy_build
        doc["mesh_type"]["version"] = m.proxy_build.split("/")[0]
    return doc


def environment_config(b: RunBundle) -> dict[str, Any]:
    e = b.environment
    doc: dict[str, Any] = {
        "smp_version": SMP_VERSION,
        "id": b.env_id,
        "labels": _labels(
            kernel=e.kernel,
            os=e.os,
            arch=e.arch,
            cpu_model=e.cpu_model,
            hostname=e.hostname,
            threads_per_core=e.threads_per_core,
        ),
        "nodes": [{"type": e.cpu_model, "cores": int32(e.cores), "mem_mb": int(e.mem_mb)}],
    }
    if e.kubernetes_version:
        doc["kubernetes_version"] = e.kubernetes_version
    return doc


def build_documents(b: RunBundle) -> dict[str, Any]:
    """The four SMP documents and the details they point into, keyed as in a bundle."""
    details = build_details(b)
    return {
        "smp_version": SMP_VERSION,
        "performance_test_config": performance_test_config(b),
        "performance_test_results": performance_test_results(b, details),
        "service_mesh_config": service_mesh_config(b, details),
        "environment_config": environment_config(b),
        "details": details,
    }
