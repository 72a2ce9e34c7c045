"""The HTML report of a real testbed run (Envoy sidecar + no-sidecar baseline, captured with the
real probes, 2 rates x 2 s), loaded in Debian's headless Chromium without network: no console
errors, every plot present, a screenshot under the test's tmp dir."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from profiler.cli import main
from profiler.legs import SPLIT
from tests import html_series as hs

CHROMIUM = "/usr/bin/chromium"
PLOTS = ("legs", "queue", "cdf", "cost", "overhead")
CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\]? ?(.*)")


def chromium(tmp: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """One headless Chromium run, no network, its own profile; the whole group dies after."""
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        f"--user-data-dir={tmp / 'chromium-profile'}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
        url,
    ]
    p = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = p.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):  # helpers left behind, if any
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    return subprocess.CompletedProcess(cmd, p.returncode, out, err)


def console_messages(stderr: str) -> list[str]:
    return [m.group(1) for line in stderr.splitlines() if (m := CONSOLE.search(line))]


@pytest.mark.browser
def test_console_errors_are_caught(tmp_path: Path) -> None:
    """The check below can fail: a page that logs an error is seen as one."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><script>console.error("smp-boom")</script>')
    r = chromium(tmp_path, page.as_uri(), "--dump-dom")
    assert any("smp-boom" in m for m in console_messages(r.stderr)), r.stderr[-2000:]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from profiler.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=180
    )


@pytest.mark.browser
@pytest.mark.testbed
@pytest.mark.envoy
@pytest.mark.bpf
@pytest.mark.slow  # ~40 s: two testbeds, the probes' attach, 4 windows, two Chromium runs
def test_html_report_of_a_real_run_in_chromium(tmp_path: Path, testbed_factory: Any) -> None:
    mesh = testbed_factory(sidecar="envoy")
    base = testbed_factory(sidecar="none")
    result = tmp_path / "result.json"
    r = _cli(
        "run",
        "--testbed",
        str(mesh.state.state_dir),
        "--baseline-testbed",
        str(base.state.state_dir),
        "--rates",
        "100,200",
        "--step-duration",
        "2s",
        "--warmup",
        "0.5s",
        "--connections",
        "4",
        "-o",
        str(result),
    )
    assert r.returncode == 0, r.stderr
    html = tmp_path / "report.html"
    assert main(["report", str(result), "-o", str(html)]) == 0
    text = html.read_text()
    assert "<script" not in text

    dom = chromium(tmp_path, html.as_uri(), "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert console_messages(dom.stderr) == []
    for plot in PLOTS:
        m = re.search(rf'<figure id="plot-{plot}".*?</figure>', dom.stdout, re.S)
        assert m, f"plot {plot} is missing from the DOM"
        assert "<svg" in m.group(0), f"plot {plot} is empty"
    # what is drawn is the bundle's numbers (an empty axes has <path>s too)
    steps = json.loads(result.read_text())["details"]["steps"]

    def pts(f: Any) -> list[tuple[float, float]]:
        return [(s["mesh"]["rate_achieved"], f(s)) for s in steps]

    cost = hs.figure(dom.stdout, "cost")
    hs.check_drawn(cost, "cpu-cores", pts(lambda s: s["sidecar"]["cpu_mcores"] / 1000))
    hs.check_drawn(cost, "rss-mib", pts(lambda s: s["sidecar"]["mem_mb"]["rss"]))
    over = hs.figure(dom.stdout, "overhead")
    hs.check_drawn(over, "ab-p50", pts(lambda s: s["overhead"]["p50"]["delta_ms"]))
    hs.check_drawn(over, "ebpf-p50", pts(lambda s: s["sidecar"]["legs"]["sidecar_total"]["p50_ms"]))
    # queue vs work: each part's bars are the details' p50 of that leg, at one scale
    queue = hs.figure(dom.stdout, "queue")
    drawn = hs.series(queue)
    scale = []
    for parts in SPLIT.values():
        for name in parts:
            want = [(float(i), s["sidecar"]["legs"][name]["p50_ms"]) for i, s in enumerate(steps)]
            if name in parts[1:] or name in drawn:  # a queue without any stamp is not drawn
                assert drawn[name] == want, (name, drawn.get(name), want)
            for j, d in re.findall(rf'<g id="series-{name}-(\d+)">\s*<path d="([^"]*)"', queue):
                ys = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", d)][1::2]
                if want[int(j)][1] > 0.005:  # a bar tall enough to measure
                    scale.append((max(ys) - min(ys)) / want[int(j)][1])
    assert scale and max(scale) / min(scale) < 1.02, scale
    assert 'id="smp-documents"' in dom.stdout
    assert "the sidecar adds" in dom.stdout

    png = tmp_path / "report.png"
    shot = chromium(
        tmp_path,
        html.as_uri(),
        f"--screenshot={png}",
        "--window-size=1280,2400",
        "--hide-scrollbars",
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert console_messages(shot.stderr) == []
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
