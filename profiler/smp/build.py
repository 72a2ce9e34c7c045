"""Build the SMP v0.6.1 documents of a run bundle (see docs/smp.md for every field)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from profiler.analysis.details import build_details
from profiler.model import RunBundle
from profiler.smp.read import format_time
from profiler.smp.schema import INT32_MAX, SMP_VERSION, enum_value

# SMP's mem_mb is "memory in MB": megabytes of 10^6 bytes. Captures measure MiB (2^20 bytes).
MB_PER_MIB = 1.048576
PROTOCOLS = {
    "http": enum_value("PerformanceTestConfig.Client.Protocol", "PROTOCOL_HTTP"),
    "grpc": enum_value("PerformanceTestConfig.Client.Protocol", "PROTOCOL_GRPC"),
}


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


def mib_to_mb(mib: float | None) -> float | None:
    """MiB (what /proc and cgroups give, as captures record it) -> SMP's MB (10^6 bytes)."""
    return None if mib is None else mib * MB_PER_MIB


def _labels(**kv: object) -> dict[str, str]:
    return {k: str(v) for k, v in kv.items() if v is not None and v != ""}


def performance_test_config(b: RunBundle) -> dict[str, Any]:
    c = b.config
    generator = b.records[0].load.generator if b.records else c.generator
    version = b.records[0].load.generator_version if b.records else None
    mode = b.records[0].load.mode if b.records else None
    protocol = b.records[0].load.protocol if b.records else "http"
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
            generator_options=f"rates={rates} step={duration_string(c.step_duration_s)}",
            baseline_target=c.baseline_target,
            testbed=c.testbed,
            error_rate_limit=c.max_error_rate,
        ),
        "clients": [
            {
                "internal": generator == "builtin",
                "load_generator": generator,
                "protocol": PROTOCOLS[protocol],
                "connections": int32(c.connections),
                "rps": int(max(c.rates)) if c.rates else 0,
                "endpoint_urls": [c.target],
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
        fails = mesh["failures"]
        doc: dict[str, Any] = {
            "smp_version": SMP_VERSION,
            "id": b.result_ids[i],
            "labels": _labels(
                rate_asked="max" if step["rate_asked"] == 0 else f"{step['rate_asked']:g}",
                repetitions=step["repetitions"],
                target_reached=str(mesh["target_reached"]).lower(),
                step=i,
                error_rate=f"{fails['rate']:.6g}",
                errors=f"{fails['failed']} of {fails['attempts']}",
                latency="successful responses only"
                if not fails["in_latency_histogram"]
                else f"includes {fails['in_latency_histogram']} error responses (generator)",
                latency_computed=",".join(lat.get("computed") or []),
            ),
            "start_time": _time(mesh["start_time"]),
            "end_time": _time(mesh["end_time"]),
            # successful responses per second (errors are not throughput)
            "actual_qps": float(mesh["rate_achieved"]),
            "details_uri": f"#/details/steps/{i}",
            "test_id": b.test_id,
            "mesh_config_id": b.mesh_config_id,
            "env_id": b.env_id,
        }
        keys = (
            ("min", "min_ms"),
            ("average", "mean_ms"),
            ("p50", "p50_ms"),
            ("p90", "p90_ms"),
            ("p99", "p99_ms"),
            ("max", "max_ms"),
        )
        if all(lat.get(src) is not None for _, src in keys):
            doc["latencies_ms"] = {k: float(lat[src]) for k, src in keys}
        else:  # no successful response: no latency, rather than zeros
            doc["labels"]["latency"] = "none: no successful response"
        out.append(doc)
    return out


def _run_sidecar(details: dict[str, Any]) -> dict[str, Any] | None:
    """Run-wide sidecar totals over the steps whose sidecar saw the run's traffic: CPU averaged
    over all their load windows, peak memory, what the sidecars proxied per second."""
    scs = [s["sidecar"] for s in details["steps"] if s.get("sidecar") and not s["sidecar"]["error"]]
    if not scs:
        return None
    duration = sum(s["load_window_s"] for s in scs)
    cpu = sum(s["cpu_seconds"] for s in scs)
    rss = max(s["mem_mb"]["rss"] or 0.0 for s in scs)
    return {
        "count": max(s["count"] for s in scs),
        "cpu_mcores": cpu / duration * 1000.0 if duration > 0 else 0.0,
        "mem_mb": mib_to_mb(rss),
        "rps": sum(s["requests_seen"] for s in scs) / duration if duration > 0 else 0.0,
        "bps": sum(s["bytes_rx"] + s["bytes_tx"] for s in scs) / duration if duration else 0.0,
    }


def service_mesh_config(b: RunBundle, details: dict[str, Any]) -> dict[str, Any]:
    m = b.mesh
    proxy = m.proxy or ("unknown" if m.sidecar_count else "none")
    doc: dict[str, Any] = {
        "smp_version": SMP_VERSION,
        "id": b.mesh_config_id,
        "labels": _labels(proxy=proxy, mesh_evidence=m.evidence),
        "mtls_enabled": m.mtls_enabled,
        "mesh_type": {
            "type": enum_value("ServiceMesh.Type", m.mesh_type),
            "labels": _labels(sidecar=proxy),
        },
    }
    if m.mesh_version:
        doc["mesh_type"]["version"] = m.mesh_version
    sc = _run_sidecar(details)
    steps = len(details["steps"])
    if sc is not None:
        doc["sidecar"] = {k: int32(v) for k, v in sc.items()}
        doc["labels"]["sidecar_measured_by"] = "smp-profiler ebpf capture"
        doc["labels"]["sidecar_figures"] = (
            f"cpu_mcores: mean over the load windows of {steps} rate steps (per step: "
            "details.steps[i].sidecar.cpu_mcores); mem_mb: peak RSS, MB of 10^6 bytes; "
            "rps: requests the sidecars proxied per second"
        )
    elif m.sidecar_count:
        doc["sidecar"] = {"count": int32(m.sidecar_count)}
        doc["labels"]["sidecar_figures"] = "not measured: see details.notes"
    if m.proxy_concurrency is not None:
        doc["proxy_concurrency"] = int32(m.proxy_concurrency)
    if m.proxy_build:
        doc["proxy_build"] = f"{m.proxy} {m.proxy_build}" if m.proxy else m.proxy_build
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
        # Environment.mem_mb is MiB (/proc/meminfo); SMP's MB are 10^6 bytes
        "nodes": [
            {"type": e.cpu_model, "cores": int32(e.cores), "mem_mb": round(e.mem_mb * MB_PER_MIB)}
        ],
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
