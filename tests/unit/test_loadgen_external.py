"""Running external generators: command lines, and one clear error when a binary is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from profiler.errors import CapabilityMissing, UsageError
from profiler.loadgen import LoadSpec, fortio, nighthawk, run_load
from profiler.loadgen.common import cgroup_prefix


@pytest.mark.parametrize("generator", ["fortio", "nighthawk", "wrk", "hey"])
def test_missing_binary_is_one_line(generator: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    spec = LoadSpec(generator, "http://127.0.0.1:1/", None, 1.0, 1)
    with pytest.raises(CapabilityMissing) as e:
        run_load(spec)
    assert generator in str(e.value) and "not installed" in str(e.value)
    assert "\n" not in str(e.value)


def _fake(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    exe = tmp_path / name
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))


def test_fortio_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake(tmp_path, "fortio", monkeypatch)
    spec = LoadSpec("fortio", "http://10.1.0.2:8080/", 250.0, 10.0, 8, extra_headers={"a": "b"})
    cmd = fortio.command(spec, "/tmp/out.json")
    assert cmd[0].endswith("fortio") and cmd[1:4] == ["load", "-json", "/tmp/out.json"]
    assert cmd[cmd.index("-qps") + 1] == "250" and cmd[cmd.index("-c") + 1] == "8"
    assert cmd[cmd.index("-t") + 1] == "10s" and cmd[-3:-1] == ["-H", "a: b"]
    assert cmd[-1] == "http://10.1.0.2:8080/"
    cmd = fortio.command(LoadSpec("fortio", "http://x/", None, 1, 1), "o")
    assert cmd[cmd.index("-qps") + 1] == "0"  # fortio's "max"


def test_nighthawk_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake(tmp_path, "nighthawk_client", monkeypatch)
    cmd = nighthawk.command(LoadSpec("nighthawk", "http://x:1/", 1000.0, 5.0, 4))
    assert cmd[cmd.index("--rps") + 1] == "1000" and cmd[cmd.index("--duration") + 1] == "5"
    assert cmd[cmd.index("--output-format") + 1] == "json"


def test_cgroup_must_be_v2(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cgroup v2"):
        cgroup_prefix(str(tmp_path))
    assert cgroup_prefix(None) == []
