"""The ``smp-profiler`` command line. It only parses and delegates.

Heavy imports (bcc, numpy, kubernetes) happen inside the command that needs them, so
``smp-profiler --help`` is instant and works without BCC or root.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

from profiler import __version__
from profiler.errors import Interrupted, PermissionDenied, SmpError

app = typer.Typer(
    name="smp-profiler",
    help="Measure what a service-mesh sidecar really costs, per request and per pod, with eBPF.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
testbed_app = typer.Typer(
    help="Build a local node from real parts: pods, a real Envoy sidecar, Istio's capture.",
    no_args_is_help=True,
)
app.add_typer(testbed_app, name="testbed")

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        print(f"smp-profiler {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    _state["debug"] = debug


def _exit(code: int) -> None:
    """Commands return an exit code; click ignores return values, so raise it."""
    raise typer.Exit(code)


@app.command()
def doctor(
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Check what this node can do: privileges, BPF, BCC, tracepoints, uprobes, headers."""
    from profiler.commands import doctor as cmd

    _exit(cmd.main(json_out=json_out))


@app.command()
def capture(
    pid: Annotated[
        list[int] | None,
        typer.Option("--pid", help="PID to trace (repeatable); proxies by name are sidecars."),
    ] = None,
    sidecar_pid: Annotated[
        list[int] | None, typer.Option("--sidecar-pid", help="Trace this PID as a sidecar.")
    ] = None,
    cgroup: Annotated[
        list[str] | None, typer.Option("--cgroup", help="A pod or container cgroup (v2 path).")
    ] = None,
    container_id: Annotated[
        list[str] | None, typer.Option("--container-id", help="A container of the pod.")
    ] = None,
    sidecar: Annotated[
        str, typer.Option(help="auto: the proxy (envoy, linkerd2-proxy) must be among them.")
    ] = "auto",
    duration: Annotated[str, typer.Option(help="How long to capture, e.g. 10s.")] = "10s",
    output: Annotated[Path, typer.Option("-o", "--output", help="Capture file to write.")] = Path(
        "capture.json"
    ),
    spans: Annotated[
        bool, typer.Option(help="Also write the per-request spans file (<output>.spans.csv).")
    ] = True,
    ringbuf_pages: Annotated[int, typer.Option(help="Ring buffer size in pages.")] = 256,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display.")] = False,
    testbed: Annotated[
        str | None,
        typer.Option(help="A local testbed (state dir or name): its sidecars and app."),
    ] = None,
) -> None:
    """Trace sidecar (and app) processes: per-leg latency, CPU and memory -> a capture file.

    Exit codes: 0 complete, 1 incomplete (a target exited), 130 interrupted (what was
    measured is written), 73 the output could not be written (saved elsewhere, said where)."""
    from profiler.commands import capture as cmd

    _exit(
        cmd.main(
            pid or [],
            sidecar_pid or [],
            cgroup or [],
            container_id or [],
            sidecar,
            duration,
            output,
            spans,
            ringbuf_pages,
            quiet,
            testbed,
        )
    )


@app.command()
def run(
    target: Annotated[str | None, typer.Option(help="URL to load (http://host:port/path).")] = None,
    rates: Annotated[str, typer.Option(help="Rate steps in req/s, e.g. 100,500,1000.")] = (
        "100,500,1000"
    ),
    step_duration: Annotated[str, typer.Option(help="Measured time per step, e.g. 10s.")] = "10s",
    warmup: Annotated[str, typer.Option(help="Load before each step, not measured.")] = "2s",
    repeat: Annotated[int, typer.Option(help="Repetitions of every step.")] = 1,
    load_generator: Annotated[
        str, typer.Option(help="builtin|wrk|hey|fortio|nighthawk.")
    ] = "builtin",
    connections: Annotated[int, typer.Option(help="Connections of the load generator.")] = 16,
    sidecar_pid: Annotated[
        list[int] | None, typer.Option("--sidecar-pid", help="Sidecar PID to capture (repeatable).")
    ] = None,
    app_pid: Annotated[
        list[int] | None, typer.Option("--app-pid", help="App PID to capture too (repeatable).")
    ] = None,
    testbed: Annotated[
        Path | None, typer.Option(help="Testbed state dir: target, netns and PIDs from it.")
    ] = None,
    baseline_target: Annotated[
        str | None, typer.Option(help="The same service without the sidecar (A/B).")
    ] = None,
    baseline_testbed: Annotated[
        Path | None, typer.Option(help="Testbed state dir of the no-sidecar baseline.")
    ] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Result bundle to write.")] = Path(
        "result.json"
    ),
    fmt: Annotated[
        str | None, typer.Option("--format", help="json|yaml [default: by the suffix of -o].")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the bootstrap.")] = None,
    max_error_rate: Annotated[
        float,
        typer.Option(help="Exit 6 (results written) when a step fails more requests (0.01 = 1%)."),
    ] = 0.01,
) -> None:
    """Drive load at fixed rates, capture each step, and write SMP results."""
    from profiler.commands import run as cmd

    _exit(
        cmd.main(
            target=target,
            rates=rates,
            step_duration=step_duration,
            warmup=warmup,
            repeat=repeat,
            load_generator=load_generator,
            connections=connections,
            sidecar_pid=sidecar_pid or [],
            app_pid=app_pid or [],
            testbed=testbed,
            baseline_target=baseline_target,
            baseline_testbed=baseline_testbed,
            output=output,
            fmt=fmt,
            seed=seed,
            max_error_rate=max_error_rate,
        )
    )


_WIDTH = typer.Option(help="Terminal width of the view [default: the terminal's].")


@app.command()
def report(
    file: Annotated[
        Path | None,
        typer.Argument(help="A capture, a run bundle, fortio or Nighthawk JSON, or SMP results."),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format", help="terminal|markdown|json|yaml|smp|html [default: by the -o suffix]."
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File to write [default: stdout].")
    ] = None,
    width: Annotated[int | None, _WIDTH] = None,
    prometheus: Annotated[
        str | None,
        typer.Option(help="Prometheus URL: the cluster-wide bundle from the DaemonSet's metrics."),
    ] = None,
    start: Annotated[
        str | None, typer.Option(help="Window start (RFC 3339, Unix seconds, now-15m).")
    ] = None,
    end: Annotated[str, typer.Option(help="Window end, with --prometheus.")] = "now",
    namespace: Annotated[
        str | None, typer.Option(help="Only this namespace's pods, with --prometheus.")
    ] = None,
) -> None:
    """Show a result file (terminal, markdown, JSON, YAML, SMP documents, HTML with plots)."""
    if file is None or prometheus is not None:
        from profiler.daemon import cluster

        _exit(cluster.main(prometheus, start, end, namespace, output, fmt, file))
    else:
        from profiler.commands import report as cmd

        _exit(cmd.main(file=file, fmt=fmt, output=output, width=width))


@app.command()
def compare(
    files: Annotated[list[Path], typer.Argument(help="Two or more bundles or captures.")],
    fmt: Annotated[str, typer.Option("--format", help="terminal|markdown|json.")] = "terminal",
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File to write [default: stdout].")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Compare even when CPU model or core count differ.")
    ] = False,
    width: Annotated[int | None, _WIDTH] = None,
) -> None:
    """Put two or more results side by side, with the differences and their significance."""
    from profiler.commands import compare as cmd

    _exit(cmd.main(files=files, fmt=fmt, output=output, force=force, width=width))


@app.command()
def demo(
    output_dir: Annotated[Path, typer.Option(help="Where results go.")] = Path("smp-results"),
) -> None:
    """Build the local node, run a short sweep with the profiler, write the results, tear down."""
    from profiler.commands import demo as cmd

    _exit(cmd.main(output_dir=output_dir))


@app.command()
def daemon(
    metrics_port: Annotated[int, typer.Option(help="Port of /metrics, /healthz, /readyz.")] = 9464,
    metrics_address: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
    node_name: Annotated[
        str | None, typer.Option(help="This node's name [default: $NODE_NAME].")
    ] = None,
    no_kubernetes: Annotated[
        bool,
        typer.Option("--no-kubernetes", help="Find sidecars by process name and cgroup only."),
    ] = False,
    kubeconfig: Annotated[
        str | None, typer.Option(help="kubeconfig file [default: in-cluster, ~/.kube/config].")
    ] = None,
    sidecar_names: Annotated[
        list[str] | None,
        typer.Option(help="Sidecar container names (repeatable or comma-separated)."),
    ] = None,
    interval: Annotated[float, typer.Option(help="Seconds between reconciles/snapshots.")] = 5.0,
    cgroup_root: Annotated[
        str | None, typer.Option(help="Only look for containers below this cgroup directory.")
    ] = None,
) -> None:
    """Run as the node agent of the DaemonSet: discover sidecars, probe, export metrics."""
    from profiler.commands import daemon as cmd

    _exit(
        cmd.main(
            metrics_port=metrics_port,
            metrics_address=metrics_address,
            node_name=node_name,
            kubernetes=not no_kubernetes,
            kubeconfig=kubeconfig,
            sidecar_names=sidecar_names or ("istio-proxy", "linkerd-proxy"),
            interval=interval,
            cgroup_root=cgroup_root,
        )
    )


_NAME = typer.Option("--name", help="Testbed name: derives its netns, bridge and subnet.")
_STATE = typer.Option(
    "--state-dir", help="Where testbed.json and logs go [default: /run/smp-profiler/testbed-NAME]."
)


@testbed_app.command("up")
def testbed_up(
    name: Annotated[str, _NAME] = "smp",
    sidecar: Annotated[
        str, typer.Option(help="envoy, or none for the no-mesh baseline.")
    ] = "envoy",
    client_sidecar: Annotated[
        bool, typer.Option("--client-sidecar", help="Give the client pod an Envoy too.")
    ] = False,
    mtls: Annotated[bool, typer.Option("--mtls", help="Sidecar-to-sidecar mutual TLS.")] = False,
    concurrency: Annotated[int, typer.Option(help="Envoy worker threads.")] = 1,
    app_delay: Annotated[str, typer.Option(help="App service time, e.g. 1ms.")] = "0",
    response_size: Annotated[str, typer.Option(help="App response body, e.g. 128, 4k.")] = "128",
    state_dir: Annotated[Path | None, _STATE] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the description as JSON.")
    ] = False,
) -> None:
    """Build the node: pods, an Envoy sidecar, iptables capture."""
    from profiler.commands import testbed as cmd

    _exit(
        cmd.up(
            name=name,
            sidecar=sidecar,
            client_sidecar=client_sidecar,
            mtls=mtls,
            concurrency=concurrency,
            app_delay=app_delay,
            response_size=response_size,
            state_dir=state_dir,
            json_out=json_out,
        )
    )


@testbed_app.command("down")
def testbed_down(
    name: Annotated[str, _NAME] = "smp",
    state_dir: Annotated[Path | None, _STATE] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print what was removed.")] = False,
) -> None:
    """Remove everything the testbed made (safe to run twice or after a crash)."""
    from profiler.commands import testbed as cmd

    _exit(cmd.down(name=name, state_dir=state_dir, json_out=json_out))


@testbed_app.command("status")
def testbed_status(
    name: Annotated[str, _NAME] = "smp",
    state_dir: Annotated[Path | None, _STATE] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print state and checks.")] = False,
) -> None:
    """Re-read the testbed's description and check it is all there."""
    from profiler.commands import testbed as cmd

    _exit(cmd.status(name=name, state_dir=state_dir, json_out=json_out))


@testbed_app.command("load")
def testbed_load(
    name: Annotated[str, _NAME] = "smp",
    state_dir: Annotated[Path | None, _STATE] = None,
    rate: Annotated[float, typer.Option(help="Requests per second.")] = 100.0,
    duration: Annotated[str, typer.Option(help="How long, e.g. 20s.")] = "10s",
    connections: Annotated[int, typer.Option(help="Connections.")] = 4,
) -> None:
    """Send requests from the client pod to the server pod (traffic for a capture)."""
    from profiler.commands import testbed as cmd

    _exit(
        cmd.load(
            name=name,
            state_dir=state_dir,
            rate=rate,
            duration=duration,
            connections=connections,
        )
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI; known errors become one line on stderr and an exit code."""
    try:
        app(args=argv, prog_name="smp-profiler")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except SmpError as e:
        if _state["debug"]:
            traceback.print_exc()
        print(f"smp-profiler: error: {e}", file=sys.stderr)
        return e.exit_code
    except PermissionError as e:  # a file or a syscall only root may use: same as PermissionDenied
        if _state["debug"]:
            traceback.print_exc()
        what = f"{e.strerror}: {e.filename}" if e.filename else (e.strerror or str(e))
        print(f"smp-profiler: error: {what} (run with sudo)", file=sys.stderr)
        return PermissionDenied.exit_code
    except KeyboardInterrupt:
        print("smp-profiler: interrupted", file=sys.stderr)
        return Interrupted.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
