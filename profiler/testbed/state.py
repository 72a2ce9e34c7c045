"""The testbed's description, written to ``<state_dir>/testbed.json`` and read back."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from profiler.errors import BadInputFile

STATE_FILE = "testbed.json"
KIND = "smp-profiler/testbed"


@dataclass
class PodState:
    name: str  # "server" or "client"
    netns: str
    ip: str
    uid: str
    veth_host: str
    cgroups: dict[str, str] = field(default_factory=dict)  # container -> cgroup directory
    app_pid: int | None = None
    envoy_pid: int | None = None
    url: str | None = None  # server: where its app is reached (through the sidecar if any)
    access_log: str | None = None  # this pod's Envoy access log
    envoy_log: str | None = None  # Envoy's own log
    admin: str | None = None  # Envoy's admin address inside the pod netns
    h2c_url: str | None = None


@dataclass
class TestbedState:
    __test__ = False  # not a pytest test class

    name: str
    status: str  # "building", "up"
    state_dir: str
    subnet: str
    bridge: str
    bridge_ip: str
    sidecar: str
    client_sidecar: bool
    mtls: bool
    concurrency: int
    app_delay_s: float
    response_size: int
    ports: dict[str, int]
    server: PodState
    client: PodState
    url: str  # what a client in the client pod uses
    access_log: str | None  # the server sidecar's access log (None for the baseline)
    created_cgroups: list[str] = field(default_factory=list)  # removed by down, innermost last
    envoy_version: str | None = None
    up_seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"kind": KIND, **asdict(self)}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TestbedState:
        if doc.get("kind") != KIND:
            raise ValueError("not a testbed description")
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in doc.items() if k in names}
        pod_names = {f.name for f in fields(PodState)}
        for pod in ("server", "client"):
            kw[pod] = PodState(**{k: v for k, v in doc[pod].items() if k in pod_names})
        return cls(**kw)

    def write(self) -> Path:
        path = Path(self.state_dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        tmp.replace(path)
        return path


def read_state(state_dir: Path) -> TestbedState:
    path = state_dir / STATE_FILE
    try:
        return TestbedState.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        raise BadInputFile(f"no testbed description at {path}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise BadInputFile(f"{path} is not a testbed description ({e})") from None
