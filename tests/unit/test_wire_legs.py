"""profiler/legs.py: legs from a record's six instants, with arrival stamps and without."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from profiler import legs
from profiler.capture.document import read_spans, write_spans
from profiler.probes.sidecar import SPAN_DTYPE

US = 1000  # ns


def _spans(rows: list[dict[str, int]]) -> np.ndarray:
    out = np.zeros(len(rows), dtype=SPAN_DTYPE)
    for i, r in enumerate(rows):
        for k, v in r.items():
            out[i][k] = v
    return out


# ds_rx_arr, ds_rx_beg, us_tx_end, us_rx_arr, us_rx_beg, ds_tx_end (us): prime gaps
ONE = {"ds_rx_arr": 1000, "ds_rx_beg": 1003, "us_tx_end": 1010, "us_rx_arr": 1023,
       "us_rx_beg": 1040, "ds_tx_end": 1059}  # fmt: skip


def _ns(r: dict[str, int]) -> dict[str, int]:
    return {k: v * US for k, v in r.items()}


def test_six_instants_give_every_leg() -> None:
    ok, at = legs.proxy_instants(_spans([_ns(ONE)]))
    assert ok.tolist() == [True]
    got = {k: int(v[0]) // US for k, v in legs.proxy_legs_ns(at).items()}
    assert got == {
        "request_proxy": 10,
        "request_proxy_queue": 3,
        "request_proxy_work": 7,
        "upstream": 13,
        "response_proxy": 36,
        "response_proxy_queue": 17,
        "response_proxy_work": 19,
        "sidecar_total": 46,
    }


def test_unknown_arrival_is_the_read_and_counted() -> None:
    r = dict(_ns(ONE), ds_rx_arr=0, us_rx_arr=0)
    s = _spans([r])
    _, at = legs.proxy_instants(s)
    got = {k: int(v[0]) // US for k, v in legs.proxy_legs_ns(at).items()}
    assert got["request_proxy_queue"] == 0 and got["request_proxy"] == 7
    assert got["response_proxy_queue"] == 0 and got["upstream"] == 30
    assert legs.arrivals_missing(s) == (1, 1)


def test_arrival_out_of_place_never_makes_a_negative_leg() -> None:
    """An arrival after its read is not one (the read's instant is used); a response that
    'arrived' before its request went up starts at the request's write."""
    r = dict(_ns(ONE), ds_rx_arr=1005 * US, us_rx_arr=1007 * US)
    _, at = legs.proxy_instants(_spans([r]))
    got = {k: int(v[0]) // US for k, v in legs.proxy_legs_ns(at).items()}
    assert got["request_proxy_queue"] == 0
    assert got["upstream"] == 0 and got["response_proxy_queue"] == 30
    assert min(got.values()) >= 0


def test_records_out_of_order_are_incomplete() -> None:
    bad = dict(_ns(ONE), us_tx_end=900 * US)
    ok, _ = legs.proxy_instants(_spans([_ns(ONE), bad, dict(_ns(ONE), ds_rx_beg=0)]))
    assert ok.tolist() == [True, False, False]


def test_every_leg_has_one_definition() -> None:
    for leg in (*legs.PROXY, *legs.APP):
        assert bool(leg.start and leg.end) + bool(leg.parts) + leg.joined == 1, leg.name
    for parent, parts in legs.SPLIT.items():
        p = legs.BY_NAME[parent]
        q, w = (legs.BY_NAME[x] for x in parts)
        assert (q.start, q.end, w.start, w.end) == (p.start, q.end, q.end, p.end)


def test_spans_file_has_arrivals_and_queue_work(tmp_path: Path) -> None:
    s = _spans([dict(_ns(ONE), tgid=7, kind=1), dict(_ns(ONE), ds_rx_arr=0, tgid=7, kind=1)])
    f = tmp_path / "spans.csv"
    assert write_spans(f, [("sidecar", s)]) == 2
    rows = read_spans(f)
    assert int(rows[0]["ds_rx_arr_ns"]) == 1000 * US
    assert float(rows[0]["request_proxy_queue_us"]) == 3.0
    assert float(rows[0]["request_proxy_us"]) == 10.0
    assert float(rows[0]["response_proxy_work_us"]) == 19.0
    assert int(rows[1]["ds_rx_arr_ns"]) == int(rows[1]["ds_rx_beg_ns"])  # unknown: the read
    values = legs.proxy_legs_us([s])
    assert values["request_proxy"].tolist() == [10.0, 7.0]
    assert values["response_proxy_queue"].tolist() == [17.0, 17.0]
