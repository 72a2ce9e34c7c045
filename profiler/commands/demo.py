"""``smp-profiler demo``: build a mesh and a baseline testbed, sweep, write, always tear down."""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Annotated

import typer

from profiler import capabilities, outputs
from profiler.errors import OutputNotWritable, UsageError

RATES = [100.0, 500.0, 1000.0]
STEP_S = 10.0
WARMUP_S = 1.0
CONNECTIONS = 16
FILES = ("result.json", "result.yaml", "report.html")


def main(
    output_dir: Path,
    rates: list[float] | None = None,
    step_s: float = STEP_S,
    warmup_s: float = WARMUP_S,
    name: str | None = None,
) -> int:
    from profiler import runner
    from profiler.commands.console import RichReporter, console, queue_summary, summary_table
    from profiler.model import RunConfig, dumps
    from profiler.smp.bundle import bundle_json
    from profiler.testbed import Testbed, TestbedConfig

    capabilities.require_admin("demo (it builds a local testbed)")
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(f"bad --output-dir {output_dir}: not a directory")
    if not output_dir.parent.is_dir():
        raise OutputNotWritable(
            f"bad --output-dir {output_dir}: {output_dir.parent} does not exist (create it first)"
        )
    output_dir.mkdir(exist_ok=True)  # the directory asked for, never its parents
    for file in FILES:
        outputs.check(output_dir / file, "--output-dir")
    out = console()
    name = name or f"demo-{secrets.token_hex(3)}"
    t0 = time.monotonic()
    beds: list[Testbed] = []
    try:
        out.print(f"building testbeds {name}-m (Envoy sidecar) and {name}-b (no sidecar)")
        mesh_tb = Testbed.up(TestbedConfig(name=f"{name}-m", sidecar="envoy"))
        beds.append(mesh_tb)
        base_tb = Testbed.up(TestbedConfig(name=f"{name}-b", sidecar="none"))
        beds.append(base_tb)
        out.print(f"testbeds up in {time.monotonic() - t0:.1f} s")
        cfg = RunConfig(
            target="",
            rates=list(rates or RATES),
            step_duration_s=step_s,
            warmup_s=warmup_s,
            repeat=1,
            generator="builtin",
            connections=CONNECTIONS,
            testbed=mesh_tb.state.state_dir,
            baseline_testbed=base_tb.state.state_dir,
        )
        cfg, mesh = runner.resolve(cfg)
        bundle = runner.execute(cfg, mesh, reporter=RichReporter(out))
    finally:
        for tb in reversed(beds):
            try:
                tb.down()
            except Exception as e:  # keep tearing down the others; say what was left
                out.print(f"[red]teardown of {tb.state.name} failed:[/] {e}")
    doc = bundle_json(bundle)
    path = outputs.save_text(output_dir / "result.json", dumps(doc, "json"))
    saved = [path, outputs.save_text(output_dir / "result.yaml", dumps(doc, "yaml"))]
    out.print(summary_table(doc))
    from profiler import report

    src = report.load(path)  # the file as written: the summary and the HTML report read it
    if (queue := queue_summary(src)) is not None:
        out.print(queue)
    for note in bundle.notes:
        out.print(f"[yellow]note:[/] {note}")
    html = report.get("html").render(src)
    saved.append(outputs.save_text(output_dir / "report.html", html))
    out.print(f"demo took {time.monotonic() - t0:.0f} s; testbeds torn down")
    print(f"results in {output_dir.resolve()}/ (result.json, result.yaml, report.html)")
    print(f"HTML report: {saved[-1].resolve()}")
    moved = [p for p, file in zip(saved, FILES, strict=True) if p != output_dir / file]
    return OutputNotWritable.exit_code if moved else 0


def command(
    output_dir: Annotated[Path, typer.Option(help="Where results go.")] = Path("smp-results"),
) -> None:
    """Build the local node, run a short sweep with the profiler, write the results, tear down."""
    raise typer.Exit(main(output_dir=output_dir))
