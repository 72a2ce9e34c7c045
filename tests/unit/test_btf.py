"""profiler/btf.py: struct member offsets from BTF, on a hand-built blob (known answers: a
member inside an anonymous member reached through a typedef, a bit field, a missing member)
and on this kernel's own BTF (the sock_common offsets the probe uses)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from profiler import btf


def _blob() -> bytes:
    strings = b"\0int\0inner\0inner_t\0outer\0a\0b\0x\0bf\0"
    at = {s: strings.index(b"\0" + s.encode() + b"\0") + 1 for s in
          ("int", "inner", "inner_t", "outer", "a", "b", "x", "bf")}  # fmt: skip

    def rec(name: str | None, kind: int, vlen: int, size: int, kflag: int = 0) -> bytes:
        info = (kflag << 31) | (kind << 24) | vlen
        return struct.pack("<III", at[name] if name else 0, info, size)

    def member(name: str | None, type_id: int, off: int) -> bytes:
        return struct.pack("<III", at[name] if name else 0, type_id, off)

    types = b"".join([
        rec("int", 1, 0, 4) + struct.pack("<I", 32),                               # 1
        rec("inner", 4, 2, 8) + member("a", 1, 0) + member("b", 1, 32),            # 2
        rec("inner_t", 8, 0, 2),                                                   # 3 -> 2
        rec("outer", 4, 3, 16, kflag=1) + member("x", 1, 0) + member(None, 3, 64)  # 4
        + member("bf", 1, 96 | (3 << 24)),
    ])  # fmt: skip
    header = struct.pack("<HBBIIIII", btf.MAGIC, 1, 0, 24, 0, len(types), len(types), len(strings))
    return header + types + strings


@pytest.fixture()
def blob(tmp_path: Path) -> Path:
    p = tmp_path / "vmlinux"
    p.write_bytes(_blob())
    return p


def test_direct_member(blob: Path) -> None:
    assert btf.member_offset("outer", "x", blob) == 0


def test_member_of_an_anonymous_member_through_a_typedef(blob: Path) -> None:
    assert btf.member_offset("outer", "a", blob) == 8
    assert btf.member_offset("outer", "b", blob) == 12  # 64 + 32 bits, not 32 or 64


def test_bit_field_missing_member_and_missing_struct_are_none(blob: Path) -> None:
    assert btf.member_offset("outer", "bf", blob) is None
    assert btf.member_offset("outer", "nope", blob) is None
    assert btf.member_offset("nope", "x", blob) is None


def test_not_btf_or_absent_is_none(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x7fELF" + bytes(64))
    assert btf.member_offset("sk_buff", "len", junk) is None
    assert btf.member_offset("sk_buff", "len", tmp_path / "absent") is None


def test_this_kernel_agrees_with_the_probes_fixed_sock_common_offsets() -> None:
    # bpf/sidecar.c reads skc_num at 14 and skc_net at 48 (test_probe_arrival checks them
    # against real sockets); both sit inside anonymous unions of struct sock_common
    assert btf.member_offset("sock_common", "skc_num") == 14
    assert btf.member_offset("sock_common", "skc_net") == 48
    assert btf.member_offset("sk_buff", "len") is not None


def test_only_the_answer_is_kept_not_the_blob(blob: Path) -> None:
    """A daemon looks up one offset and runs for weeks: the ~5 MB blob (and any decoded form
    of it) must not stay in memory after the lookup."""
    import gc

    assert btf.member_offset("outer", "b", blob) == 12
    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, btf._Btf)]
