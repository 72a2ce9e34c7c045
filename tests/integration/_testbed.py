"""Helpers for tests on the local testbed (import as ``from _testbed import ...``)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``smp-profiler ARGS`` in a child Python: its exit code, stdout and stderr."""
    code = "import sys; from profiler.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout
    )


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


# Sends one GET per status code given, in that order, over one keep-alive connection, asking
# the testbed app for it (x-smp-status); prints the statuses the client got.
_STATUS_CLIENT = r"""
import http.client, json, sys
url, codes, prefix = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
host, _, rest = url.split("//", 1)[1].partition(":")
port, path = int(rest.split("/", 1)[0]), "/" + rest.split("/", 1)[1]
conn = http.client.HTTPConnection(host, port, timeout=10)
got = []
for i, code in enumerate(codes):
    local = code.startswith("local-")  # Envoy's own answer: /smp-local/<code>
    code = code.removeprefix("local-")
    headers = {"x-request-id": f"{prefix}-{i}", "x-smp-status": code}
    conn.request("GET", f"/smp-local/{code}" if local else path, headers=headers)
    r = conn.getresponse()
    r.read()
    got.append(r.status)
print(json.dumps(got))
"""


def send_statuses(tb: Any, codes: list[int | str], prefix: str) -> list[int]:
    """One request per code from the client pod to the testbed's URL, the app asked to answer
    with that status ("local-NNN": Envoy answers it itself, a local reply, see the testbed's
    LOCAL_REPLY_ROUTES); the statuses the client got, in order."""
    r = tb.run_in_client(
        [sys.executable, "-c", _STATUS_CLIENT, tb.state.url, ",".join(map(str, codes)), prefix],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    got: list[int] = json.loads(r.stdout)
    return got
