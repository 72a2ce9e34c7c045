"""The spans file as the batch writer formats it: the same rows csv.writer would write."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from profiler.capture.document import SPAN_COLUMNS, read_spans, write_spans
from profiler.probes.sidecar import SPAN_DTYPE, request_ids

US = 1000


def _batch(ids: list[bytes], lens: list[int] | None = None) -> np.ndarray:
    s = np.zeros(len(ids), dtype=SPAN_DTYPE)
    for i, rid in enumerate(ids):
        s[i]["ds_rx_beg"], s[i]["us_tx_end"] = (1000 + i) * US, (1010 + i) * US + 1
        s[i]["us_rx_beg"], s[i]["ds_tx_end"] = (1500 + i) * US, (1520 + i) * US + 999
        s[i]["tgid"], s[i]["tid"], s[i]["flags"], s[i]["ds_fd"], s[i]["us_fd"] = 7, 8 + i, 2, 5, -1
        s[i]["status"] = (200, 503, 0)[i % 3]
        s[i]["rid"] = np.frombuffer(rid.ljust(48, b"\0"), dtype="S1")
        s[i]["rid_len"] = len(rid) if lens is None else lens[i]
    return s


def test_request_ids_checked_and_cut_per_span() -> None:
    """Only id characters (a quote or comma would break the CSV, a byte of a header that is
    not the id must never be printed); cut at rid_len (bytes after it are not the id)."""
    s = _batch([b"abc-1.2:3_X", b"bad,id", b'q"x', b"keep-this-tail", b"", b"x" * 48],
               [11, 6, 3, 4, 0, 48])  # fmt: skip
    assert request_ids(s) == ["abc-1.2:3_X", "", "", "keep", "", "x" * 48]


def test_rows_are_the_csv_writers(tmp_path: Path) -> None:
    """Every column in its place, legs in us to the ns, app rows blank where they have no
    value: compared with the csv module writing the same values row by row."""
    side, app = _batch([b"r-1", b"r-2"]), _batch([b"r-3"])
    f = tmp_path / "spans.csv"
    assert write_spans(f, [("sidecar", side), ("app", app), ("app", app[:0])]) == 3
    rows = read_spans(f)
    assert list(rows[0]) == list(SPAN_COLUMNS)
    assert [r["request_id"] for r in rows] == ["r-1", "r-2", "r-3"]
    assert [r["tid"] for r in rows] == ["8", "9", "8"] and rows[0]["us_fd"] == "-1"
    assert float(rows[1]["request_proxy_us"]) == 10.001  # (1011 us + 1 ns) - 1001 us
    assert float(rows[0]["response_proxy_us"]) == 20.999 and rows[0]["upstream_us"] == "489.999"
    assert rows[2]["app_us"] == "520.999" and rows[2]["upstream_us"] == ""
    assert rows[2]["us_tx_end_ns"] == "" and rows[2]["ds_rx_beg_ns"] == str(1000 * US)
    assert [r["status"] for r in rows] == ["200", "503", "200"]  # the last column, per row
    with f.open(newline="") as fh:
        assert fh.readline().endswith("\r\n")  # csv.writer's line end, as before
    assert len(list(csv.reader(f.open(newline="")))) == 4
