"""Least privilege, tried for real: a normal user (UID 65534) and CAP_BPF+CAP_PERFMON alone.

Missing privileges are one line and exit 77 everywhere, never a traceback nor another code
("target unreachable"). What was measured on this machine, and what the README now says:
UID 0 with only CAP_BPF+CAP_PERFMON captures; another UID with them cannot (tracefs is mode
0700: BCC cannot read the tracepoint formats) unless CAP_DAC_READ_SEARCH is added.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CLI = [sys.executable, "-m", "profiler.cli"]
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def caps(*names: str) -> list[str]:
    """setpriv options that leave exactly these capabilities effective (via ambient)."""
    add = ",".join(f"+{n}" for n in names)
    return [f"--inh-caps=-all,{add}", f"--ambient-caps={add}", f"--bounding-set=-all,{add}"]


def cli(*args: str, prefix: list[str] | None = None, cwd: Path | None = None) -> Any:
    return subprocess.run(
        [*(prefix or []), *CLI, *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )


def one_line_77(r: Any) -> str:
    assert r.returncode == 77, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("smp-profiler: error: "), r.stderr
    return str(lines[0])


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory UID 65534 can write (pytest's tmp_path is root's, mode 0700)."""
    d = Path(tempfile.mkdtemp(prefix="smp-priv-"))
    d.chmod(0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def idle() -> Iterator[int]:
    """A process to capture: a sleep, traced as a sidecar."""
    p = subprocess.Popen(["sleep", "120"])
    yield p.pid
    p.kill()
    p.wait()


@pytest.mark.bpf
@pytest.mark.testbed
@pytest.mark.envoy
def test_testbed_and_run_as_a_normal_user_exit_77(testbed_factory: Any, shared_dir: Path) -> None:
    tb = testbed_factory()
    state = tb.state.state_dir
    for args in (
        ("testbed", "down", "--name", tb.state.name, "--state-dir", state),
        ("testbed", "status", "--name", tb.state.name, "--state-dir", state),
        ("testbed", "load", "--name", tb.state.name, "--state-dir", state),
        ("run", "--testbed", state, "--rates", "10", "-o", str(shared_dir / "r.json")),
    ):
        line = one_line_77(cli(*args, prefix=NOBODY, cwd=shared_dir))
        assert "run with sudo" in line
    # it is all still there: nothing was half torn down
    assert cli("testbed", "status", "--name", tb.state.name, "--state-dir", state).returncode == 0


@pytest.mark.bpf
def test_capture_as_a_normal_user_is_77(idle: int, shared_dir: Path) -> None:
    r = cli("capture", "--sidecar-pid", str(idle), "-o", "c.json", prefix=NOBODY, cwd=shared_dir)
    assert "not root and no CAP_BPF+CAP_PERFMON" in one_line_77(r)


@pytest.mark.bpf
def test_capture_with_cap_bpf_and_perfmon_as_uid_0(idle: int, shared_dir: Path) -> None:
    prefix = ["setpriv", *caps("bpf", "perfmon")]
    out = shared_dir / "c.json"
    r = cli(
        "capture", "--sidecar-pid", str(idle), "--duration", "1s", "-o", str(out), prefix=prefix
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert doc["complete"] and doc["sidecars"][0]["pid"] == idle


@pytest.mark.bpf
def test_capture_with_cap_bpf_and_perfmon_as_another_uid(idle: int, shared_dir: Path) -> None:
    out = shared_dir / "c.json"
    args = ("capture", "--sidecar-pid", str(idle), "--duration", "1s", "-o", str(out))
    r = cli(*args, prefix=[*NOBODY, *caps("bpf", "perfmon")], cwd=shared_dir)
    assert "add CAP_DAC_READ_SEARCH" in one_line_77(r)
    assert not out.exists()
    r = cli(*args, prefix=[*NOBODY, *caps("bpf", "perfmon", "dac_read_search")], cwd=shared_dir)
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["complete"] is True


@pytest.mark.bpf
def test_doctor_with_cap_bpf_and_perfmon_as_another_uid_says_why_not() -> None:
    r = cli("doctor", "--json", prefix=[*NOBODY, *caps("bpf", "perfmon")])
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    doc = json.loads(r.stdout)
    checks = {c["name"]: c for c in doc["checks"]}
    assert doc["capture_possible"] is False
    assert "CAP_DAC_READ_SEARCH" in checks["root"]["detail"]
    assert "not readable" in checks["tracefs"]["detail"]
