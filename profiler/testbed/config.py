"""What a testbed is asked to be: :class:`TestbedConfig`, unit parsing, derived names.

Every kernel object's name is derived from the testbed's ``name`` alone, so two testbeds
with different names coexist and ``down`` can find a crashed run's leftovers without state.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from profiler.errors import UsageError

SIDECARS = ("envoy", "none")
ENVOY_UID = 1337  # istio-proxy's UID and GID
INBOUND_PORT = 15006
OUTBOUND_PORT = 15001
ADMIN_PORT = 15000
DEFAULT_STATE_ROOT = Path("/run/smp-profiler")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,19}$")
_DURATION_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(ns|us|µs|ms|s|m)?\s*$")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
_SIZE_RE = re.compile(r"^\s*([0-9]+)\s*(b|k|kb|kib|m|mb|mib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "k": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": 1 << 20,
    "mb": 10**6,
    "mib": 1 << 20,
}


def parse_duration(text: str) -> float:
    """``"1ms"`` -> 0.001 (seconds). A bare number is seconds. Raises UsageError."""
    m = _DURATION_RE.match(text)
    if not m:
        raise UsageError(f"bad duration {text!r}: use e.g. 500us, 1ms, 0.2s")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2) or "s"]


def parse_size(text: str) -> int:
    """``"128"`` -> 128, ``"4k"``/``"4KiB"`` -> 4096, ``"1MB"`` -> 1000000 (bytes)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise UsageError(f"bad size {text!r}: use e.g. 128, 4k, 1MiB")
    return int(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()]


def _digest(name: str) -> bytes:
    return hashlib.sha256(f"smp-testbed/{name}".encode()).digest()


def short_id(name: str) -> str:
    """6 hex digits naming interfaces (Linux allows 15 characters)."""
    return _digest(name).hex()[:6]


def derived_subnet(name: str) -> ipaddress.IPv4Network:
    """A /24 inside 10.128.0.0/10 chosen by the name: 16,384 possibilities."""
    d = _digest(name)
    n = int.from_bytes(d[6:8], "big") % (64 * 256)
    return ipaddress.IPv4Network(f"10.{128 + n // 256}.{n % 256}.0/24")


def pod_uid(name: str, pod: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"smp-testbed/{name}/{pod}"))


def container_id(name: str, pod: str, container: str) -> str:
    return hashlib.sha256(f"smp-testbed/{name}/{pod}/{container}".encode()).hexdigest()


@dataclass(frozen=True)
class TestbedConfig:
    """Options of ``testbed up``; ``state_dir`` defaults to /run/smp-profiler/testbed-<name>."""

    __test__ = False  # not a pytest test class

    name: str = "smp"
    sidecar: str = "envoy"
    client_sidecar: bool = False
    mtls: bool = False
    concurrency: int = 1
    app_delay_s: float = 0.0
    fault_delay_s: float = 0.0  # the server sidecar's fault filter delays every request
    response_size: int = 128
    state_dir: Path | None = None
    app_port: int = 8080
    h2c_port: int | None = 8081  # the app's HTTP/2 cleartext port; None: none
    grpc_port: int | None = 8082  # the app's gRPC server (grpcio); None: none
    echo_port: int | None = 8083  # a raw TCP echo, through Envoy's tcp_proxy; None: none
    subnet: str | None = None  # default: derived from name
    envoy_patch: dict[str, Any] = field(default_factory=dict)  # deep-merged into both bootstraps
    ready_timeout_s: float = 20.0

    def validate(self) -> None:
        if not _NAME_RE.match(self.name):
            raise UsageError(f"bad testbed name {self.name!r}: use 1-20 of a-z, 0-9, '-'")
        if self.sidecar not in SIDECARS:
            raise UsageError(f"bad --sidecar {self.sidecar!r}: use one of {', '.join(SIDECARS)}")
        if self.mtls and not (self.sidecar == "envoy" and self.client_sidecar):
            raise UsageError("--mtls needs both sidecars: --sidecar envoy --client-sidecar")
        if not 1 <= self.concurrency <= 64:
            raise UsageError(f"bad --concurrency {self.concurrency}: use 1..64")
        if not 0 <= self.app_delay_s <= 10:
            raise UsageError(f"bad --app-delay {self.app_delay_s}s: use 0..10s")
        if not 0 <= self.fault_delay_s <= 10:
            raise UsageError(f"bad fault delay {self.fault_delay_s}s: use 0..10s")
        if not 0 <= self.response_size <= 64 << 20:
            raise UsageError(f"bad --response-size {self.response_size}: use 0..64MiB")
        if not 1 <= self.app_port <= 65535:
            raise UsageError(f"bad app port {self.app_port}")
        if self.h2c_port is not None and not (
            1 <= self.h2c_port <= 65535 and self.h2c_port != self.app_port
        ):
            raise UsageError(f"bad h2c port {self.h2c_port}: 1..65535, not the app's port")
        extra = [p for p in (self.h2c_port, self.grpc_port, self.echo_port) if p is not None]
        if len(set(extra)) != len(extra) or any(not 1 <= p <= 65535 for p in extra):
            raise UsageError(f"bad app ports {extra}: 1..65535, all different")
        if self.subnet is not None:
            try:
                net = ipaddress.IPv4Network(self.subnet)
            except ValueError as e:
                raise UsageError(f"bad subnet {self.subnet!r}: {e}") from None
            if not net.is_private or net.prefixlen > 29:
                raise UsageError(f"bad subnet {self.subnet}: need a private /29 or larger")

    @property
    def resolved_state_dir(self) -> Path:
        return self.state_dir or DEFAULT_STATE_ROOT / f"testbed-{self.name}"

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet) if self.subnet else derived_subnet(self.name)


@dataclass(frozen=True)
class Names:
    """Kernel object names of one testbed, all derived from its name."""

    name: str

    @property
    def bridge(self) -> str:
        return f"smp{short_id(self.name)}br"

    def netns(self, pod: str) -> str:
        return f"smp-{self.name}-{pod}"

    def veth_host(self, pod: str) -> str:
        return f"smp{short_id(self.name)}{pod[0]}"

    def veth_peer(self, pod: str) -> str:
        return f"smp{short_id(self.name)}{pod[0]}p"
