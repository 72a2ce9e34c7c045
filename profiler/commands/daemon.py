"""``smp-profiler daemon``: the node agent of the DaemonSet.

Discovers sidecars (Kubernetes pod watch, or ``--no-kubernetes`` by process name and cgroup),
keeps the capture engine's targets in step, and serves ``/metrics``, ``/healthz`` and
``/readyz``. SIGTERM (and SIGINT) detach every target, flush a last snapshot and exit 0.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Annotated

import typer

from profiler.commands import exits
from profiler.daemon import POLL_MS
from profiler.errors import UsageError

# The daemon's default niceness (docs/daemonset.md, "What the agent costs"): its polls and
# snapshots yield to the sidecars on a busy core instead of delaying their requests.
NICE = 10
POLL_MS_RANGE = (10, 5000)  # --poll-ms


def _sidecar_names(values: Sequence[str]) -> tuple[str, ...]:
    names = tuple(n.strip() for v in values for n in v.split(",") if n.strip())
    if not names:
        raise UsageError("--sidecar-names needs at least one container name")
    return names


def main(
    metrics_port: Annotated[int, typer.Option(help="Port of /metrics, /healthz, /readyz.")] = 9464,
    metrics_address: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
    node_name: Annotated[
        str | None, typer.Option(help="This node's name (default: $NODE_NAME).")
    ] = None,
    no_kubernetes: Annotated[
        bool,
        typer.Option("--no-kubernetes", help="Find sidecars by process name and cgroup only."),
    ] = False,
    kubeconfig: Annotated[
        str | None, typer.Option(help="kubeconfig file (default: in-cluster, ~/.kube/config).")
    ] = None,
    sidecar_names: Annotated[
        list[str] | None,
        typer.Option(help="Sidecar container names (repeatable or comma-separated)."),
    ] = None,
    interval: Annotated[float, typer.Option(help="Seconds between reconciles/snapshots.")] = 5.0,
    cgroup_root: Annotated[
        str | None, typer.Option(help="Only look for containers below this cgroup directory.")
    ] = None,
    nice: Annotated[
        int,
        typer.Option(
            help="CPU niceness the daemon runs at (-20..19): above 0 its batches wait for the "
            "sidecars it measures, not they for it. 0 keeps the one it was started with."
        ),
    ] = NICE,
    poll_ms: Annotated[
        int,
        typer.Option(
            help="Longest wait in ms for the probe's records between two looks at the node "
            "(sooner when its ring is half full): longer makes bigger batches, less CPU per "
            "request, and a later reaction to a stop or a new pod."
        ),
    ] = POLL_MS,
) -> int:
    """Run as the node agent of the DaemonSet: discover sidecars, probe, export metrics."""
    kubernetes = not no_kubernetes
    sidecar_names = sidecar_names or ["istio-proxy", "linkerd-proxy"]
    if not interval > 0:
        raise UsageError(f"--interval must be positive, not {interval}")
    if not -20 <= nice <= 19:
        raise UsageError(f"--nice must be between -20 and 19, not {nice}")
    if not POLL_MS_RANGE[0] <= poll_ms <= POLL_MS_RANGE[1]:
        lo, hi = POLL_MS_RANGE
        raise UsageError(f"--poll-ms must be between {lo} and {hi}, not {poll_ms}")
    if not 0 <= metrics_port <= 65535:
        raise UsageError(f"--metrics-port {metrics_port} is not a port number")
    if cgroup_root is not None and not os.path.isdir(cgroup_root):
        raise UsageError(f"--cgroup-root {cgroup_root} is not a directory")
    names = _sidecar_names(sidecar_names)
    node_name = node_name or os.environ.get("NODE_NAME") or None

    from profiler.daemon.agent import DiscoverySource, KubernetesDiscovery, NodeDiscovery, renice

    renice(nice)  # every thread so far; the ones started later inherit it

    source: DiscoverySource
    if kubernetes:
        if node_name is None:
            raise UsageError(
                "Kubernetes discovery needs --node-name (or NODE_NAME); "
                "use --no-kubernetes on a node without an API server"
            )
        from profiler.discovery.kubernetes import PodSet, PodWatcher, core_api

        watcher = PodWatcher(PodSet(sidecar_names=names), node_name, core_api(kubeconfig))
        source = KubernetesDiscovery(watcher, cgroup_root=cgroup_root)
    else:
        source = NodeDiscovery(cgroup_root=cgroup_root)

    from prometheus_client import CollectorRegistry, ProcessCollector

    from profiler.daemon.agent import Agent, EngineLike
    from profiler.daemon.metrics import SnapshotCollector
    from profiler.daemon.server import MetricsServer

    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    # installed before the probes load (seconds of compiling): a SIGTERM then still exits 0
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        logging.getLogger(__name__).info("signal %d: detaching and exiting", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def load_engine() -> EngineLike:
        from profiler.capture import engine as engine_module

        return engine_module.Engine()

    registry = CollectorRegistry()
    collector = SnapshotCollector(node=node_name or os.uname().nodename)
    # The probes load in the agent's thread, with retries: the endpoints answer at once and
    # a node that cannot run BPF keeps a pod that says why (/readyz 503, smp_agent_up).
    agent = Agent(
        None,
        source,
        collector,
        interval=interval,
        poll_ms=poll_ms,
        load_engine=load_engine,
        preflight=_doctor,
    )
    collector.health = agent.health
    registry.register(collector)
    ProcessCollector(registry=registry)  # the daemon's own CPU and RSS: its overhead
    server = MetricsServer(registry, agent.ready, agent.alive, metrics_port, metrics_address)
    server.start()
    mode = f"Kubernetes node {node_name}" if kubernetes else "node-only discovery"
    print(
        f"smp-profiler daemon: {mode}, metrics on {metrics_address}:{server.port}",
        file=sys.stderr,
        flush=True,
    )
    try:
        agent.run(stop)
    finally:
        server.stop()
    return 0


def _doctor() -> tuple[bool, str]:
    """The full capability check of ``smp-profiler doctor`` (compiles a test program): run
    once, when the probes first fail to load, for the log and the not-ready reason."""
    from profiler import capabilities

    try:
        missing = capabilities.missing(capabilities.run_all())
    except Exception as e:  # a check that cannot even run is itself the answer
        return False, f"capability check failed: {e}"
    if missing:
        return False, "; ".join(f"{c.name}: {c.detail}" for c in missing)
    return True, "captures possible"


command = exits(main)
