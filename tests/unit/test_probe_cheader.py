"""The header reader that gives Python the probe's record dtype and enums without BCC."""

from __future__ import annotations

import numpy as np
import pytest

from profiler.probes import cheader
from profiler.probes.sidecar import (
    F_DRAINED,
    HEADER,
    KIND_PROXY,
    KIND_SERVER,
    RINGBUF_PAGES,
    ROLE_DS,
    ROLE_US,
    SPAN_DTYPE,
)


def test_span_record_layout_is_the_c_one() -> None:
    """160 bytes, 8-aligned; the offsets a C compiler gives (u8 rid_len, u8 pad, u16 status at
    94, char rid[48] at 96; the arrival stamps after ds_tx_end; the HTTP/2 fields last): a field
    added or reordered in sidecar.h shows up here."""
    assert SPAN_DTYPE.itemsize == 160
    fields = SPAN_DTYPE.fields
    assert fields is not None
    names = ("ds_rx_beg", "ds_rx_arr", "us_rx_arr", "tgid", "kind", "rid_len", "pad", "status",
             "rid", "ds_tx_data", "ds_sid", "us_sid")  # fmt: skip
    assert {n: fields[n][1] for n in names} == {
        "ds_rx_beg": 0,
        "ds_rx_arr": 40,
        "us_rx_arr": 48,
        "tgid": 64,
        "kind": 88,
        "rid_len": 92,
        "pad": 93,
        "status": 94,
        "rid": 96,
        "ds_tx_data": 144,
        "ds_sid": 152,
        "us_sid": 156,
    }
    assert SPAN_DTYPE["rid"].shape == (48,)


def test_enums_and_flags_come_from_the_header() -> None:
    assert (ROLE_DS, ROLE_US) == (1, 2)
    assert (KIND_PROXY, KIND_SERVER) == (1, 2)
    assert F_DRAINED == 0x8
    assert HEADER.enums["smp_phase"] == {
        "SMP_PHASE_IDLE": 0,
        "SMP_PHASE_REQUEST": 1,
        "SMP_PHASE_RESPONSE": 2,
    }
    assert RINGBUF_PAGES == 256  # the one default ring size (smp_common.h)


def test_nested_struct_is_aligned_as_in_c() -> None:
    h = cheader.parse(
        """
        #define N 3
        struct inner { u8 a; u64 b; };
        struct outer { u8 x; struct inner in; u16 y[N]; };
        """
    )
    inner, outer = h.structs["inner"], h.structs["outer"]
    assert inner.itemsize == 16 and inner.fields is not None and inner.fields["b"][1] == 8
    assert outer.fields is not None
    assert outer.fields["in"][1] == 8  # aligned to the inner struct's 8
    assert outer.fields["y"][1] == 24
    assert outer.itemsize == 32  # 30 rounded up to 8


def test_enum_values_count_on_from_the_last_given() -> None:
    h = cheader.parse("enum e { A, B = 5, C, /* comment */ D = 0x10 };")
    assert h.enums["e"] == {"A": 0, "B": 5, "C": 6, "D": 16}
    assert h.const("C") == 6


@pytest.mark.parametrize(
    "text",
    [
        "struct s { float f; };",  # a type the subset does not have
        "struct s { u8 a[M]; };",  # an array size that is no number and no #define
        "struct s { u8 *p; };",  # a pointer
    ],
)
def test_header_outside_the_subset_fails_loudly(text: str) -> None:
    with pytest.raises(ValueError):
        cheader.parse(text)


def test_records_decode_from_raw_bytes() -> None:
    """A record written as C would (little-endian bytes at the C offsets) reads back."""
    raw = bytearray(160)
    raw[0:8] = (123456789).to_bytes(8, "little")
    raw[64:68] = (4242).to_bytes(4, "little")
    raw[92] = 3
    raw[96:99] = b"abc"
    raw[152:156] = (31).to_bytes(4, "little")
    rec = np.frombuffer(bytes(raw), dtype=SPAN_DTYPE)[0]
    assert int(rec["ds_rx_beg"]) == 123456789
    assert int(rec["tgid"]) == 4242
    assert int(rec["ds_sid"]) == 31
    assert bytes(rec["rid"][: rec["rid_len"]].tobytes()) == b"abc"
