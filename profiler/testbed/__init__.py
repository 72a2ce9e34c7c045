"""The local testbed: a real node built from namespaces, cgroup v2 leaves and a real Envoy.

See docs/testbed.md. Public API::

    from profiler.testbed import TestbedConfig, Testbed, envoy_binary, read_access_log
"""

from profiler.testbed.accesslog import AccessLogEntry, read_access_log
from profiler.testbed.config import TestbedConfig, parse_duration, parse_size
from profiler.testbed.envoy import envoy_binary
from profiler.testbed.node import Testbed, leftovers, teardown
from profiler.testbed.state import PodState, TestbedState

__all__ = [
    "AccessLogEntry",
    "PodState",
    "Testbed",
    "TestbedConfig",
    "TestbedState",
    "envoy_binary",
    "leftovers",
    "parse_duration",
    "parse_size",
    "read_access_log",
    "teardown",
]
