"""The README's tour, run as written: its commands are parsed out of README.md, so the test
fails when the README drifts from the product.

Two substitutions, both said here: the testbed name ``demo`` becomes a unique one (helpers
and CI share the machine), and when ``sudo`` is not installed (a root shell, as in CI) a
stand-in runs the command with sudo's ``secure_path`` and this checkout's venv first (the
real ``sudo`` would find /usr/local/bin/smp-profiler, which the second test checks).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SECURE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
VENV_BIN = Path(sys.executable).parent


def tour_commands(readme: str) -> list[str]:
    """The lines of the first ``sh`` block under ``## A tour``."""
    section = readme.split("## A tour", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, "README.md: no sh block under '## A tour'"
    return [ln for ln in block.group(1).splitlines() if ln.strip()]


def test_tour_is_what_this_test_expects() -> None:
    lines = tour_commands((REPO / "README.md").read_text())
    assert any("capture" in ln and "testbed" in ln for ln in lines)
    # traffic runs while the capture does: the capture would show 0 requests otherwise
    load = next(i for i, ln in enumerate(lines) if "testbed load" in ln)
    capture = next(i for i, ln in enumerate(lines) if " capture " in ln)
    assert lines[load].split("#")[0].rstrip().endswith("&") and load < capture
    assert "pgrep" not in "\n".join(lines), "a PID picker that breaks with two Envoys"


@pytest.mark.bpf
@pytest.mark.testbed
@pytest.mark.envoy
@pytest.mark.slow
def test_readme_tour_runs_verbatim(tmp_path: Path) -> None:
    from profiler.testbed import teardown

    name = f"r{secrets.token_hex(3)}"
    lines = tour_commands((REPO / "README.md").read_text())
    script = "\n".join(ln.replace("demo", name) for ln in lines)
    shim = tmp_path / "bin"
    shim.mkdir()
    if shutil.which("sudo") is None:
        (shim / "sudo").write_text(f'#!/bin/sh\nexec env PATH="{VENV_BIN}:{SECURE_PATH}" "$@"\n')
        (shim / "sudo").chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    (work / "tests").symlink_to(REPO / "tests")  # the tour runs from the repository
    env = {**os.environ, "PATH": f"{shim}:{VENV_BIN}:{os.environ['PATH']}"}
    try:
        r = subprocess.run(
            ["bash", "-e", "-x", "-c", script],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        teardown(name)
    log = f"{r.stdout[-4000:]}\n{r.stderr[-6000:]}"
    assert r.returncode == 0, log
    assert "Traceback" not in r.stderr, log

    cap = json.loads((work / "capture.json").read_text())
    requests = sum(s["requests"] for s in cap["sidecars"])
    # 100 req/s for 20 s around a 10 s window: about 1,000 in it (start-up eats some)
    assert requests >= 500, f"the tour's capture saw {requests} requests\n{log}"
    assert cap["complete"] is True and cap["drops"] == 0
    for run in ("run.json", "run2.json"):
        steps = json.loads((work / run).read_text())["details"]["steps"]
        assert [s["rate_asked"] for s in steps] == [100, 500, 1000]
    assert (work / "report.html").stat().st_size > 10_000
    assert json.loads((work / "smp.json").read_text())
    assert f"testbed '{name}' down" in r.stdout, log


def test_smp_profiler_is_on_sudos_path() -> None:
    """``make setup`` links /usr/local/bin/smp-profiler: sudo's secure_path drops the venv."""
    if os.geteuid() != 0:
        pytest.skip("the link is made by make setup run as root")
    exe = shutil.which("smp-profiler", path=SECURE_PATH)
    assert exe, "smp-profiler is not on sudo's PATH: make setup links /usr/local/bin/"
    r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("smp-profiler "), r.stderr
