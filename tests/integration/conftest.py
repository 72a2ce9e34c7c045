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
    from profiler.testbed import Testbed, TestbedConfig, teardown

    made: list[Testbed] = []
    names: list[str] = []

    def make(**options: Any) -> Testbed:
        name = options.pop("name", None) or f"t{secrets.token_hex(3)}"
        names.append(name)
        state_dir = options.pop("state_dir", None) or tmp_path / name
        tb = Testbed.up(TestbedConfig(name=name, state_dir=state_dir, **options))
        made.append(tb)
        return tb

    yield make
    for tb in made:
        with contextlib.suppress(Exception):
            tb.down()
    for name in names:
        with contextlib.suppress(Exception):
            teardown(name)
