"""``capture`` under Ctrl-C and a failing disk: exit 130 as documented, honoured during the
probe's start-up, partial results written; a capture that cannot be written where asked is
saved elsewhere and says where."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "profiler.cli", "capture"]


@pytest.fixture
def idle() -> Iterator[int]:
    p = subprocess.Popen(["sleep", "300"])
    yield p.pid
    p.kill()
    p.wait()


def _capture(pid: int, out: Path, duration: str, **kw: object) -> subprocess.Popen[str]:
    args = [*CLI, "--sidecar-pid", str(pid), "--duration", duration, "-o", str(out), "-q"]
    return subprocess.Popen(args, stderr=subprocess.PIPE, text=True, **kw)  # type: ignore[call-overload]


def _bcc_loaded(pid: int) -> bool:
    try:
        return "libbcc" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.bpf
def test_ctrl_c_during_start_up_stops_at_once_with_130(idle: int, tmp_path: Path) -> None:
    """Was: ignored until the probe had compiled and attached, then a 0-second capture was
    written and the exit code was 1."""
    out = tmp_path / "c.json"
    for _attempt in range(3):
        cap = _capture(idle, out, "30s")
        deadline = time.monotonic() + 30
        while not _bcc_loaded(cap.pid) and cap.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)  # BCC is imported by the start-up, before it compiles
        cap.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        rc = cap.wait(timeout=60)
        stopped_in = time.monotonic() - t0
        assert cap.stderr is not None
        err = cap.stderr.read()
        if "attached to" in err:  # start-up won the race: the signal came in the window
            out.unlink(missing_ok=True)
            continue
        assert rc == 130, err
        assert stopped_in < 1.0, f"Ctrl-C took {stopped_in:.2f} s to be honoured"
        assert "interrupted during start-up" in err and "Traceback" not in err, err
        assert not out.exists()
        return
    pytest.fail("start-up finished before the signal three times: no start-up was interrupted")


def _wait_attached(cap: subprocess.Popen[str]) -> None:
    """Until the capture says it is attached (or its stderr ends)."""
    assert cap.stderr is not None
    for line in cap.stderr:
        if "attached to" in line:
            break


@pytest.mark.bpf
def test_ctrl_c_in_the_window_writes_the_partial_capture_and_exits_130(
    idle: int, tmp_path: Path
) -> None:
    out = tmp_path / "c.json"
    cap = _capture(idle, out, "60s")
    _wait_attached(cap)
    time.sleep(2.0)
    cap.send_signal(signal.SIGINT)
    rc = cap.wait(timeout=60)
    err = cap.stderr.read()
    assert rc == 130, err
    doc = json.loads(out.read_text())
    assert doc["complete"] is False and doc["incomplete_reason"] == "interrupted"
    assert 1.5 < doc["duration_s"] < 10, doc["duration_s"]
    assert "Traceback" not in err


@pytest.mark.bpf
def test_sigterm_is_the_same_as_ctrl_c(idle: int, tmp_path: Path) -> None:
    out = tmp_path / "c.json"
    cap = _capture(idle, out, "60s")
    _wait_attached(cap)
    cap.send_signal(signal.SIGTERM)
    assert cap.wait(timeout=60) == 130
    assert json.loads(out.read_text())["incomplete_reason"] == "interrupted"


@pytest.mark.bpf
def test_a_capture_that_cannot_be_written_is_saved_elsewhere(idle: int, tmp_path: Path) -> None:
    """The output directory disappears during the window: the capture and its spans go to
    $TMPDIR, stderr says where, exit 73; nothing measured is lost."""
    gone, spare = tmp_path / "gone", tmp_path / "tmp"
    gone.mkdir()
    spare.mkdir()
    env = {**os.environ, "TMPDIR": str(spare)}
    cap = _capture(idle, gone / "c.json", "3s", env=env)
    _wait_attached(cap)
    shutil.rmtree(gone)
    rc = cap.wait(timeout=60)
    err = cap.stderr.read()
    assert rc == 73, err
    saved = sorted(spare.glob("smp-profiler-c.*.json"))
    assert len(saved) == 1 and f"saved to {saved[0]} instead" in err, err
    doc = json.loads(saved[0].read_text())
    assert doc["complete"] is True and doc["duration_s"] >= 3
    assert doc["spans_file"].startswith(str(spare)) and Path(doc["spans_file"]).exists()
