"""``smp-profiler testbed up|down|status``: the local node, from the command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Annotated

import typer

from profiler import capabilities
from profiler.commands import exits
from profiler.errors import BadInputFile, TargetUnreachable, TestbedError, UsageError

app = typer.Typer(
    help="Build a local node from real parts: pods, a real Envoy sidecar, Istio's capture.",
    no_args_is_help=True,
)
NAME = typer.Option("--name", help="Testbed name: derives its netns, bridge and subnet.")
STATE = typer.Option(
    "--state-dir", help="Where testbed.json and logs go (default: /run/smp-profiler/testbed-NAME)."
)


def _state_dir(name: str, state_dir: Path | None) -> Path:
    from profiler.testbed.config import TestbedConfig

    return TestbedConfig(name=name, state_dir=state_dir).resolved_state_dir


def up(
    name: Annotated[str, NAME] = "smp",
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
    state_dir: Annotated[Path | None, STATE] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the description as JSON.")
    ] = False,
) -> int:
    """Build the node: pods, an Envoy sidecar, iptables capture."""
    from profiler.testbed import Testbed, TestbedConfig, parse_duration, parse_size

    cfg = TestbedConfig(
        name=name,
        sidecar=sidecar,
        client_sidecar=client_sidecar,
        mtls=mtls,
        concurrency=concurrency,
        app_delay_s=parse_duration(app_delay),
        response_size=parse_size(response_size),
        state_dir=state_dir,
    )
    st = Testbed.up(cfg).state
    if json_out:
        print(json.dumps(st.to_json(), indent=2))
        return 0
    path = "server sidecar -> app" if st.sidecar == "envoy" else "app (no sidecar)"
    if st.client_sidecar:
        path = "client sidecar -> " + path
    print(f"testbed '{st.name}' up in {st.up_seconds:.2f}s: {st.subnet} on bridge {st.bridge}")
    print(f"  url        {st.url}  ({path}{', mTLS' if st.mtls else ''})")
    for pod in (st.server, st.client):
        pids = ", ".join(
            f"{k}={v}" for k, v in (("app", pod.app_pid), ("envoy", pod.envoy_pid)) if v
        )
        print(f"  {pod.name:<10} netns {pod.netns}  ip {pod.ip}  {pids}")
    if st.access_log:
        print(f"  access log {st.access_log}")
    print(f"  state      {Path(st.state_dir) / 'testbed.json'}")
    print(f"  load from the client pod: ip netns exec {st.client.netns} wrk -c 8 -t 1 {st.url}")
    return 0


def down(
    name: Annotated[str, NAME] = "smp",
    state_dir: Annotated[Path | None, STATE] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print what was removed.")] = False,
) -> int:
    """Remove everything the testbed made (safe to run twice or after a crash)."""
    from profiler.testbed import Testbed, teardown

    capabilities.require_admin("testbed down")
    d = _state_dir(name, state_dir)
    try:
        tb = Testbed.load(d)
        removed = tb.down()
        name = tb.state.name
    except BadInputFile:
        removed = teardown(name)  # no (readable) description: clean up by the derived names
        if state_dir is None and d.is_dir() and not any(d.glob("*.json")):
            shutil.rmtree(d, ignore_errors=True)  # the default dir of a crashed run: logs only
    if json_out:
        print(json.dumps({"name": name, "removed": removed}, indent=2))
    elif removed:
        print(f"testbed '{name}' down: removed {len(removed)} objects")
    else:
        print(f"testbed '{name}': nothing to remove")
    return 0


def status(
    name: Annotated[str, NAME] = "smp",
    state_dir: Annotated[Path | None, STATE] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print state and checks.")] = False,
) -> int:
    """Re-read the testbed's description and check it is all there."""
    from profiler.testbed import Testbed, leftovers

    capabilities.require_admin("testbed status")
    d = _state_dir(name, state_dir)
    try:
        tb = Testbed.load(d)
    except BadInputFile as e:
        left = leftovers(name)
        extra = f"; leftovers: {', '.join(left)} (run testbed down)" if left else ""
        raise TestbedError(f"no testbed '{name}' is up ({e}){extra}") from None
    checks = tb.status()
    bad = [c for c in checks if not c.ok]
    if json_out:
        doc = {"state": tb.state.to_json(), "checks": [c.to_json() for c in checks]}
        print(json.dumps({**doc, "ok": not bad}, indent=2))
    else:
        for c in checks:
            print(f"  {'ok ' if c.ok else 'BAD'} {c.name:<24} {c.detail}")
    if bad:
        raise TestbedError(f"testbed '{tb.state.name}' is broken: {bad[0].name}: {bad[0].detail}")
    if not json_out:
        print(f"testbed '{tb.state.name}' is up: {tb.state.url}")
    return 0


def load(
    name: Annotated[str, NAME] = "smp",
    state_dir: Annotated[Path | None, STATE] = None,
    rate: Annotated[float, typer.Option(help="Requests per second.")] = 100.0,
    duration: Annotated[str, typer.Option(help="How long, e.g. 20s.")] = "10s",
    connections: Annotated[int, typer.Option(help="Connections.")] = 4,
) -> int:
    """Send requests from the client pod to the server pod (traffic for a capture)."""
    """Requests from the client pod to the server pod (the builtin generator), e.g. while a
    capture runs. Exit 0 when every request succeeded, 1 when some failed."""
    from profiler.loadgen import run_load
    from profiler.loadgen.result import LoadSpec
    from profiler.testbed import Testbed, parse_duration

    capabilities.require_admin("testbed load")
    seconds = parse_duration(duration)
    if seconds <= 0 or rate <= 0 or connections < 1:
        raise UsageError("--duration and --rate must be positive, --connections at least 1")
    st = Testbed.load(_state_dir(name, state_dir)).state
    res = run_load(
        LoadSpec(
            generator="builtin",
            target=st.url,
            rate=rate,
            duration_s=seconds,
            connections=connections,
            netns=st.client.netns,
        )
    )
    if res.requests == 0 and res.error_count == 0:
        raise TargetUnreachable(f"no request to {st.url} completed in {duration}")
    p50, p99 = res.percentiles_ms.get(50.0), res.percentiles_ms.get(99.0)
    lat = "" if p50 is None or p99 is None else f", p50 {p50:.3f} ms, p99 {p99:.3f} ms"
    print(
        f"testbed '{st.name}' load: {res.requests} requests to {st.url} in {res.duration_s:.1f} s"
        f" ({res.rate_achieved:.1f} of {rate:g} req/s{lat}), {res.error_count} errors"
    )
    return 0 if res.error_count == 0 else 1


for _name, _main in (("up", up), ("down", down), ("status", status), ("load", load)):
    app.command(_name)(exits(_main))
