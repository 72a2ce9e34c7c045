"""What the exporter reads from the capture engine: the shape of ``Engine.snapshot()``.

The engine (``profiler.capture.engine``) returns an object of this shape; the types here are
Protocols so any such object is accepted, plus plain dataclasses of the same shape for code
that builds snapshots itself (tests, replay).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from profiler.histogram import LatencyHistogram


@runtime_checkable
class HistogramLike(Protocol):
    """A cumulative latency histogram (``profiler.histogram.LatencyHistogram``)."""

    count: int

    @property
    def total_us(self) -> int: ...

    def buckets(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]: ...


class TargetLike(Protocol):
    @property
    def labels(self) -> Mapping[str, str]: ...
    @property
    def role(self) -> str: ...
    @property
    def requests(self) -> int: ...
    @property
    def legs(self) -> Mapping[str, HistogramLike]: ...
    @property
    def cpu_seconds(self) -> float: ...
    @property
    def memory_working_set_bytes(self) -> int: ...


class SnapshotLike(Protocol):
    """Per target (keyed by PID) cumulative counters, plus drops and the attached count."""

    @property
    def targets(self) -> Mapping[int, TargetLike] | Sequence[TargetLike]: ...
    @property
    def drops(self) -> int | Mapping[str, int]: ...
    @property
    def attached(self) -> int: ...


@dataclass
class TargetSnapshot:
    labels: Mapping[str, str]
    role: str = "sidecar"
    requests: int = 0
    legs: dict[str, LatencyHistogram] = field(default_factory=dict)
    cpu_seconds: float = 0.0
    memory_working_set_bytes: int = 0
    socket_bytes: int = 0  # bytes the process read and wrote on its traced sockets
    unparsed_bytes: int = 0  # of those, bytes no span explains (never silent)
    # responses by (protocol, code), cumulative: protocol "http1" (from the spans), "http2"
    # (:status) or "grpc" (grpc-status); code the status as a string, "unknown" where the
    # probe could not read it (HTTP/1.1: status 0; HTTP/2: header blocks not decoded)
    statuses: dict[tuple[str, str], int] = field(default_factory=dict)
    h2_blocks_lost: int = 0  # HTTP/2 header blocks not followed to their end
    statuses_lost: int = 0  # responses whose status the probe's full table could not count
    # HTTP/1.1 writes timed by their call, not their first packet, by the leg they end
    # (profiler.capture.engine.WRITE_ENDED_LEGS)
    write_stamp_missing: dict[str, int] = field(default_factory=dict)


@dataclass
class Snapshot:
    targets: dict[int, TargetSnapshot] = field(default_factory=dict)
    drops: int = 0
    attached: int = 0
