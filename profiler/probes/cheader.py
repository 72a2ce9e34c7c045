"""Read a probe's shared header (``bpf/<probe>.h``) in Python: integer macros, enums, and a
struct as a numpy dtype with the C compiler's layout, without BCC.

The header is the one definition of the event struct and of the named constants both sides
use (libbpf-tools' ``x.h``). This parser reads only the subset those headers keep to:
``#define NAME <integer>``, ``enum name { A = <integer>, ... };``, and structs whose fields are
``u8/u16/u32/u64/s8/s16/s32/s64/char`` scalars, arrays of those (sized by a number or a macro),
or a struct defined earlier in the same header. Anything else raises ``ValueError`` so a header
edit that leaves the subset fails loudly, in a unit test, not as a wrong decode.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

_SCALARS = {
    "u8": "<u1",
    "u16": "<u2",
    "u32": "<u4",
    "u64": "<u8",
    "s8": "<i1",
    "s16": "<i2",
    "s32": "<i4",
    "s64": "<i8",
    "char": "S1",
}
_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_DEFINE = re.compile(r"^\s*#define\s+(\w+)\s+(\(?-?(?:0x[0-9a-fA-F]+|\d+)\)?)[uUlL]*\s*$", re.M)
_ENUM = re.compile(r"\benum\s+(\w+)\s*\{(.*?)\}\s*;", re.S)
_STRUCT = re.compile(r"\bstruct\s+(\w+)\s*\{(.*?)\}\s*;", re.S)
_FIELD = re.compile(r"^(?:struct\s+)?(\w+)\s+(\w+)\s*(?:\[\s*(\w+)\s*\])?$")


@dataclass
class Header:
    defines: dict[str, int] = field(default_factory=dict)
    enums: dict[str, dict[str, int]] = field(default_factory=dict)
    structs: dict[str, np.dtype[Any]] = field(default_factory=dict)

    def const(self, name: str) -> int:
        """A ``#define`` or an enum constant, by name."""
        if name in self.defines:
            return self.defines[name]
        for values in self.enums.values():
            if name in values:
                return values[name]
        raise KeyError(name)


def _int(text: str) -> int:
    return int(text.strip().strip("()"), 0)


def _size(text: str, defines: dict[str, int]) -> int:
    if text.isdigit():
        return int(text)
    if text in defines:
        return defines[text]
    raise ValueError(f"array size {text!r} is neither a number nor a #define")


def _struct_dtype(name: str, body: str, hdr: Header) -> np.dtype[Any]:
    names: list[str] = []
    formats: list[Any] = []
    offsets: list[int] = []
    offset = 0
    align = 1
    for decl in (d.strip() for d in body.split(";")):
        if not decl:
            continue
        m = _FIELD.match(" ".join(decl.split()))
        if m is None:
            raise ValueError(f"struct {name}: cannot read field {decl!r}")
        ctype, fname, count = m.groups()
        if ctype in _SCALARS:
            base: np.dtype[Any] = np.dtype(_SCALARS[ctype])
            base_align = base.itemsize
        elif ctype in hdr.structs:
            base = hdr.structs[ctype]
            base_align = base.alignment
        else:
            raise ValueError(f"struct {name}: unknown type {ctype!r} of {fname}")
        fmt: Any = base
        if count is not None:
            n = _size(count, hdr.defines)
            fmt = np.dtype((base, (n,)))
        offset = (offset + base_align - 1) // base_align * base_align
        names.append(fname)
        formats.append(fmt)
        offsets.append(offset)
        offset += np.dtype(fmt).itemsize
        align = max(align, base_align)
    size = (offset + align - 1) // align * align
    dt = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": size})
    # numpy's alignment of a packed-offsets dtype is 1: carry the C one for nesting
    return np.dtype(dt, align=False) if align == 1 else _aligned(dt, align)


def _aligned(dt: np.dtype[Any], align: int) -> np.dtype[Any]:
    """The same layout, flagged aligned so it nests at the C alignment."""
    fields = dt.fields
    assert fields is not None
    names = list(fields)
    aligned = np.dtype(
        {
            "names": names,
            "formats": [fields[n][0] for n in names],
            "offsets": [fields[n][1] for n in names],
            "itemsize": dt.itemsize,
        },
        align=True,
    )
    if aligned.alignment != align or aligned.itemsize != dt.itemsize:
        raise ValueError(f"struct layout mismatch (alignment {aligned.alignment} != {align})")
    return aligned


def parse(text: str) -> Header:
    """Every integer macro, enum and struct of a header's text, in order."""
    text = _COMMENT.sub(" ", text)
    hdr = Header()
    for m in _DEFINE.finditer(text):
        hdr.defines[m.group(1)] = _int(m.group(2))
    for m in _ENUM.finditer(text):
        values: dict[str, int] = {}
        nxt = 0
        for item in (i.strip() for i in m.group(2).split(",")):
            if not item:
                continue
            key, _, value = (p.strip() for p in item.partition("="))
            nxt = _int(value) if value else nxt
            values[key] = nxt
            nxt += 1
        hdr.enums[m.group(1)] = values
    for m in _STRUCT.finditer(text):
        hdr.structs[m.group(1)] = _struct_dtype(m.group(1), m.group(2), hdr)
    return hdr


@cache
def read(path: Path) -> Header:
    return parse(path.read_text())
