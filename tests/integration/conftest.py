"""Fixtures for integration tests that need the local testbed (real netns, cgroups, Envoy)."""

from __future__ import annotations

import contextlib
import json
import secrets
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Sends N sequential GETs over one keep-alive connection, ids "<prefix>-<i>"; prints a summary.
_CLIENT = r"""
import http.client, json, sys
url, n, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
host, _, rest = url.split("//", 1)[1].partition(":")
port, path = int(rest.split("/", 1)[0]), "/" + rest.split("/", 1)[1]
conn = http.client.HTTPConnection(host, port, timeout=10)
out = []
for i in range(n):
    rid = f"{prefix}-{i}"
    conn.request("GET", path, headers={"x-request-id": rid})
    r = conn.getresponse()
    body = r.read()
    out.append({"id": rid, "status": r.status, "echo": r.getheader("x-request-id"),
                "len": len(body), "server": r.getheader("server")})
print(json.dumps(out))
"""


def send_requests(tb: Any, n: int, prefix: str, url: str | None = None) -> list[dict[str, Any]]:
    """``n`` requests from the client pod to ``url`` (the testbed's URL); one dict each."""
    r = tb.run_in_client(
        [sys.executable, "-c", _CLIENT, url or tb.state.url, str(n), prefix],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    result: list[dict[str, Any]] = json.loads(r.stdout)
    return result


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
