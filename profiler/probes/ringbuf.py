"""A consumer of a BPF ring buffer that takes every record in one numpy array.

libbpf's (and BCC's) consumer calls back into Python once per record; at tens of thousands of
requests per second that callback is most of the profiler's cost. All our records have one
size, so in the ring (mapped twice back to back by the kernel, so a record never wraps) they
lie at a fixed stride from the consumer position: one array view, one copy, one store of the
new position. Layout and protocol: the kernel's ring buffer (kernel/bpf/ringbuf.c) as libbpf
reads it: a consumer page (read-write), a producer page, then the data pages twice; each record
is an 8-byte header (u32 length with BUSY and DISCARD bits, u32 page offset) and its data, the
whole rounded up to 8 bytes.
"""

from __future__ import annotations

import contextlib
import mmap
import select
import time
from typing import Any

import numpy as np

_BUSY, _DISCARD = 1 << 31, 1 << 30
_HEADER = 8


def wake_at(pages: int, record_size: int) -> int:
    """After how many unread records the producer wakes the reader (SMP_RB_WAKE_AT): half
    the ring's."""
    stride = (_HEADER + record_size + 7) & ~7
    return max(1, pages * mmap.PAGESIZE // stride // 2)


def skip_unread(map_fd: int) -> None:
    """Hand every record written to ring buffer ``map_fd`` and not yet read back to the
    kernel, unread: its consumer position set to the producer's."""
    page = mmap.PAGESIZE
    cons = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    prod = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
    try:
        cons[:8] = prod[:8]
    finally:
        cons.close()
        prod.close()


class RingReader:
    """Reads ``record_dtype`` records from the ring buffer map ``map_fd`` of ``pages`` pages."""

    def __init__(self, map_fd: int, pages: int, record_dtype: np.dtype[Any]) -> None:
        page = mmap.PAGESIZE
        self.size = pages * page
        self._cons = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._prod = mmap.mmap(
            map_fd, page + 2 * self.size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page
        )
        self._cons_pos = np.frombuffer(self._cons, dtype=np.uint64, count=1)
        self._prod_pos = np.frombuffer(self._prod, dtype=np.uint64, count=1)
        self._data = np.frombuffer(self._prod, dtype=np.uint8, offset=page)
        self.dtype = record_dtype
        self.stride = (_HEADER + record_dtype.itemsize + 7) & ~7
        self._framed = np.dtype(
            {
                "names": ["len", "pg_off", "record"],
                "formats": ["<u4", "<u4", record_dtype],
                "offsets": [0, 4, _HEADER],
                "itemsize": self.stride,
            }
        )
        self.discarded = 0
        # woken only by the records submitted with BPF_RB_FORCE_WAKEUP (edge-triggered: the
        # ring's poll is ready whenever data is there, which would never let us sleep)
        self._epoll = select.epoll()
        try:
            self._epoll.register(map_fd, select.EPOLLIN | select.EPOLLET)
        except PermissionError:  # no ring buffer map (a plain file standing in for one)
            self._epoll.close()

    def forget_wakeups(self) -> None:
        """Drop wakeups already signalled (for records about to be read): else the next wait
        would return at once, with a batch of whatever came since."""
        if not self._epoll.closed:
            self._epoll.poll(0)

    def wait(self, timeout_s: float) -> None:
        """Sleep until the producer wakes us (a batch is there) or ``timeout_s`` passed."""
        if timeout_s <= 0:
            return
        if self._epoll.closed:
            time.sleep(timeout_s)
        else:
            self._epoll.poll(timeout_s)

    def filled(self) -> int:
        """Bytes written and not yet read (records still being written included)."""
        return int(self._prod_pos[0]) - int(self._cons_pos[0])

    def read(self) -> np.ndarray:
        """Every record committed since the last read, in order, as one array (a copy)."""
        cons = int(self._cons_pos[0])
        avail = int(self._prod_pos[0]) - cons
        n = avail // self.stride
        if n <= 0:
            return np.empty(0, dtype=self.dtype)
        framed = np.frombuffer(self._data, dtype=self._framed, count=n, offset=cons % self.size)
        lengths = framed["len"]
        busy = np.flatnonzero(lengths & _BUSY)
        if len(busy):  # a record still being written: stop before it
            n = int(busy[0])
            framed, lengths = framed[:n], lengths[:n]
        keep = (lengths & _DISCARD) == 0
        kept = int(keep.sum())
        self.discarded += n - kept
        # The records' bytes as rows, copied out once: numpy copies a structured dtype field by
        # field (~100 ns a 160-byte record here), plain bytes row by row (~6 ns).
        start = cons % self.size
        rows = self._data[start : start + n * self.stride].reshape(n, self.stride)
        body = rows[:, _HEADER : _HEADER + self.dtype.itemsize]
        out = body.copy() if kept == n else body[keep]
        records: np.ndarray = out.view(self.dtype).reshape(kept)
        self._cons_pos[0] = cons + n * self.stride  # hands the space back to the kernel
        return records

    def close(self) -> None:
        self._epoll.close()
        for m in (self._cons, self._prod):
            # a view still alive keeps the mapping until it goes
            with contextlib.suppress(BufferError):
                m.close()
