"""Fixtures for integration tests that need the local testbed (real netns, cgroups, Envoy)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from profiler.probes import loader

# One probe build is compiled and verified once in this process and handed out again, emptied,
# after each test releases it (profiler/probes/loader.py, REUSE; test_probe_reuse.py): ~7.5 s a
# load here. SMP_FRESH_PROBES=1 loads every probe anew, as the CLI's processes always do.
loader.REUSE["on"] = os.environ.get("SMP_FRESH_PROBES") != "1"


@pytest.fixture
def testbed_factory(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``testbed_factory(sidecar="envoy", mtls=True, ...)`` -> a running Testbed with a unique
    name and its state under tmp_path; every testbed made is torn down, also on failure."""
    from profiler.errors import TestbedError
    from profiler.testbed import Testbed, TestbedConfig, teardown

    made: list[Testbed] = []
    names: list[str] = []

    def make(**options: Any) -> Testbed:
        given = options.pop("name", None)
        state_dir = options.pop("state_dir", None)
        for attempt in range(3):
            name = given or f"t{secrets.token_hex(3)}"
            names.append(name)
            cfg = TestbedConfig(name=name, state_dir=state_dir or tmp_path / name, **options)
            try:
                tb = Testbed.up(cfg)
            except TestbedError as e:  # 1 in 16,384: another testbed has the derived subnet
                if given or "subnet" not in str(e) or attempt == 2:
                    raise
                continue
            made.append(tb)
            return tb
        raise AssertionError("unreachable")

    yield make
    for tb in made:
        with contextlib.suppress(Exception):
            tb.down()
    for name in names:
        with contextlib.suppress(Exception):
            teardown(name)


SWEPT_RATE = 200  # req/s of the shared sweep's first step; the second is twice that


@pytest.fixture(scope="session")
def swept(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One short real sweep, shared by test_run and test_report_html (it costs two testbeds
    and four captured windows: ~30 s): ``run`` against a mesh testbed (real Envoy) with a
    no-sidecar baseline, 2 rates x 2 s, and a 1-step YAML run of the mesh alone. The
    testbeds are down when the first test gets it; the files stay.

    Keys: ``doc`` (the JSON bundle), ``path``, ``yaml``, ``stderr`` (of the sweep),
    ``envoy_pid``, ``rate`` (the first step's req/s)."""
    from _testbed import cli

    from profiler.testbed import Testbed, TestbedConfig

    tmp = tmp_path_factory.mktemp("run")
    tag = uuid.uuid4().hex[:5]
    beds: list[Testbed] = []
    try:
        mesh = Testbed.up(TestbedConfig(name=f"r{tag}-m", state_dir=tmp / "m", sidecar="envoy"))
        beds.append(mesh)
        base = Testbed.up(TestbedConfig(name=f"r{tag}-b", state_dir=tmp / "b", sidecar="none"))
        beds.append(base)
        out = tmp / "result.json"
        r = cli("run", "--testbed", str(tmp / "m"), "--baseline-testbed", str(tmp / "b"),
                "--rates", f"{SWEPT_RATE},{2 * SWEPT_RATE}", "--step-duration", "2s",
                "--warmup", "0.5s", "--connections", "4", "-o", str(out))  # fmt: skip
        assert r.returncode == 0, r.stderr
        yaml_out = tmp / "result.yaml"
        r2 = cli("run", "--testbed", str(tmp / "m"), "--rates", "100", "--step-duration", "1s",
                 "--warmup", "0", "--format", "yaml", "-o", str(yaml_out))  # fmt: skip
        assert r2.returncode == 0, r2.stderr
        return {
            "doc": json.loads(out.read_text()),
            "path": out,
            "yaml": yaml_out,
            "stderr": r.stderr,
            "envoy_pid": mesh.state.server.envoy_pid,
            "rate": SWEPT_RATE,
        }
    finally:
        for tb in beds:
            tb.down()
