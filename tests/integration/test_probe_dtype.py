"""The structs Python reads from bpf/sidecar.h (profiler/probes/cheader.py, no BCC) are the
ones BCC compiles: same fields, offsets and sizes, on the path that runs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from profiler.probes.sidecar import HEADER, SPAN_DTYPE, SidecarProbe

pytestmark = pytest.mark.bpf


@pytest.fixture(scope="module")
def bpf() -> Iterator[Any]:
    probe = SidecarProbe(lambda _batch: None, ringbuf_pages=1, self_test=False)
    try:
        yield probe._bpf
    finally:
        probe.close()


def _layout(dt: np.dtype[Any]) -> list[tuple[str, int, int]]:
    fields = dt.fields
    assert fields is not None
    return [(n, fields[n][1], fields[n][0].itemsize) for n in dt.names or ()]


def test_span_record_dtype_equals_bccs(bpf: Any) -> None:
    bcc_span = np.dtype(dict(bpf["smp_conns"].Leaf._fields_)["span"])
    assert bcc_span == SPAN_DTYPE
    assert _layout(SPAN_DTYPE) == _layout(bcc_span)


@pytest.mark.parametrize(
    ("struct", "table"),
    [("smp_conn", "smp_conns"), ("smp_proc_stats", "smp_proc"), ("smp_target", "smp_filter_pids")],
)
def test_shared_structs_equal_bccs(bpf: Any, struct: str, table: str) -> None:
    ours, theirs = HEADER.structs[struct], np.dtype(bpf[table].Leaf)
    assert ours.itemsize == theirs.itemsize
    assert _layout(ours) == _layout(theirs)
