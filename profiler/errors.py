"""One error hierarchy for the product, each error mapped to a process exit code.

The CLI turns any :class:`SmpError` into one line on stderr and its exit code; anything
else is a bug and shows a traceback only with ``--debug``.
"""

from __future__ import annotations


class SmpError(Exception):
    """A known failure: the message is one line meant for the user."""

    exit_code = 1


class UsageError(SmpError):
    """The command line or its arguments do not make sense."""

    exit_code = 2


class PermissionDenied(SmpError):
    """Not root, or missing CAP_BPF/CAP_PERFMON/CAP_NET_ADMIN."""

    exit_code = 77


class CapabilityMissing(SmpError):
    """The kernel or the machine lacks something a capture needs (BPF, BCC, a tracepoint)."""

    exit_code = 69


class TargetNotFound(SmpError):
    """A PID, cgroup, container or pod that does not exist or is not what was asked for."""

    exit_code = 3


class TargetUnreachable(SmpError):
    """A URL or server that cannot be reached."""

    exit_code = 4


class BadInputFile(SmpError):
    """A result or capture file that is missing, truncated or of another kind."""

    exit_code = 65


class OutputNotWritable(SmpError):
    """An output path that cannot be written: checked before any measurement starts."""

    exit_code = 73  # EX_CANTCREAT


class Interrupted(SmpError):
    """Ctrl-C or SIGTERM: what was measured is written, and the exit code says so."""

    exit_code = 130  # 128 + SIGINT, as a shell reports it


class TestbedError(SmpError):
    """The local node could not be built, checked or torn down."""

    __test__ = False  # not a pytest test class
    exit_code = 5


class TooManyErrors(SmpError):
    """A run measured everything and wrote it, but a step failed more requests than allowed
    (``run --max-error-rate``, 1% by default): its latency and rates are not the service's."""

    exit_code = 6
