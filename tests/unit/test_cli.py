"""The CLI shell: instant help without BCC or root, one-line errors, exit codes."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

COMMANDS = ["doctor", "capture", "run", "report", "compare", "demo", "daemon", "testbed"]


def _cli(*args: str, hide_bcc: bool = False) -> subprocess.CompletedProcess[str]:
    prelude = "import sys; " + ("sys.modules['bcc'] = None; " if hide_bcc else "")
    code = prelude + "from profiler.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=30
    )


def test_help_lists_every_command_fast_and_without_bcc() -> None:
    start = time.monotonic()
    r = _cli("--help", hide_bcc=True)
    elapsed = time.monotonic() - start
    assert r.returncode == 0, r.stderr
    for command in COMMANDS:
        assert command in r.stdout
    assert elapsed < 1.0, f"--help took {elapsed:.2f}s"


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    r = _cli(command, "--help")
    assert r.returncode == 0, r.stderr
    assert "Usage" in r.stdout


def test_unknown_option_is_a_usage_error() -> None:
    r = _cli("--no-such-option")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr


def test_version() -> None:
    r = _cli("--version")
    assert r.returncode == 0
    assert r.stdout.startswith("smp-profiler ")


def test_known_error_is_one_line_and_its_exit_code() -> None:
    r = _cli("capture", "--pid", "999999")
    assert r.returncode == 3
    assert r.stderr.strip().splitlines() == ["smp-profiler: error: no process with PID 999999"]


def test_debug_shows_the_traceback() -> None:
    r = _cli("--debug", "capture", "--pid", "999999")
    assert r.returncode == 3
    assert "Traceback" in r.stderr
