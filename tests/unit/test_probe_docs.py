"""docs/probes/sidecar.md stays true to the probe: every map it declares is in the maps table,
the record size is the struct's, and every span flag is named (the doc had drifted: fields
that were not in the struct, maps that were)."""

from __future__ import annotations

import re
from pathlib import Path

from profiler.probes import cheader
from profiler.probes.sidecar import SPAN_DTYPE

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "probes" / "sidecar.md").read_text()
_DECL = re.compile(
    r"^\s*BPF_(?:HASH|ARRAY|PERCPU_ARRAY|PROG_ARRAY|RINGBUF_OUTPUT)\((\w+)"
    r'|^\s*BPF_TABLE\("[a-z_]+",[^,]+,[^,]+,\s*(\w+)',
    re.M,
)


def _section(title: str) -> str:
    start = DOC.index(f"## {title}")
    end = DOC.find("\n## ", start + 1)
    return DOC[start : end if end > 0 else None]


def test_every_map_the_probe_declares_is_in_the_maps_table() -> None:
    source = (ROOT / "bpf" / "sidecar.c").read_text()
    declared = {a or b for a, b in _DECL.findall(source)}
    assert {"smp_conns", "smp_spans", "smp_filter_pids"} <= declared  # the regex still works
    table = _section("Maps and bounds")
    missing = sorted(m for m in declared if f"`{m}`" not in table)
    assert missing == [], f"maps missing from docs/probes/sidecar.md: {missing}"


def test_the_record_size_in_the_doc_is_the_structs() -> None:
    m = re.search(r"A record is (\d+) bytes \((\d+) in the ring", DOC)
    assert m, "the doc states the record size"
    assert int(m.group(1)) == SPAN_DTYPE.itemsize
    assert int(m.group(2)) == SPAN_DTYPE.itemsize + 8  # the ring's record header


def test_every_span_flag_is_named_in_the_doc() -> None:
    header = cheader.read(ROOT / "bpf" / "sidecar.h")
    flags = [name[len("SMP_F_") :] for name in header.defines if name.startswith("SMP_F_")]
    assert len(flags) >= 10
    text = _section("Fields and units")
    assert [f for f in flags if f"`{f}`" not in text] == []
