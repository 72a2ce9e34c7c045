"""The probe's legs against the wire, request by request: tcpdump in the server pod is the
truth (profiler.testbed.wire), Envoy's access log the second witness, real Envoy, real BPF.

Each case is a few seconds of traffic. Per request, not only medians: a probe whose request
ids were off by one, or whose legs were swapped, has the right medians and the wrong pairs.
These replace the aggregate-median comparison with Envoy's timers alone, which passed with
the request and response legs swapped."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from profiler.legs import MAIN, SPLIT
from profiler.probes.sidecar import F_DS_TX_CALL, F_US_TX_CALL
from profiler.testbed.accuracy import WireComparison, wire_case
from profiler.testbed.wire import analyse

pytestmark = [pytest.mark.bpf, pytest.mark.testbed, pytest.mark.envoy]
ALL_LEGS = (*MAIN, *SPLIT["request_proxy"], *SPLIT["response_proxy"])
# Requests on the wire that get a span: >= 99% in every case. Without request ids from the
# client the probe pairs a downstream request with an upstream write by worker-thread order,
# which Envoy does not keep in bursts from 10 connections (it writes upstream requests and
# downstream responses in neither the order it read them); a response whose thread-order
# exchange has not answered takes the answer queue's (bpf/sidecar.c, smp_ds_write). The
# repair it replaced swapped with a still-waiting request or left a "local reply" with no
# span (93.6-97.7% with a span measured before the answer queue came; 100% in 10 runs of the
# repair since; 100% in 14 runs with the answer queue, both paths, idle and CPU-loaded node).
COMPLETE = 0.99
# Which downstream socket a span names, per client connection (the wire's 4-tuple): with
# request ids every request of a connection is on one socket. Without them, in bursts of
# identical requests ("GET /" on 10 connections), which of the burst's requests an upstream
# exchange carried cannot be told from order or bytes (~25-57% of spans name another socket
# of the same burst, before this change as after; their legs are those of a neighbour read
# within the same ~100 us, so the per-request legs below still hold): not asserted there.
SOCKET_UNKNOWABLE = {"bursts-10-conns-no-ids"}
# Where the capture looks vs where the probe does. (1) The Envoy -> app packet: tcpdump on lo
# has only the receiving side's copy, after the loopback device's softirq, ~10 us after Envoy's
# write queued the packet (our instant, as for eth0 packets, which tcpdump sees as they are
# queued; measured -11/+9 us per request at the median, both probe paths). (2) The client's
# request: tcpdump copies it as it comes off the pod's eth0, before IP, netfilter (the
# REDIRECT) and TCP run; our arrival is the socket's sk_data_ready after them, 13 us later at
# the median per request (helper H-B's trace of a failed run, lined up on the packets). The
# request_proxy leg is defined from the socket (issue 12), so the wire's is shifted by both;
# with (1) alone the one-connection and mTLS cases failed about 1 run in 3 (ours 22-42 us
# under the wire's p50 against a 20-22 us bound, on the commit before as well).
CAPTURE_POINT_US = {"request_proxy": -10.0 - 13.0, "upstream": 10.0, "response_proxy": 0.0}
# The p99 bound is the issue's, max(100 us, 25%), in every case. mTLS had it relaxed to
# max(200 us, 40%) after two loaded-node failures (ours' p99 167 us under the wire's, medians
# within 11 us): the likely cause was the load's first request, which has no arrival stamp
# (its connection opens before the probe has seen the listener), is often the slowest, and
# was compared as if stamped. Since unstamped legs are left out (below): 8 runs per probe
# path, 2 of them with both cores busy, all within the bound.
P99_FLOOR_US, P99_SHARE = 100.0, 0.25
CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "one-connection-200rps": ({}, {"conns": 1, "period_s": 0.005}),
    "bursts-10-conns-no-ids": ({}, {"conns": 10, "period_s": 0.02, "ids": False}),
    "mtls": ({"mtls": True, "client_sidecar": True}, {"conns": 1, "period_s": 0.005}),
    "concurrency-2": ({"concurrency": 2}, {"conns": 10, "period_s": 0.02}),
}


def _joined(cmp: WireComparison) -> np.ndarray:
    return ~np.isnan(cmp.ours["request_proxy"]) & ~np.isnan(cmp.envoy["request_proxy"])


def _on_wrong_socket(tb: Any, tmp: Path, tag: str) -> tuple[int, int]:
    """(requests whose span names another downstream socket than the rest of its client
    connection's requests, requests with a span): a span given another request's downstream
    half (thread order taken for the truth, ids off by one) lands on the wrong socket."""
    wire = analyse(tmp / f"{tag}.pcap", [tb.state.ports["app"]])
    with (tmp / f"{tag}.csv").open() as f:
        fds = {r["request_id"]: int(r["ds_fd"]) for r in csv.DictReader(f)
               if r["role"] == "sidecar" and r["request_id"]}  # fmt: skip
    by_conn: dict[tuple[str, int, str, int], list[int]] = {}
    for r in wire.requests:
        if r.request_id in fds:
            by_conn.setdefault(r.ds_conn, []).append(fds[r.request_id])
    wrong = sum(len(v) - Counter(v).most_common(1)[0][1] for v in by_conn.values())
    return wrong, sum(len(v) for v in by_conn.values())


def _run(tb: Any, tmp: Path, tag: str, **load: Any) -> tuple[WireComparison, dict[str, Any]]:
    cmp, doc = wire_case(tb, tmp, tag, seconds=2.5, ours_legs=ALL_LEGS, **load)
    print(tag, "sent", cmp.sent, "wire", len(cmp.ids), "with span", cmp.with_span)
    for leg, row in cmp.table().items():
        print("  ", leg, row)
    assert doc["drops"] == 0 and cmp.wire_drops == 0
    assert len(cmp.ids) >= 0.98 * cmp.sent, "the wire did not see the load"
    return cmp, doc


@pytest.mark.parametrize("case", list(CASES))
def test_legs_match_the_wire_request_by_request(
    testbed_factory: Callable[..., Any], tmp_path: Path, case: str
) -> None:
    options, load = CASES[case]
    tb = testbed_factory(app_delay_s=0.001, h2c_port=None, **options)
    cmp, doc = _run(tb, tmp_path, "w", **load)
    assert cmp.with_span >= COMPLETE * len(cmp.ids), (cmp.with_span, len(cmp.ids))
    wrong, spans = _on_wrong_socket(tb, tmp_path, "w")
    print("  spans on another socket than their connection's:", wrong, "of", spans)
    if case not in SOCKET_UNKNOWABLE:
        assert wrong <= 0.01 * spans, (wrong, spans)
    sidecar = doc["sidecars"][0]
    counted = sidecar["local_replies"] + sidecar["incomplete_spans"]
    assert cmp.with_span + counted >= 0.999 * len(cmp.ids)  # none silent
    # the load's connections open at once, before the probe has seen their listener: their
    # first requests have no stamp (later connections to it have, test_probe_arrival); on the
    # syscalls path the warm-up's upstream connections, open before the probe knew their sks,
    # have none on their first responses
    missing = sidecar["arrival_missing"]
    assert missing["request"] <= load["conns"] and missing["response"] <= load["conns"]
    assert "arrival stamps from" in doc["method"]
    if options.get("mtls"):
        assert "TLS read burst" in doc["method"]
    both = _joined(cmp)
    assert both.sum() >= 0.99 * cmp.with_span  # Envoy logged the requests we have
    # A leg that starts or ends at an arrival nobody stamped (counted above) is not what the
    # wire measures: its queue is unknown (0 in the spans file). Those requests are left out
    # of that leg's comparison. They are the first of their connections, often the slowest
    # (pools, handshakes), so kept in they pull ours' p99 below the wire's: the likely cause
    # of the syscalls path's p99 failures in CI (ours 1,564 vs the wire's 3,057 us).
    stamped = {"request_proxy": cmp.ours["request_proxy_queue"] > 0}
    stamped["upstream"] = stamped["response_proxy"] = cmp.ours["response_proxy_queue"] > 0
    for leg in MAIN:
        keep = both & stamped[leg]
        assert keep.sum() >= both.sum() - 2 * load["conns"], leg
        wire = cmp.wire[leg][keep] + CAPTURE_POINT_US[leg]
        ours, envoy = cmp.ours[leg][keep], cmp.envoy[leg][keep]
        w50, w99 = np.median(wire), np.percentile(wire, 99)
        # the tolerance, on the distributions ...
        assert abs(np.median(ours) - w50) <= max(20.0, 0.10 * w50), (leg, np.median(ours), w50)
        # ... p99 against the wire's p98.5..p99.5: of 500 requests the p99 lies between the
        # 5th and 6th slowest, and a tail that sparse moves it by one request (a CI run:
        # the wire's response_proxy tail above p98.5 was 401, 534, 1,092, 1,469, 1,698 ...
        # us; one request, ours 1,704 against the wire's 1,092, moved ours' p99 to 1,464
        # against 1,096, with 499 of 500 requests within 61 us of the wire)
        lo, hi = np.percentile(wire, [98.5, 99.5])
        o99, tol99 = np.percentile(ours, 99), max(P99_FLOOR_US, P99_SHARE * w99)
        if not lo - tol99 <= o99 <= hi + tol99:
            print("  furthest from the wire:", *_worst(cmp, keep, leg), sep="\n    ")
        assert lo - tol99 <= o99 <= hi + tol99, (leg, o99, (lo, w99, hi), tol99)
        # ... and on the pairs: swapped legs or ids off by one fail here
        assert np.median(np.abs(ours - wire)) <= max(20.0, 0.10 * w50), leg
        # Envoy stamps its proxy legs inside them (after the read, before the write)
        if leg == "upstream":
            assert np.mean(ours <= envoy + 20.0) >= 0.99, leg
        else:
            assert np.mean(ours >= envoy - 20.0) >= 0.99, leg
    # queue + work is the leg, request by request
    for leg, (queue, work) in SPLIT.items():
        total = cmp.ours[queue][both] + cmp.ours[work][both]
        assert np.allclose(total, cmp.ours[leg][both], atol=0.01)
        assert (cmp.ours[queue][both] >= 0).all()


def _worst(cmp: WireComparison, keep: np.ndarray, leg: str, n: int = 8) -> list[str]:
    """The requests whose ``leg`` differs most from the wire's, with all three witnesses'
    legs (us): what a failed tail check needs to be explained (a CI run's mTLS p99 failed
    once, ours 828 against the wire's 1,402 us, and was never reproduced)."""
    diff = cmp.ours[leg][keep] - cmp.wire[leg][keep]
    ids = np.array(cmp.ids)[keep]
    flags = cmp.ours_flags[keep] if cmp.ours_flags is not None else np.zeros(len(ids), int)
    rows = []
    for i in np.argsort(-np.abs(diff))[:n]:
        legs = {
            who: [round(float(d[k][keep][i]), 1) for k in MAIN]
            for who, d in (("ours", cmp.ours), ("wire", cmp.wire), ("envoy", cmp.envoy))
        }
        queues = [round(float(cmp.ours[f"{k}_queue"][keep][i]), 1) for k in SPLIT]
        # a write instant that is the call's own (no packet stamped) ends its leg off the wire
        late = [side for side, f in (("us", F_US_TX_CALL), ("ds", F_DS_TX_CALL)) if flags[i] & f]
        rows.append(f"{ids[i]}: {legs} ours' queues {queues} writes timed by the call {late}")
    return rows


def _p50(cmp: WireComparison, who: str, leg: str, mask: np.ndarray | None = None) -> float:
    values = {"ours": cmp.ours, "wire": cmp.wire, "envoy": cmp.envoy}[who][leg]
    keep = _joined(cmp) if mask is None else _joined(cmp) & mask
    return float(np.median(values[keep]))


def test_app_delay_moves_only_upstream(testbed_factory: Callable[..., Any], tmp_path: Path) -> None:
    """Every other request asks the app for 3 ms more (alternated on one connection):
    upstream grows by what the app applied (>= 3 ms on the wire) +- 10% in our legs, the proxy
    legs do not take the delay: they move as the wire's do, and by far less than it."""
    tb = testbed_factory(app_delay_s=0.001, h2c_port=None)
    cmp, doc = _run(tb, tmp_path, "d", conns=1, period_s=0.006, alt_delay_ms=3)
    delayed = np.isin(np.array(cmp.ids), np.array(doc["_delayed_ids"]))
    assert 0.4 < delayed.mean() < 0.6
    # the wire says what the app's timer applied (at least the 3 ms asked; late on a loaded
    # node, as Envoy's fault timer was), ours moves with it
    applied = _p50(cmp, "wire", "upstream", delayed) - _p50(cmp, "wire", "upstream", ~delayed)
    assert applied >= 2700.0, applied
    moved = _p50(cmp, "ours", "upstream", delayed) - _p50(cmp, "ours", "upstream", ~delayed)
    assert abs(moved - applied) <= 0.10 * applied, (moved, applied)
    # The proxy legs are not still: after 3 ms idle Envoy's worker answers slower, on the wire
    # as in ours (response_proxy +14..+120 us on the delayed requests in 11 runs here, ours
    # within 8 us of the wire's each time, request_proxy within 13; a CI run failed when this
    # asked for no move beyond 100 us). So ours move as the wire's do (20 us, the medians'
    # bound above), and a delay put in the wrong leg, the whole ~3 ms, fails the 10% bound.
    for leg in ("request_proxy", "response_proxy"):
        moved = _p50(cmp, "ours", leg, delayed) - _p50(cmp, "ours", leg, ~delayed)
        wire_moved = _p50(cmp, "wire", leg, delayed) - _p50(cmp, "wire", leg, ~delayed)
        assert abs(moved - wire_moved) <= 20.0, (leg, moved, wire_moved)
        assert abs(moved) <= 0.10 * applied, (leg, moved, applied)
    for leg in (*SPLIT["request_proxy"], *SPLIT["response_proxy"]):  # the wire has no split
        moved = _p50(cmp, "ours", leg, delayed) - _p50(cmp, "ours", leg, ~delayed)
        assert abs(moved) <= 0.10 * applied, (leg, moved, applied)


def test_fault_filter_delay_moves_only_request_work(
    testbed_factory: Callable[..., Any], tmp_path: Path
) -> None:
    """Envoy's fault filter holds every request 3 ms before routing it: request_proxy_work
    (and request_proxy) grow by that delay +- 10% against the same testbed without it; the
    queue legs, upstream and response_proxy do not move."""
    runs = {}
    for name, fault in (("base", 0.0), ("fault", 0.003)):
        tb = testbed_factory(app_delay_s=0.001, h2c_port=None, fault_delay_s=fault)
        runs[name], _ = _run(tb, tmp_path, name, conns=1, period_s=0.008)
        tb.down()
    base, fault = runs["base"], runs["fault"]
    # The delay the filter applied, by Envoy's own timer (DS_RX_BEG -> US_TX_END holds it): at
    # least the 3 ms asked; on a loaded node its timer fires late (6.2 ms seen), so our legs and
    # the wire are held to what Envoy applied, request by request, within 10%. Per request:
    # the timer fires at ~3.3 or ~6.5 ms here, about half of each in one run, so the medians
    # of two witnesses of the same requests can fall on either side of the gap (ours 4,409 us
    # moved against Envoy's 3,282, the wire with ours); what is left of each request's leg
    # once Envoy's own timer is taken off does not have two modes.
    applied = _p50(fault, "envoy", "request_proxy") - _p50(base, "envoy", "request_proxy")
    assert applied >= 2700.0, applied

    def beyond_envoy(cmp: WireComparison, who: str, leg: str) -> float:
        keep = _joined(cmp)
        values = {"ours": cmp.ours, "wire": cmp.wire}[who][leg]
        return float(np.median(values[keep] - cmp.envoy["request_proxy"][keep]))

    for who, leg in (("ours", "request_proxy_work"), ("ours", "request_proxy"),
                     ("wire", "request_proxy")):  # fmt: skip
        left = beyond_envoy(fault, who, leg) - beyond_envoy(base, who, leg)
        assert abs(left) <= 0.10 * applied, (who, leg, left, applied)
    # The other legs stay where they were, within 10% of the delay: two testbeds differ by
    # more than 100 us on the app's 1 ms (upstream moved -142 us in a CI run), while a delay
    # in the wrong leg would move it by the whole ~3 ms.
    for leg in ("request_proxy_queue", "upstream", "response_proxy", "response_proxy_queue",
                "response_proxy_work"):  # fmt: skip
        moved = _p50(fault, "ours", leg) - _p50(base, "ours", leg)
        assert abs(moved) <= max(100.0, 0.10 * applied), (leg, moved, applied)
