"""MeshMark (0-100) from measured MUEs; the definition is in docs/meshmark.md.

A MUE (MeshMark Utilisation Efficiency) is ``1 - share``, where ``share`` is the part of a
resource that the mesh takes out of what serving the traffic used:

- ``cpu``:     sidecar CPU / (sidecar CPU + app CPU), from the captures;
- ``memory``:  sidecar RSS / (sidecar RSS + app RSS), from the captures;
- ``latency``: sidecar time / end-to-end time, at p50 and p99: the eBPF ``sidecar_total`` leg
  over the client's latency when captured, else the A/B delta (mesh - baseline, at least 0)
  over the mesh latency.

Within a class each MUE has the weight ``1 + adjustment`` (adjustments within -0.5..+0.5, as
the SMP site's prose allows): p99 latency +0.5 (tails are what users feel), the highest-rate
step +0.5 for CPU (cost under load matters more), everything else 0. MeshMark is 100 times the
mean over the classes that could be measured of each class's weighted mean MUE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

CLASSES = ("cpu", "memory", "latency")
ADJUST_P99 = 0.5
ADJUST_TOP_RATE_CPU = 0.5


@dataclass(frozen=True)
class StepCosts:
    """The measured numbers of one rate step that MeshMark uses (None = not measured)."""

    rate: float
    sidecar_cpu_s: float | None = None
    app_cpu_s: float | None = None
    sidecar_rss_mb: float | None = None
    app_rss_mb: float | None = None
    latency_p50_ms: float | None = None  # client side, mesh path
    latency_p99_ms: float | None = None
    sidecar_p50_ms: float | None = None  # eBPF sidecar_total, or A/B delta
    sidecar_p99_ms: float | None = None


@dataclass(frozen=True)
class Mue:
    cls: str
    name: str
    value: float
    weight: float


@dataclass(frozen=True)
class MeshMark:
    score: float | None  # 0-100; None when nothing could be measured
    classes: dict[str, float]  # class -> weighted mean MUE (0-1)
    mues: list[Mue] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # classes that could not be measured


def _share_mue(part: float | None, rest: float | None) -> float | None:
    if part is None or rest is None:
        return None
    if part < 0 or rest < 0:
        raise ValueError("negative resource use")
    total = part + rest
    return None if total <= 0 else 1.0 - part / total


def _latency_mue(sidecar: float | None, total: float | None) -> float | None:
    if sidecar is None or total is None or total <= 0:
        return None
    if sidecar < 0 or total < 0:
        raise ValueError("negative latency")
    return min(1.0, max(0.0, 1.0 - sidecar / total))


def _adjusted(adjustment: float) -> float:
    if not -0.5 <= adjustment <= 0.5:
        raise ValueError(f"weight adjustment {adjustment} is outside -0.5..+0.5")
    return 1.0 + adjustment


def compute(steps: Sequence[StepCosts]) -> MeshMark:
    """MeshMark of a run from its steps."""
    if not steps:
        raise ValueError("no steps")
    top = max(s.rate for s in steps)
    mues: list[Mue] = []

    def add(cls: str, name: str, value: float | None, adjustment: float) -> None:
        if value is not None:
            mues.append(Mue(cls, name, value, _adjusted(adjustment)))

    for s in steps:
        tag = "max rate" if s.rate == 0 else f"{s.rate:g} rps"
        cpu_adj = ADJUST_TOP_RATE_CPU if s.rate == top and len(steps) > 1 else 0.0
        add("cpu", f"cpu @ {tag}", _share_mue(s.sidecar_cpu_s, s.app_cpu_s), cpu_adj)
        add("memory", f"memory @ {tag}", _share_mue(s.sidecar_rss_mb, s.app_rss_mb), 0.0)
        add("latency", f"p50 @ {tag}", _latency_mue(s.sidecar_p50_ms, s.latency_p50_ms), 0.0)
        add(
            "latency",
            f"p99 @ {tag}",
            _latency_mue(s.sidecar_p99_ms, s.latency_p99_ms),
            ADJUST_P99,
        )
    classes: dict[str, float] = {}
    for cls in CLASSES:
        members = [m for m in mues if m.cls == cls]
        if members:
            total_w = sum(m.weight for m in members)
            classes[cls] = sum(m.value * m.weight for m in members) / total_w
    missing = [c for c in CLASSES if c not in classes]
    score = 100.0 * sum(classes.values()) / len(classes) if classes else None
    return MeshMark(score=score, classes=classes, mues=mues, missing=missing)


def to_json(m: MeshMark) -> dict[str, object]:
    return {
        "score": None if m.score is None else round(m.score, 2),
        "classes": {k: round(v, 4) for k, v in m.classes.items()},
        "mues": [
            {"class": u.cls, "name": u.name, "mue": round(u.value, 4), "weight": u.weight}
            for u in m.mues
        ],
        "missing": list(m.missing),
        "definition": "docs/meshmark.md",
    }
