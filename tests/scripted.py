"""The driver of the scripted process (tests/helpers/scripted_peer.py), shared by the probe
tests that script every socket call of a traced process: it starts the process, knows its
pid and listening port, and ``do`` runs one step (one JSON command, one JSON answer)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

PEER = Path(__file__).resolve().parent / "helpers" / "scripted_peer.py"


class ScriptedPeer:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(PEER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        hello = self._line()
        self.pid, self.port = int(hello["pid"]), int(hello["port"])

    def _line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        out: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return out

    def do(self, op: str, **kw: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        return self._line()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
