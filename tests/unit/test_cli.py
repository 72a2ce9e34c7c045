"""The CLI shell: instant help without BCC or root, one-line errors, exit codes."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

COMMANDS = ["doctor", "capture", "run", "report", "compare", "demo", "daemon", "testbed"]


def _cli(*args: str, hide_bcc: bool = False) -> subprocess.CompletedProcess[str]:
    prelude = "import sys; " + ("sys.modules['bcc'] = None; " if hide_bcc else "")
    code = prelude + "from profiler.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=30
    )


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def test_help_lists_every_command_fast_and_without_bcc() -> None:
    # CPU seconds of the child, not wall time: the unit tests run on both cores at once and
    # the machine may be busy. --help costs ~0.27 s here; importing numpy and matplotlib
    # (or BCC, kubernetes) at start-up would make it ~0.9 s.
    start = _children_cpu_s()
    r = _cli("--help", hide_bcc=True)
    cpu = _children_cpu_s() - start
    assert r.returncode == 0, r.stderr
    for command in COMMANDS:
        assert command in r.stdout
    assert cpu < 0.6, f"--help took {cpu:.2f} s of CPU"


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


def test_capture_to_an_unwritable_path_fails_before_measuring(tmp_path: Path) -> None:
    """/proc/x.json: root may "access" /proc, but no file can be made there. Was: a traceback
    after the whole --duration."""
    start = time.monotonic()
    pid = str(os.getpid())
    r = _cli("capture", "--sidecar-pid", pid, "--duration", "20s", "-o", "/proc/x.json")
    assert time.monotonic() - start < 10
    assert r.returncode == 73, r.stderr
    assert r.stderr.strip().splitlines() == [
        "smp-profiler: error: bad -o /proc/x.json: cannot write there: "
        + ("No such file or directory" if os.geteuid() == 0 else "Permission denied")
    ]


def test_capture_refuses_a_missing_parent_and_does_not_create_it(tmp_path: Path) -> None:
    out = tmp_path / "missing" / "capture.json"
    r = _cli("capture", "--sidecar-pid", str(os.getpid()), "--duration", "1s", "-o", str(out))
    assert r.returncode == 73, r.stderr
    assert "does not exist" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.parent.exists()


def test_capture_checks_the_spans_file_too(tmp_path: Path) -> None:
    (tmp_path / "capture.spans.csv").mkdir()  # a directory where the spans file would go
    out = tmp_path / "capture.json"
    r = _cli("capture", "--sidecar-pid", str(os.getpid()), "--duration", "1s", "-o", str(out))
    assert r.returncode == 73 and "capture.spans.csv: is a directory" in r.stderr, r.stderr


def test_run_refuses_a_missing_parent(tmp_path: Path) -> None:
    out = tmp_path / "missing" / "run.json"
    r = _cli("run", "--target", "http://127.0.0.1:9/", "-o", str(out))
    assert r.returncode == 73 and "does not exist" in r.stderr, r.stderr
    assert not out.parent.exists()


def test_capture_of_an_unknown_testbed_is_one_line(tmp_path: Path) -> None:
    r = _cli("capture", "--testbed", str(tmp_path), "-o", str(tmp_path / "c.json"))
    assert r.returncode == 65, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_demo_refuses_a_missing_parent_before_building_anything(tmp_path: Path) -> None:
    out = tmp_path / "missing" / "smp-results"
    r = _cli("demo", "--output-dir", str(out))
    if os.geteuid() == 0:
        assert r.returncode == 73 and "does not exist" in r.stderr, r.stderr
    else:  # the testbed needs root: that is said first
        assert r.returncode == 77 and "run with sudo" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not out.parent.exists()


def test_no_help_text_is_eaten_as_rich_markup() -> None:
    """Typer renders help with rich markup: a "[default: stdout]" in a help text is taken for
    a style tag and vanishes ("File to write ."). Every option and command help of the whole
    tree is free of square brackets, and a rendered help keeps its parenthesised default."""
    import typer

    from profiler.cli import app

    def walk(cmd: Any, path: str) -> list[str]:
        bad = [f"{path}: {cmd.help}"] if cmd.help and "[" in cmd.help else []
        for p in cmd.params:
            text = getattr(p, "help", None) or ""
            if "[" in text:
                bad.append(f"{path} {p.name}: {text}")
        for name, sub in getattr(cmd, "commands", {}).items():
            bad += walk(sub, f"{path} {name}")
        return bad

    assert walk(typer.main.get_command(app), "smp-profiler") == []
    r = _cli("report", "--help")
    assert "(default: stdout)" in " ".join(r.stdout.split())
