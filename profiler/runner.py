"""``smp-profiler run``: load steps, each captured over its measured window, into a bundle.

For every rate step and repetition, and for each role (the mesh path, then the baseline path
when there is one): warm up (load not measured, not captured), then start the capture, run the
measured load, stop the capture. The load result and the capture of that window are one
:class:`~profiler.model.StepRecord`. Mesh and baseline windows alternate, so drift of the node
over the run affects both alike.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from profiler import __version__
from profiler.discovery.environment import mesh_evidence
from profiler.errors import SmpError, TargetNotFound, TargetUnreachable, UsageError
from profiler.loadgen.result import GENERATORS, LoadResult, LoadSpec
from profiler.model import MeshInfo, RunBundle, RunConfig, StepRecord

LoadFn = Callable[[LoadSpec], LoadResult]
CaptureFn = Callable[[list[int], list[int]], "CaptureSession"]  # sidecar PIDs, app PIDs
MAX_RATE = 100_000.0


class CaptureSession(Protocol):
    def stop(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Window:
    """One measured window of the plan."""

    step: int
    rate: float
    role: str  # "mesh" | "baseline"
    repetition: int
    target: str
    netns: str | None
    captured: bool


class Reporter(Protocol):
    """What the run tells its display."""

    def begin(self, windows: list[Window], seconds: float) -> None: ...
    def start(self, window: Window, phase: str) -> None: ...
    def done(self, window: Window, record: StepRecord) -> None: ...
    def end(self) -> None: ...


class QuietReporter:
    def begin(self, windows: list[Window], seconds: float) -> None:
        pass

    def start(self, window: Window, phase: str) -> None:
        pass

    def done(self, window: Window, record: StepRecord) -> None:
        pass

    def end(self) -> None:
        pass


# ----- options ------------------------------------------------------------------------


def rate_label(rate: float) -> str:
    """A step's rate as shown: ``0`` is "max" (as fast as possible, SMP's rps 0)."""
    return "max" if rate == 0 else f"{rate:g}"


def parse_rates(text: str) -> list[float]:
    """``"100,500,1000"`` -> [100.0, 500.0, 1000.0]; ``max`` -> 0.0 (as fast as possible)."""
    rates: list[float] = []
    for part in text.split(","):
        if part.strip() == "max":
            rates.append(0.0)
            continue
        try:
            r = float(part.strip())
        except ValueError:
            raise UsageError(
                f"bad --rates {text!r}: use req/s numbers or max, e.g. 100,500"
            ) from None
        if not 0 < r <= MAX_RATE:
            raise UsageError(f"bad rate {part.strip()}: use 0 < rate <= {MAX_RATE:g} req/s")
        rates.append(r)
    return rates


def check_url(url: str, option: str = "--target") -> str:
    u = urlsplit(url)
    if u.scheme != "http" or not u.hostname:
        raise UsageError(f"bad {option} {url!r}: use http://host:port/path")
    return url


def _testbed_state(path: Path) -> Any:
    from profiler.testbed import Testbed

    return Testbed.load(path).state


def _mesh_of(pids: list[int], **kw: Any) -> MeshInfo:
    from profiler.discovery.environment import envoy_binary_of, envoy_version, proxy_concurrency_of

    kind, proxy, why = mesh_evidence(pids[0])
    if proxy != "envoy":  # a testbed's Envoy facts do not describe another process
        kw.pop("proxy_build", None)
        kw.pop("proxy_concurrency", None)
        return MeshInfo(mesh_type=kind, proxy=proxy, sidecar_count=len(pids), evidence=why, **kw)
    exe = envoy_binary_of(pids[0])
    build = envoy_version(exe) if exe else None
    kw.setdefault("proxy_concurrency", proxy_concurrency_of(pids[0]))
    fallback = kw.pop("proxy_build", None)
    return MeshInfo(
        mesh_type=kind,
        proxy=proxy,
        proxy_build=build or fallback,
        sidecar_count=len(pids),
        evidence=why,
        **kw,
    )


def resolve(cfg: RunConfig) -> tuple[RunConfig, MeshInfo]:
    """Fill target, netns and PIDs from testbed state dirs; learn what the sidecar is."""
    mesh = MeshInfo(evidence="no sidecar PID given: what is on the path is not known")
    if cfg.testbed:
        st = _testbed_state(Path(cfg.testbed))
        cfg.target, cfg.netns = st.url, st.client.netns
        if not cfg.sidecar_pids:
            cfg.sidecar_pids = [p for p in (st.server.envoy_pid, st.client.envoy_pid) if p]
        if not cfg.app_pids and st.server.app_pid:
            cfg.app_pids = [st.server.app_pid]
        if cfg.sidecar_pids:
            for pid in cfg.sidecar_pids:
                if not Path(f"/proc/{pid}").exists():
                    raise TargetNotFound(f"no process with PID {pid}")
            mesh = _mesh_of(
                cfg.sidecar_pids,
                proxy_build=st.envoy_version,
                proxy_concurrency=st.concurrency,
                mtls_enabled=bool(st.mtls),
            )
        else:
            mesh = MeshInfo(evidence=f"testbed {st.name} has no sidecar (--sidecar none)")
    if cfg.baseline_testbed:
        st = _testbed_state(Path(cfg.baseline_testbed))
        cfg.baseline_target, cfg.baseline_netns = st.url, st.client.netns
        if not cfg.baseline_app_pids and st.server.app_pid:
            cfg.baseline_app_pids = [st.server.app_pid]
    if not cfg.target:
        raise UsageError("give --target URL or --testbed STATE_DIR")
    check_url(cfg.target)
    if cfg.baseline_target:
        check_url(cfg.baseline_target, "--baseline-target")
    if cfg.generator not in GENERATORS:
        raise UsageError(f"bad --load-generator {cfg.generator!r}: use {'|'.join(GENERATORS)}")
    if cfg.repeat < 1 or cfg.connections < 1:
        raise UsageError("--repeat and --connections must be at least 1")
    if cfg.step_duration_s <= 0 or cfg.warmup_s < 0:
        raise UsageError("--step-duration must be > 0 and --warmup >= 0")
    for pid in cfg.sidecar_pids + cfg.app_pids + cfg.baseline_app_pids:
        if not Path(f"/proc/{pid}").exists():
            raise TargetNotFound(f"no process with PID {pid}")
    if not 0.0 <= cfg.max_error_rate <= 1.0:
        raise UsageError(f"bad --max-error-rate {cfg.max_error_rate:g}: use 0..1 (0.01 = 1%)")
    if cfg.sidecar_pids and not cfg.testbed:
        mesh = _mesh_of(cfg.sidecar_pids)
    return cfg, mesh


# ----- the parts the run drives ---------------------------------------------------------


def default_load_fn() -> LoadFn:
    """``profiler.loadgen.run_load``, which dispatches on ``spec.generator``."""
    from profiler.loadgen import run_load

    return run_load


class _SharedCapture:
    """Captures of every window of a run on one attached probe: compiled and attached once
    (2-3 s saved per window), closed at the end of the run."""

    def __init__(self) -> None:
        self._engine: Any = None

    def __call__(self, sidecar_pids: list[int], app_pids: list[int]) -> CaptureSession:
        from profiler.capture import CaptureConfig, start_capture
        from profiler.capture.engine import Engine

        if self._engine is None:
            self._engine = Engine(keep_spans=True, ringbuf_pages=256)
        config = CaptureConfig(sidecar_pids=sidecar_pids, app_pids=app_pids, duration_s=None)
        return start_capture(config, engine=self._engine)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None


def default_capture_fn() -> CaptureFn:
    """Captures through ``profiler.capture``, one probe for the whole run."""
    return _SharedCapture()


def check_reachable(url: str, netns: str | None, timeout_s: float = 3.0) -> None:
    """One TCP connect to the target (inside ``netns`` when given), or TargetUnreachable."""
    u = urlsplit(url)
    host, port = u.hostname or "", u.port or 80
    if netns is None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
        except OSError as e:
            raise TargetUnreachable(f"cannot connect to {url}: {e.strerror or e}") from None
        return
    if not Path("/run/netns", netns).exists():
        raise TargetNotFound(f"network namespace '{netns}' does not exist (ip netns list)")
    code = (
        "import socket,sys\ntry: socket.create_connection((sys.argv[1], int(sys.argv[2])), "
        "float(sys.argv[3])).close()\nexcept OSError as e: sys.exit(str(e.strerror or e))"
    )
    r = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", code, host, str(port), str(timeout_s)],
        capture_output=True,
        text=True,
        timeout=timeout_s + 10,
        check=False,
    )
    if r.returncode != 0:
        why = (r.stderr.strip().splitlines() or ["no answer"])[-1]
        raise TargetUnreachable(f"cannot connect to {url} from netns {netns}: {why}")


def _load_polling(load_fn: LoadFn, spec: LoadSpec, session: CaptureSession) -> LoadResult:
    """Run the load in a thread while this thread consumes the capture's events."""
    poll = getattr(session, "poll", None)
    if poll is None:
        return load_fn(spec)
    box: dict[str, Any] = {}

    def drive() -> None:
        try:
            box["result"] = load_fn(spec)
        except BaseException as e:  # re-raised in the caller's thread
            box["error"] = e

    t = threading.Thread(target=drive, name="smp-load", daemon=True)
    t.start()
    while t.is_alive():
        poll(100)
    t.join()
    if "error" in box:
        raise box["error"]
    result: LoadResult = box["result"]
    return result


def plan(cfg: RunConfig, captured: bool) -> list[Window]:
    roles = [("mesh", cfg.target, cfg.netns)]
    if cfg.baseline_target:
        roles.append(("baseline", cfg.baseline_target, cfg.baseline_netns))
    return [
        Window(
            i,
            rate,
            role,
            rep,
            target,
            ns,
            captured and (role == "mesh" or bool(cfg.baseline_app_pids)),
        )
        for i, rate in enumerate(cfg.rates)
        for rep in range(cfg.repeat)
        for role, target, ns in roles
    ]


def execute(
    cfg: RunConfig,
    mesh: MeshInfo,
    *,
    load_fn: LoadFn | None = None,
    capture_fn: CaptureFn | None = None,
    reporter: Reporter | None = None,
    seed: int | None = None,
) -> RunBundle:
    """Run the whole plan and return the bundle (nothing is written here). Stopped early
    (Ctrl-C, an error) after at least one mesh window: RunInterrupted with the partial bundle."""
    load_fn = load_fn or default_load_fn()
    notes: list[str] = []
    if cfg.sidecar_pids and capture_fn is None:
        capture_fn = default_capture_fn()
    reporter = reporter or QuietReporter()
    check_reachable(cfg.target, cfg.netns)
    if cfg.baseline_target:
        check_reachable(cfg.baseline_target, cfg.baseline_netns)
    windows = plan(cfg, bool(cfg.sidecar_pids) and capture_fn is not None)
    created = datetime.now(UTC)
    reporter.begin(windows, len(windows) * (cfg.warmup_s + cfg.step_duration_s))
    records: list[StepRecord] = []

    def bundle(records: list[StepRecord], notes: list[str]) -> RunBundle:
        return _bundle(cfg, mesh, records, notes, created, seed)

    try:
        _run_windows(cfg, windows, records, notes, load_fn, capture_fn, reporter)
    except (KeyboardInterrupt, SmpError) as e:
        done = {r.step for r in records if r.role == "mesh"}
        if not done:
            raise
        why = "Ctrl-C" if isinstance(e, KeyboardInterrupt) else str(e)
        kept = [r for r in records if r.step in done]
        left = [rate_label(r) for i, r in enumerate(cfg.rates) if i not in done]
        notes.append(
            f"run interrupted ({why}) after {len(records)} of {len(windows)} windows: partial "
            f"results" + (f"; rates not measured: {', '.join(left)}" if left else "")
        )
        raise RunInterrupted(bundle(kept, notes), e) from e
    finally:
        reporter.end()
        close = getattr(capture_fn, "close", None)
        if callable(close):
            close()
    return bundle(records, notes)


class RunInterrupted(SmpError):
    """The run stopped early (Ctrl-C, a sidecar off the path, a dying target): what it
    measured so far, as a bundle, and why. Its exit code is the cause's (130 for Ctrl-C), so a
    caller that does not write the bundle still ends with one line, never a traceback."""

    def __init__(self, bundle: RunBundle, cause: BaseException) -> None:
        why = "interrupted (Ctrl-C)" if isinstance(cause, KeyboardInterrupt) else str(cause)
        super().__init__(why or type(cause).__name__)
        self.bundle, self.cause = bundle, cause
        self.exit_code = cause.exit_code if isinstance(cause, SmpError) else 130


class SidecarNotOnPath(TargetNotFound):
    """The captured sidecar saw none of the run's requests: it is not the target's sidecar."""


def _bundle(
    cfg: RunConfig,
    mesh: MeshInfo,
    records: list[StepRecord],
    notes: list[str],
    created: datetime,
    seed: int | None,
) -> RunBundle:
    """The bundle of ``records``: a partial run keeps only the steps it measured."""
    from profiler.discovery.environment import detect_environment

    steps = sorted({r.step for r in records})
    if steps != list(range(len(cfg.rates))):
        renumber = {old: new for new, old in enumerate(steps)}
        cfg = replace(cfg, rates=[cfg.rates[i] for i in steps])
        records = [replace(r, step=renumber[r.step]) for r in records]
    return RunBundle(
        config=cfg,
        mesh=mesh,
        environment=detect_environment(),
        records=records,
        test_id=str(uuid.uuid4()),
        mesh_config_id=str(uuid.uuid4()),
        env_id=str(uuid.uuid4()),
        result_ids=[str(uuid.uuid4()) for _ in cfg.rates],
        created=created,
        tool_version=__version__,
        seed=seed if seed is not None else uuid.uuid4().int % (2**32),
        notes=notes,
    )


def _sidecar_check(cfg: RunConfig, w: Window, rec: StepRecord, notes: list[str]) -> bool:
    """After the first captured mesh window with responses: a sidecar that proxied none of its
    requests is not on the path (a wrong --sidecar-pid); the run stops rather than report
    its costs. True once checked."""
    # Only successes prove the path: an Envoy whose app is gone answers 503 itself and
    # proxies nothing, yet it is on the path (the error rate tells that story).
    if rec.capture is None or rec.load.successes == 0:
        return False
    seen = {
        int(sc.get("pid", 0)): int(sc.get("requests") or 0)
        for sc in rec.capture.get("sidecars", [])
    }
    idle = [pid for pid in cfg.sidecar_pids if seen.get(pid, 0) == 0]
    if idle and len(idle) == len(cfg.sidecar_pids):
        raise SidecarNotOnPath(
            f"sidecar PID {', '.join(map(str, idle))} proxied 0 of the {rec.load.successes} "
            f"successful requests to {cfg.target}: it is not on the path (check --sidecar-pid)"
        )
    notes.extend(
        f"sidecar PID {pid} proxied 0 of the {rec.load.successes} successful requests of "
        f"step {w.step}"
        for pid in idle
    )
    return True


def _run_windows(
    cfg: RunConfig,
    windows: list[Window],
    records: list[StepRecord],
    notes: list[str],
    load_fn: LoadFn,
    capture_fn: CaptureFn | None,
    reporter: Reporter,
) -> None:
    checked = False
    for w in windows:
        spec = LoadSpec(
            generator=cfg.generator,
            target=w.target,
            rate=w.rate or None,
            duration_s=cfg.step_duration_s,
            connections=cfg.connections,
            netns=w.netns,
        )
        session = None
        if w.captured and capture_fn is not None:
            # A separate warm-up, so that the capture covers the measured load only.
            if cfg.warmup_s > 0:
                reporter.start(w, "warm-up")
                load_fn(replace(spec, duration_s=cfg.warmup_s))
            reporter.start(w, "measure")
            if w.role == "mesh":
                session = capture_fn(cfg.sidecar_pids, cfg.app_pids)
            else:  # the baseline's app: both paths then carry the probes' cost
                session = capture_fn([], cfg.baseline_app_pids)
        else:  # nothing to align with: the generator's own (unmeasured) warm-up
            spec = replace(spec, warmup_s=cfg.warmup_s)
            reporter.start(w, "warm-up + measure")
        try:
            load = load_fn(spec) if session is None else _load_polling(load_fn, spec, session)
        finally:
            capture = session.stop() if session is not None else None
        # The ids served the capture's matching; kept, they would be most of the bundle.
        load = replace(load, request_ids=None)
        rec = StepRecord(w.step, w.rate, w.role, w.repetition, load, capture)
        if not load.target_reached:
            notes.append(
                f"step {w.step} {w.role} rep {w.repetition}: asked {rate_label(w.rate)} req/s, "
                f"achieved {load.success_rate:.1f} successful"
            )
        records.append(rec)
        reporter.done(w, rec)
        if not checked and w.role == "mesh" and capture is not None:
            checked = _sidecar_check(cfg, w, rec, notes)
