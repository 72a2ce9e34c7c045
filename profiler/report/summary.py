"""A report as plain data (the json and yaml renderers): the view, the sentence, the SMP docs."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

from profiler.report.source import Source
from profiler.report.view import CaptureView, RunView, StepView, sentence, view

KIND = "smp-profiler/report"
_SKIP = ("mesh_hist", "baseline_hist", "leg_hists")


def _step(s: StepView) -> dict[str, Any]:
    out = {f.name: getattr(s, f.name) for f in fields(s) if f.name not in _SKIP}
    if s.overhead:
        out["overhead"] = {
            p: {"delta_ms": d, "ci_ms": list(ci)} for p, (d, ci) in s.overhead.items()
        }
    out["latency_ci"] = {p: list(ci) if ci else None for p, ci in s.latency_ci.items()}
    out["sidecar_ci"] = list(s.sidecar_ci) if s.sidecar_ci else None
    out["queue_work"] = [asdict(q) for q in s.queue_work]
    return out


def summary(src: Source) -> dict[str, Any]:
    v = view(src)
    doc: dict[str, Any] = {
        "kind": KIND,
        "source": {"path": str(src.path), "kind": src.kind},
        "title": v.title,
        "meaning": sentence(v),
        "facts": dict(v.facts),
    }
    if isinstance(v, RunView):
        doc["steps"] = [_step(s) for s in v.steps]
        doc["meshmark"] = v.meshmark
        docs = src.documents or {}
        doc["smp"] = {
            k: docs[k]
            for k in (
                "performance_test_config",
                "performance_test_results",
                "service_mesh_config",
                "environment_config",
            )
            if k in docs
        }
    elif isinstance(v, CaptureView):
        c = asdict(v)
        for p in c["processes"]:
            for leg in p["legs"].values():
                leg.pop("histogram", None)
            p["leg_ci"] = {k: list(x) for k, x in p["leg_ci"].items()}
        doc.update({k: c[k] for k in ("complete", "incomplete_reason", "duration_s", "drops")})
        doc["processes"] = c["processes"]
    doc["notes"] = v.notes
    return doc
