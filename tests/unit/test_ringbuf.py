"""The ring-buffer reader on a file laid out as the kernel maps a BPF ring buffer (a consumer
page, a producer page, the data pages twice): record order, a record still being written,
discarded records, and a batch that runs past the end of the data pages."""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

import numpy as np

from profiler.probes.ringbuf import _BUSY, _DISCARD, RingReader

PAGE = mmap.PAGESIZE
REC = np.dtype([("a", "<u8"), ("b", "<u4"), ("c", "<u2"), ("d", "S10")])  # 24 bytes, odd fields
STRIDE = (8 + REC.itemsize + 7) & ~7


class Ring:
    """A one-page ring in a file: ``put`` writes framed records at the producer position
    (into both copies of the data, as the kernel's double mapping shows them)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.write_bytes(bytes(PAGE * 4))
        self.prod = 0

    def put(self, a: int, flags: int = 0) -> None:
        rec = np.zeros(1, REC)
        rec["a"], rec["b"], rec["c"], rec["d"] = a, a * 3, a % 65536, f"r{a}".encode()
        body = struct.pack("<II", REC.itemsize | flags, 0) + rec.tobytes()
        body += bytes(STRIDE - len(body))
        with self.path.open("r+b") as f:
            for copy in (0, 1):
                start = self.prod % PAGE
                f.seek(2 * PAGE + copy * PAGE + start)  # copy 0 runs on into copy 1's start
                f.write(body[: PAGE - start] if copy == 1 and start + STRIDE > PAGE else body)
            if self.prod % PAGE + STRIDE > PAGE:  # its tail, at the ring's start (copy 0)
                cut = PAGE - self.prod % PAGE
                f.seek(2 * PAGE)
                f.write(body[cut:])
            self.prod += STRIDE
            f.seek(PAGE)
            f.write(struct.pack("<Q", self.prod))


def reader(path: Path) -> RingReader:
    with path.open("r+b") as f:
        return RingReader(f.fileno(), 1, REC)


def test_records_come_out_in_order_with_every_field(tmp_path: Path) -> None:
    ring = Ring(tmp_path / "ring")
    for a in (7, 8, 9):
        ring.put(a)
    r = reader(ring.path)
    got = r.read()
    assert got.dtype == REC and got["a"].tolist() == [7, 8, 9]
    assert got["b"].tolist() == [21, 24, 27] and got["d"].tolist() == [b"r7", b"r8", b"r9"]
    assert len(r.read()) == 0  # the consumer position moved past them


def test_a_record_being_written_stops_the_batch_and_is_read_next_time(tmp_path: Path) -> None:
    ring = Ring(tmp_path / "ring")
    ring.put(1)
    ring.put(2, _BUSY)
    ring.put(3)
    r = reader(ring.path)
    assert r.read()["a"].tolist() == [1]
    # the kernel commits it: the header's BUSY bit cleared
    with ring.path.open("r+b") as f:
        for copy in (0, 1):
            f.seek(2 * PAGE + copy * PAGE + STRIDE)
            f.write(struct.pack("<I", REC.itemsize))
    assert r.read()["a"].tolist() == [2, 3]


def test_discarded_records_are_counted_not_returned(tmp_path: Path) -> None:
    ring = Ring(tmp_path / "ring")
    for a, flags in ((1, 0), (2, _DISCARD), (3, 0), (4, _DISCARD), (5, 0)):
        ring.put(a, flags)
    r = reader(ring.path)
    got = r.read()
    assert got["a"].tolist() == [1, 3, 5] and got["c"].tolist() == [1, 3, 5]
    assert r.discarded == 2


def test_a_batch_past_the_end_of_the_data_pages_reads_the_second_copy(tmp_path: Path) -> None:
    ring = Ring(tmp_path / "ring")
    per_page = PAGE // STRIDE
    r = reader(ring.path)
    for a in range(per_page - 2):
        ring.put(a)
    assert len(r.read()) == per_page - 2
    for a in range(1000, 1006):  # crosses the page's end: the last ones wrap
        ring.put(a)
    got = r.read()
    assert got["a"].tolist() == list(range(1000, 1006))
    assert got["d"].tolist() == [f"r{a}".encode() for a in range(1000, 1006)]
