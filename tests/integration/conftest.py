"""Fixtures for integration tests that need the local testbed (real netns, cgroups, Envoy)."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


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
