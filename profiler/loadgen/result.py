"""The one result every load generator (built-in or adapter) returns: :class:`LoadResult`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from profiler import __version__
from profiler.errors import BadInputFile
from profiler.histogram import LatencyHistogram
from profiler.units import PERCENTILES

GENERATORS = ("builtin", "wrk", "hey", "fortio", "nighthawk")
MODES = ("open-loop", "closed-loop")
STANDARD_PERCENTILES = PERCENTILES
RATE_TOLERANCE = 0.01  # achieved within 1% of asked counts as reached
ERROR_STATUS = 400  # a response with this status or above is an error response
GRPC_OK = ("OK", "SERVING")  # gRPC statuses that are successes (a call, a health check)
MAX_REQUEST_IDS = 100_000  # request_ids kept in a result (bounded)


def rate_reached(asked: float | None, achieved: float) -> bool:
    """Achieved within 1% of asked (always True when asked is None: as fast as possible)."""
    if asked is None or asked <= 0:
        return True
    return achieved >= asked * (1 - RATE_TOLERANCE)


def _utc(d: datetime) -> datetime:
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)


@dataclass
class LoadResult:
    generator: str  # "builtin" | "wrk" | "hey" | "fortio" | "nighthawk"
    generator_version: str | None
    mode: str  # "open-loop" | "closed-loop"
    target: str  # URL
    connections: int
    rate_asked: float | None  # req/s; None = as fast as possible
    rate_achieved: float  # req/s over the measured window
    duration_s: float
    requests: int  # completed
    histogram: LatencyHistogram | None  # None when the source gives only percentiles
    percentiles_ms: dict[float, float]  # at least 50, 90, 99 when known; keys like 99.9
    min_ms: float | None
    mean_ms: float | None
    max_ms: float | None
    status_counts: dict[int, int]  # HTTP status -> count
    errors: dict[str, int]  # by kind: "timeout", "connect", "reset", "read", "socket", ...
    start_time: datetime  # UTC
    end_time: datetime  # UTC
    bytes_received: int | None
    target_reached: bool  # achieved within 1% of asked (always True when asked is None)
    request_ids: list[str] | None = None  # builtin only: ids sent (optional, bounded)
    # Added fields (beyond the shared contract)
    requests_sent: int | None = None  # builtin: measured requests put on the wire
    workers: int = 1  # processes (builtin) or threads (wrk, fortio) that made the load
    notes: list[str] = field(default_factory=list)  # e.g. "fell back to closed loop"
    # builtin: latency from the actual send (what a closed-loop tool reports), for comparison
    service_histogram: LatencyHistogram | None = None
    max_send_lag_ms: float | None = None  # builtin: latest send behind its intended time
    cpu_s: float | None = None  # builtin: CPU seconds of its processes (warm-up included)
    # Errors (docs/loadgen.md): a response with a status >= 400 is an error response; its
    # latency goes to error_histogram, never into `histogram`, when the generator tells them
    # apart. When it cannot (wrk, fortio without ErrorsDurationHistogram), `histogram` holds
    # them and errors_in_histogram says how many.
    error_histogram: LatencyHistogram | None = None
    errors_in_histogram: int = 0
    error_responses_uncoded: int = 0  # error responses whose status is not known (wrk text)
    # Imports: the statistics (min, mean, max, p50, ...) the file does not state, computed here
    # from its histogram; everything else is the file's own value.
    computed: list[str] = field(default_factory=list)
    protocol: str = "http"  # "http" | "grpc" (fortio's gRPC runs: statuses by name)
    grpc_status_counts: dict[str, int] = field(default_factory=dict)  # gRPC status -> count

    @property
    def error_count(self) -> int:
        """Requests that got no response: socket errors, timeouts, resets (by kind in errors)."""
        return sum(self.errors.values())

    @property
    def error_responses(self) -> int:
        """Responses with an error status (HTTP >= 400, a gRPC status other than OK)."""
        bad = sum(n for code, n in self.status_counts.items() if code >= ERROR_STATUS)
        grpc = sum(n for st, n in self.grpc_status_counts.items() if st not in GRPC_OK)
        return bad + grpc + self.error_responses_uncoded

    @property
    def successes(self) -> int:
        return max(0, self.requests - self.error_responses)

    @property
    def attempts(self) -> int:
        """Requests that were answered or failed: responses plus socket errors and timeouts."""
        return self.requests + self.error_count

    @property
    def error_rate(self) -> float:
        """Failed requests (error responses, socket errors, timeouts) over all attempts."""
        n = self.attempts
        return (self.error_responses + self.error_count) / n if n else 0.0

    @property
    def success_rate(self) -> float:
        """Successful responses per second (what SMP's actual_qps reports)."""
        if not self.requests:
            return 0.0
        return self.rate_achieved * self.successes / self.requests

    def judge(self) -> LoadResult:
        """Set target_reached from the successful rate and note the errors (every adapter)."""
        self.target_reached = rate_reached(self.rate_asked, self.success_rate) and (
            self.attempts > 0 or self.rate_asked is None
        )
        if self.error_responses or self.error_count:
            what = ", ".join(
                [f"{n} x {c}" for c, n in sorted(self.status_counts.items()) if c >= ERROR_STATUS]
                + [
                    f"{n} x {st}"
                    for st, n in sorted(self.grpc_status_counts.items())
                    if st not in GRPC_OK
                ]
                + [f"{n} {k}" for k, n in sorted(self.errors.items())]
                + (
                    [f"{self.error_responses_uncoded} non-2xx/3xx"]
                    if self.error_responses_uncoded
                    else []
                )
            )
            self._note(
                f"error rate {self.error_rate:.2%} ({what}); "
                f"successful {self.success_rate:.1f} req/s"
            )
        if self.errors_in_histogram:
            self._note(
                f"{self.generator} does not separate error latency: {self.errors_in_histogram} "
                "error responses are in the latency figures"
            )
        return self

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def to_json(self) -> dict[str, Any]:
        def num(x: float | None) -> float | None:
            return None if x is None or (isinstance(x, float) and math.isnan(x)) else x

        return {
            "generator": self.generator,
            "generator_version": self.generator_version,
            "mode": self.mode,
            "target": self.target,
            "connections": self.connections,
            "rate_asked": self.rate_asked,
            "rate_achieved": self.rate_achieved,
            "duration_s": self.duration_s,
            "requests": self.requests,
            "histogram": self.histogram.to_json() if self.histogram is not None else None,
            "percentiles_ms": {_pkey(p): v for p, v in sorted(self.percentiles_ms.items())},
            "min_ms": num(self.min_ms),
            "mean_ms": num(self.mean_ms),
            "max_ms": num(self.max_ms),
            "status_counts": {str(k): v for k, v in sorted(self.status_counts.items())},
            "errors": dict(sorted(self.errors.items())),
            "start_time": _utc(self.start_time).isoformat(),
            "end_time": _utc(self.end_time).isoformat(),
            "bytes_received": self.bytes_received,
            "target_reached": self.target_reached,
            "request_ids": self.request_ids,
            "requests_sent": self.requests_sent,
            "workers": self.workers,
            "notes": list(self.notes),
            "max_send_lag_ms": self.max_send_lag_ms,
            "cpu_s": self.cpu_s,
            "service_histogram": None
            if self.service_histogram is None
            else self.service_histogram.to_json(),
            "error_histogram": None
            if self.error_histogram is None
            else self.error_histogram.to_json(),
            "errors_in_histogram": self.errors_in_histogram,
            "error_responses_uncoded": self.error_responses_uncoded,
            "computed": list(self.computed),
            "protocol": self.protocol,
            "grpc_status_counts": dict(sorted(self.grpc_status_counts.items())),
        }

    @classmethod
    def from_json(cls, d: Any) -> LoadResult:
        if not isinstance(d, dict) or "generator" not in d or "rate_achieved" not in d:
            raise BadInputFile("not a load result (no 'generator' and 'rate_achieved')")
        try:
            hist = d.get("histogram")
            return cls(
                generator=str(d["generator"]),
                generator_version=d.get("generator_version"),
                mode=str(d["mode"]),
                target=str(d["target"]),
                connections=int(d["connections"]),
                rate_asked=None if d.get("rate_asked") is None else float(d["rate_asked"]),
                rate_achieved=float(d["rate_achieved"]),
                duration_s=float(d["duration_s"]),
                requests=int(d["requests"]),
                histogram=None if hist is None else LatencyHistogram.from_json(hist),
                percentiles_ms={float(k): float(v) for k, v in d["percentiles_ms"].items()},
                min_ms=_opt_float(d.get("min_ms")),
                mean_ms=_opt_float(d.get("mean_ms")),
                max_ms=_opt_float(d.get("max_ms")),
                status_counts={int(k): int(v) for k, v in d["status_counts"].items()},
                errors={str(k): int(v) for k, v in d["errors"].items()},
                start_time=_utc(datetime.fromisoformat(d["start_time"])),
                end_time=_utc(datetime.fromisoformat(d["end_time"])),
                bytes_received=None
                if d.get("bytes_received") is None
                else int(d["bytes_received"]),
                target_reached=bool(d["target_reached"]),
                request_ids=None if d.get("request_ids") is None else list(d["request_ids"]),
                requests_sent=None if d.get("requests_sent") is None else int(d["requests_sent"]),
                workers=int(d.get("workers", 1)),
                notes=[str(n) for n in d.get("notes", [])],
                max_send_lag_ms=_opt_float(d.get("max_send_lag_ms")),
                cpu_s=_opt_float(d.get("cpu_s")),
                service_histogram=None
                if d.get("service_histogram") is None
                else LatencyHistogram.from_json(d["service_histogram"]),
                error_histogram=None
                if d.get("error_histogram") is None
                else LatencyHistogram.from_json(d["error_histogram"]),
                errors_in_histogram=int(d.get("errors_in_histogram", 0)),
                error_responses_uncoded=int(d.get("error_responses_uncoded", 0)),
                computed=[str(c) for c in d.get("computed", [])],
                protocol=str(d.get("protocol", "http")),
                grpc_status_counts={
                    str(k): int(v) for k, v in (d.get("grpc_status_counts") or {}).items()
                },
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise BadInputFile(f"malformed load result: {type(e).__name__}: {e}") from None


def _pkey(p: float) -> str:
    return f"{p:g}"


def _opt_float(x: Any) -> float | None:
    return None if x is None else float(x)


def percentiles_from_histogram(
    h: LatencyHistogram, ps: tuple[float, ...] = STANDARD_PERCENTILES
) -> dict[float, float]:
    """Percentiles in milliseconds from a microsecond histogram (empty dict when empty)."""
    if h.count == 0:
        return {}
    return {p: h.percentile(p) / 1000.0 for p in ps}


@dataclass
class LoadSpec:
    """What to run: ``profiler.loadgen.run_load(LoadSpec(...)) -> LoadResult``."""

    generator: str  # one of GENERATORS
    target: str  # http://host:port/path
    rate: float | None  # req/s; None = as fast as possible (closed loop)
    duration_s: float
    connections: int
    warmup_s: float = 0.0  # load sent first, not measured
    netns: str | None = None  # network namespace (as `ip netns` knows it) to run inside
    cgroup: str | None = None  # cgroup v2 directory the generator's processes join (a pod's)
    timeout_s: float = 5.0  # per request
    extra_headers: dict[str, str] | None = None
    poisson: bool = False  # Poisson arrivals instead of a constant rate (builtin)
    workers: int | None = None  # processes (builtin; None = as many as the rate needs)
    run_id: str | None = None  # x-request-id prefix part: smp-<run_id>-<n> (builtin)
    keep_request_ids: int = 10_000  # at most this many ids in the result (builtin)
    protocol: str = "http1"  # builtin: "http1" | "http2" (h2c) | "grpc" (loadgen.protocols)


def builtin_result(
    spec: LoadSpec,
    lat: LatencyHistogram,
    *,
    start: float,
    achieved: float,
    reached: bool,
    requests: int,
    status_counts: dict[int, int],
    errors: dict[str, int],
    bytes_received: int,
    request_ids: list[str],
    requests_sent: int,
    notes: list[str],
    service_histogram: LatencyHistogram,
    **extra: Any,
) -> LoadResult:
    """The :class:`LoadResult` of a built-in run (the HTTP/1.1 workers, the HTTP/2 or gRPC
    child): the measured window starts at ``start`` (epoch seconds, warm-up over) and lasts
    ``spec.duration_s``; min, mean, max and percentiles come from ``lat`` (microseconds).
    ``extra``: the fields only one mode fills (workers, cpu_s, protocol, ...). Not judged."""

    def ms(x: float) -> float | None:
        return x / 1000.0 if lat.count else None

    return LoadResult(
        generator="builtin",
        generator_version=__version__,
        mode="closed-loop" if spec.rate is None else "open-loop",
        target=spec.target,
        connections=spec.connections,
        rate_asked=spec.rate,
        rate_achieved=achieved,
        duration_s=spec.duration_s,
        requests=requests,
        histogram=lat,
        percentiles_ms=percentiles_from_histogram(lat),
        min_ms=ms(lat.min),
        mean_ms=ms(lat.mean),
        max_ms=ms(lat.max),
        status_counts=status_counts,
        errors=errors,
        start_time=datetime.fromtimestamp(start, UTC),
        end_time=datetime.fromtimestamp(start + spec.duration_s, UTC),
        bytes_received=bytes_received,
        target_reached=reached,
        request_ids=request_ids,
        requests_sent=requests_sent,
        notes=notes,
        service_histogram=service_histogram,
        **extra,
    )
