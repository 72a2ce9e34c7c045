"""The PID gate (``smp_pid_gate``): an array slot per tgid modulo ``SMP_PID_GATE_SLOTS`` that
turns the node's untraced processes away before the filter's hash lookup. A slot closed while
a traced tgid still maps to it would make that process's requests vanish without a count, so
user space closes a slot only when no traced tgid maps to it and nothing is being learned."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator

import pytest

from profiler.probes.sidecar import PID_GATE_SLOTS, SidecarProbe

pytestmark = pytest.mark.bpf
GHOST = 0x7FFF0000  # an upid no process has: a second traced tgid in the test's slot


@pytest.fixture(scope="module")
def probe() -> Iterator[SidecarProbe]:
    p = SidecarProbe(lambda batch: None, ringbuf_pages=16)
    try:
        yield p
    finally:
        p.close()


def _gate(probe: SidecarProbe, tgid: int) -> int:
    return int(probe._bpf["smp_pid_gate"][ctypes.c_int(tgid % PID_GATE_SLOTS)].value)  # type: ignore[attr-defined]


def _put_ghost(probe: SidecarProbe, tgid: int) -> None:
    """A traced tgid sharing ``tgid``'s slot (a real one would need a process whose PID is
    ``tgid`` + SMP_PID_GATE_SLOTS), as the kernel's smp_learn puts one: filter, then gate."""
    b = probe._bpf  # type: ignore[attr-defined]
    filt = b["smp_filter_pids"]
    leaf = filt.Leaf()
    leaf.upid = GHOST
    filt[filt.Key(tgid + PID_GATE_SLOTS)] = leaf
    gate = b["smp_pid_gate"]
    gate[gate.Key(tgid % PID_GATE_SLOTS)] = gate.Leaf(1)


def test_a_slot_stays_open_while_another_traced_tgid_maps_to_it(probe: SidecarProbe) -> None:
    me = os.getpid()
    assert _gate(probe, me) == 0  # the self-test's target was removed: its slot closed
    probe.add_target(me, "app")
    assert _gate(probe, me) == 1
    _put_ghost(probe, me)
    probe.remove_target(me)
    assert _gate(probe, me) == 1  # the ghost still maps to it
    probe.remove_target(GHOST)
    assert _gate(probe, me) == 0


def test_no_slot_is_closed_while_a_target_is_being_learned(probe: SidecarProbe) -> None:
    """smp_learn opens slots in the kernel only while a target is pending: a slot cleared
    then could be one it has just opened. Once nothing is pending (the kernel learned it),
    the next poll closes the removed target's slot, but not one a traced tgid still maps to."""
    me = os.getpid()
    b = probe._bpf  # type: ignore[attr-defined]
    learning = b["smp_learning"]
    gate = b["smp_pid_gate"]
    other = me + 1  # another slot: open at removal, then traced again before the poll
    probe.add_target(me, "app")
    probe.add_target(other, "app")
    learning[learning.Key(0)] = learning.Leaf(1)  # a target pending in some namespace
    try:
        probe.remove_target(me)
        probe.remove_target(other)
        assert _gate(probe, me) == 1 and _gate(probe, other) == 1
        probe.poll(0)
        assert _gate(probe, me) == 1  # still learning
        probe.add_target(other, "app")
        learning[learning.Key(0)] = learning.Leaf(0)  # as smp_learn does when it learns
        probe.poll(0)
        assert _gate(probe, me) == 0
        assert _gate(probe, other) == 1  # traced again: its slot stays open
    finally:
        learning[learning.Key(0)] = learning.Leaf(0)
        probe.remove_target(other)
        gate[gate.Key(me % PID_GATE_SLOTS)] = gate.Leaf(0)
    assert _gate(probe, other) == 0
