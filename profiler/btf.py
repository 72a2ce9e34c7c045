"""Where a field of a kernel struct lies on the running kernel, from its BTF.

The probes build without the running kernel's headers (``profiler/kernel.py``). A program that
must read a field of a struct that is no stable ABI (``struct sk_buff``'s ``len``) gets the
field's byte offset on this kernel from here, as a ``-D`` macro. Only what that needs is
decoded (the BTF format: linux/Documentation/bpf/btf.rst): the type section is walked for each
record's size, and structs and unions keep their members. Anything unreadable or unexpected
is ``None``: the caller then does without the field, never guesses.
"""

from __future__ import annotations

import array
import functools
import struct
from pathlib import Path

VMLINUX = Path("/sys/kernel/btf/vmlinux")
MAGIC = 0xEB9F
# kinds (BTF_KIND_*) and the bytes that follow their 12-byte record: fixed, or per member
STRUCT, UNION, TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG = 4, 5, 8, 9, 10, 11, 18
_FIXED = {1: 4, 2: 0, 3: 12, 7: 0, 8: 0, 9: 0, 10: 0, 11: 0, 12: 0, 14: 4, 16: 0, 17: 4, 18: 0}
_PER_MEMBER = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}
_QUALIFIERS = (TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG)


class _Btf:
    """One BTF blob, decoded on demand: the walk keeps only where each type's record starts."""

    def __init__(self, data: bytes) -> None:
        magic, _ver, _flags, hdr_len, toff, tlen, soff, slen = struct.unpack_from("<HBBIIIII", data)
        if magic != MAGIC:
            raise ValueError("not BTF")
        self.data = data
        self.str_at = hdr_len + soff
        self.str_end = self.str_at + slen
        self.starts = array.array("Q", [0])  # type id 0 is void
        p, end = hdr_len + toff, hdr_len + toff + tlen
        while p < end:
            self.starts.append(p)
            info = int.from_bytes(data[p + 4 : p + 8], "little")
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            if kind in _FIXED:
                p += 12 + _FIXED[kind]
            elif kind in _PER_MEMBER:
                p += 12 + _PER_MEMBER[kind] * vlen
            else:
                raise ValueError(f"BTF kind {kind} unknown")

    def type(self, type_id: int) -> tuple[int, int, int, int, int]:
        """(name offset, kind, vlen, kind_flag, size or referenced type id)."""
        name_off, info, ref = struct.unpack_from("<III", self.data, self.starts[type_id])
        return name_off, (info >> 24) & 0x1F, info & 0xFFFF, info >> 31, ref

    def name(self, off: int) -> str:
        at = self.str_at + off
        return self.data[at : self.data.index(b"\0", at, self.str_end)].decode()

    def _aggregate(self, type_id: int) -> int | None:
        """The struct or union ``type_id`` names, through typedefs and qualifiers."""
        for _ in range(16):
            _, kind, _, _, ref = self.type(type_id)
            if kind in (STRUCT, UNION):
                return type_id
            if kind not in _QUALIFIERS:
                return None
            type_id = ref
        return None

    def bit_offset(self, type_id: int, member: str) -> tuple[int, int] | None:
        """``member``'s offset in bits within ``type_id`` (looking into anonymous members),
        and its width in bits when it is a bit field (else 0)."""
        _, _, vlen, kflag, _ = self.type(type_id)
        first = self.starts[type_id] + 12
        for i in range(vlen):
            name_off, mtype, off = struct.unpack_from("<III", self.data, first + 12 * i)
            bits, width = (off & 0xFFFFFF, off >> 24) if kflag else (off, 0)
            if name_off and self.name(name_off) == member:
                return bits, width
            if not name_off:
                inner = self._aggregate(mtype)
                found = self.bit_offset(inner, member) if inner is not None else None
                if found is not None:
                    return bits + found[0], found[1]
        return None

    def struct_id(self, name: str) -> int | None:
        for i in range(1, len(self.starts)):
            name_off, kind, _, _, _ = self.type(i)
            if kind == STRUCT and name_off and self.name(name_off) == name:
                return i
        return None


@functools.cache
def member_offset(struct_name: str, member: str, path: Path = VMLINUX) -> int | None:
    """Byte offset of ``struct struct_name``'s ``member`` on the kernel ``path`` describes;
    None when there is no readable BTF, no such member, or it is a bit field. The answer is
    kept (the blob is not: ~5 MB, and a decoded copy would be several times that)."""
    try:
        btf = _Btf(path.read_bytes())
        sid = btf.struct_id(struct_name)
        found = btf.bit_offset(sid, member) if sid is not None else None
    except (OSError, ValueError, struct.error, IndexError, UnicodeDecodeError):
        return None
    if found is None or found[1] or found[0] % 8:
        return None
    return found[0] // 8
