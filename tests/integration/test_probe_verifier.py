"""The verifier's budget: every program of the sidecar probe, on either path, loads with room
to spare under the kernel's million processed instructions a program. The syscalls path's
largest programs used 94-95% of it on the 6.18 kernel of CI (2026-12-07), 73% since 2026-12-08
(a change that moved the verifier's pruning, not the code's size); a change that adds
a branch to them can cross the limit, and the probe then fails to load (E2BIG) on every node.
Verifiers of other kernels count differently, so this is a margin, not a guarantee: the
count per program is printed, and docs/probes/sidecar.md says what to do when this fails."""

from __future__ import annotations

import pytest

from profiler.probes import loader
from profiler.probes.sidecar import SidecarProbe

pytestmark = pytest.mark.bpf
HEADROOM = 0.97  # of loader.VERIFIER_INSN_LIMIT


def test_every_program_leaves_the_verifier_headroom() -> None:
    """On the path the node gets (CI runs the probe tests again with SMP_PROBE_PATH=syscalls,
    so both are checked; loading the syscalls path takes ~20 s here, once is enough)."""
    probe = SidecarProbe(lambda batch: None, ringbuf_pages=16, self_test=False)
    path = probe.path
    try:
        counts = probe.verified_insns()
    finally:
        probe.close()
    # the socket programs, the packet ones and the HTTP/2 walk's tail calls are all counted
    names = set(counts)
    assert any("recv" in n or "read" in n for n in names), names
    assert {"smp_h2_step", "smp_h2_hpack_step"} <= names, names
    if path == "syscalls":  # the exits' bodies, reached by tail calls, are the largest
        assert {"smp_exit_read", "smp_exit_write"} <= names, names
    assert all(n > 0 for n in counts.values()), counts
    print(path, sorted(counts.items(), key=lambda kv: -kv[1])[:4])
    budget = HEADROOM * loader.VERIFIER_INSN_LIMIT
    over = {n: c for n, c in counts.items() if c > budget}
    assert not over, (
        f"{path}: verifier processed {over} instructions, over {HEADROOM:.0%} of "
        f"{loader.VERIFIER_INSN_LIMIT:,}: see docs/probes/sidecar.md, 'Verifier budget'"
    )
