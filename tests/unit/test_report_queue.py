"""Queue vs work of the proxy legs in every report format, from known numbers.

Fixtures (tests/fixtures/report/, written by ``queue_bundle`` and ``queue_capture`` below; after
a deliberate change: ``REPORT_UPDATE_GOLDEN=1 pytest tests/unit/test_report_queue.py`` and
review the diff):

- ``bundle-queue.json``: a 3-rate run (A/B and captures) whose sidecar queue grows with the
  rate while its work stays: per request, in us,

  | rate | request queue | request work | response queue | response work |
  |------|---------------|--------------|----------------|---------------|
  | 100  | 37            | 241          | 13             | 199           |
  | 200  | 211           | 243          | 97             | 197           |
  | 400  | 509           | 239          | 503            | 191           |

  (queues: 95% at that value, 5% at 4x it, so p99 = 4 x p50; works constant); step 1 has 3
  responses without an arrival stamp.
- ``capture-queue.json``: one window, two sidecars: envoy 7001 measured (step 2's numbers),
  envoy 7002 without any arrival stamp (its queue is unknown: never printed as 0).

The older fixtures (bundle.json, capture.json) have no queue fields: they render "-" and a note.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from profiler import report
from profiler.legs import PROXY_LEGS, SPLIT
from profiler.report.view import NO_STAMPS, OLD_FILE_NOTE
from profiler.smp.bundle import write_bundle

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "report"
GOLDEN = Path(__file__).parent / "golden"
QBUNDLE, QCAPTURE = FIX / "bundle-queue.json", FIX / "capture-queue.json"
OLD_BUNDLE, OLD_CAPTURE = FIX / "bundle.json", FIX / "capture.json"
UPDATE = os.environ.get("REPORT_UPDATE_GOLDEN") == "1"

RATES = (100.0, 200.0, 400.0)
# (request queue, request work, response queue, response work) p50 per rate step, us
STEPS = ((37, 241, 13, 199), (211, 243, 97, 197), (509, 239, 503, 191))
MISSING = ({"request": 0, "response": 0}, {"request": 0, "response": 3},
           {"request": 0, "response": 0})  # fmt: skip


def _parts(n: int, rq: int, rw: int, sq: int, sw: int) -> dict[str, np.ndarray]:
    tail = max(1, n // 20)  # 5%: p99 lands in it, p50 does not

    def queue(v: int) -> np.ndarray:
        return np.array([v] * (n - tail) + [4 * v] * tail, dtype=np.float64)

    rqa, sqa = queue(rq), np.roll(queue(sq), n // 2)  # tails on other requests
    rwa, swa = np.full(n, float(rw)), np.full(n, float(sw))
    parts = {
        "request_proxy_queue": rqa,
        "request_proxy_work": rwa,
        "response_proxy_queue": sqa,
        "response_proxy_work": swa,
        "request_proxy": rqa + rwa,
        "response_proxy": sqa + swa,
        "upstream": np.full(n, 1000.0),
        "sidecar_total": rqa + rwa + sqa + swa,
    }
    return {k: parts[k] for k in PROXY_LEGS if k in parts}  # the capture's order


def _legs(n: int, step: tuple[int, int, int, int]) -> dict[str, Any]:
    from tests.unit import smp_fixtures as fx

    return {k: fx.leg(v) for k, v in _parts(n, *step).items()}


def queue_bundle(path: Path) -> None:
    from tests.unit import smp_fixtures as fx

    b = fx.bundle(rates=RATES, repeat=1, shift_us=500.0)
    for r in b.records:
        if r.role == "mesh" and r.capture is not None:
            sc = r.capture["sidecars"][0]
            sc["legs"] = _legs(sc["requests"], STEPS[r.step])
            sc["arrival_missing"] = dict(MISSING[r.step])
    write_bundle(b, path)


def queue_capture(path: Path) -> None:
    doc = json.loads(OLD_CAPTURE.read_text())
    base = doc["sidecars"][0]
    a, b = copy.deepcopy(base), copy.deepcopy(base)
    a.update(pid=7001, requests=401, legs=_legs(401, STEPS[2]))
    a["arrival_missing"] = {"request": 0, "response": 0}
    b.update(pid=7002, requests=211, legs=_legs(211, (0, 251, 0, 181)))
    b["arrival_missing"] = {"request": 211, "response": 211}  # no arrival hook: queue unknown
    doc["sidecars"] = [a, b]
    doc["method"] += "; no arrival stamps on 7002 (queue legs not measured)"
    path.write_text(json.dumps(doc, indent=1) + "\n")


if UPDATE:
    queue_bundle(QBUNDLE)
    queue_capture(QCAPTURE)


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text)
    assert text == path.read_text()


def _render(fmt: str, path: Path, **opts: object) -> str:
    return report.get(fmt, **opts).render(report.load(path))


def _rows(text: str, title: str) -> list[list[str]]:
    """The cells of the terminal table titled ``title`` (rich box drawing), one list per row."""
    block = text.split(title, 1)[1].split("└", 1)[0]
    return [
        [c.strip() for c in ln.strip("│").split("│")]
        for ln in block.splitlines()
        if ln.startswith("│")
    ]


QUEUE = "Sidecar queue vs work"


def test_queue_table_of_a_run_is_the_known_numbers_in_ms() -> None:
    """Each step's queue and work p50 in ms, in the order request queue, request work,
    response queue, response work. Catches queue and work swapped (37 vs 241), request and
    response swapped (37 vs 13), us printed as ms (37.000) or s (0.000037), a step off by one,
    and counts of unstamped responses lost or taken from the other step."""
    text = _render("terminal", QBUNDLE, width=100)
    rows = _rows(text, QUEUE)
    assert rows == [
        ["100", "0.037", "0.241", "0.013", "0.199"],
        ["200", "0.211", "0.243", "0.097", "0.197"],
        ["400", "0.509", "0.239", "0.503", "0.191"],
    ]
    flat = text.replace("\n", " ")
    assert flat.count("arrival stamp") == 1
    assert "note: step 1 (200 req/s): 3 of 2,000 responses had no arrival stamp (their" in flat


def test_queue_grows_with_rate_and_work_does_not() -> None:
    rows = _rows(_render("terminal", QBUNDLE, width=100), QUEUE)
    rq = [float(r[1]) for r in rows]
    rw = [float(r[2]) for r in rows]
    assert rq == sorted(rq) and rq[-1] > 10 * rq[0]
    assert max(rw) - min(rw) < 0.01


def test_queue_table_fits_a_100_column_terminal() -> None:
    text = _render("terminal", QBUNDLE, width=100)
    block = QUEUE + text.split(QUEUE, 1)[1].split("└", 1)[0]
    assert max(len(ln) for ln in block.splitlines()) <= 100
    # not wrapped: every header is on one line of the table
    head = next(ln for ln in block.splitlines() if ln.startswith("┃"))
    assert "request queue" in head and "response work" in head


def test_terminal_and_markdown_of_the_queue_bundle_match_golden() -> None:
    _golden("report_queue_bundle_terminal.txt", _render("terminal", QBUNDLE, width=100))
    _golden("report_queue_bundle.md", _render("markdown", QBUNDLE))


def test_markdown_queue_table_has_the_same_cells() -> None:
    md = _render("markdown", QBUNDLE)
    block = md.split(QUEUE, 1)[1].split("\n\n", 2)[1]
    lines = block.splitlines()
    assert lines[0] == ("| rate | request queue | request work | response queue | response work |")
    assert lines[2:] == [
        "| 100 | 0.037 | 0.241 | 0.013 | 0.199 |",
        "| 200 | 0.211 | 0.243 | 0.097 | 0.197 |",
        "| 400 | 0.509 | 0.239 | 0.503 | 0.191 |",
    ]
    assert "- note: step 1 (200 req/s): 3 of 2,000 responses had no arrival stamp" in md


def test_json_carries_queue_and_work_per_step() -> None:
    """p50 and p99 (4 x p50 by construction) in ms, per leg of ``legs.SPLIT``: catches p50 and
    p99 swapped, and a state that hides the partial stamps."""
    steps = json.loads(_render("json", QBUNDLE))["steps"]
    for s, (rq, rw, sq, sw), missing in zip(steps, STEPS, MISSING, strict=True):
        qw = {q["leg"]: q for q in s["queue_work"]}
        assert list(qw) == list(SPLIT)
        assert qw["request_proxy"]["queue_ms"] == rq / 1000
        # p99 is 4 x p50 (to the histogram's bucket above 1 ms): p50 and p99 not swapped
        assert qw["request_proxy"]["queue_p99_ms"] == pytest.approx(4 * rq / 1000, rel=0.001)
        assert qw["request_proxy"]["work_ms"] == rw / 1000
        assert qw["response_proxy"]["queue_ms"] == sq / 1000
        assert qw["response_proxy"]["work_ms"] == sw / 1000
        assert s["arrival_missing"] == missing
        assert qw["response_proxy"]["state"] == ("partial" if missing["response"] else "measured")
        assert qw["request_proxy"]["state"] == "measured"
    yaml_text = _render("yaml", QBUNDLE)
    assert "queue_work:" in yaml_text and "queue_p99_ms: 2.0355" in yaml_text


def test_html_has_the_queue_table_and_the_stacked_plot() -> None:
    html = _render("html", QBUNDLE)
    assert f"<h2>{QUEUE}" in html
    assert "<td>400</td><td>0.509</td><td>0.239</td><td>0.503</td><td>0.191</td>" in html
    assert re.search(r'<figure id="plot-queue"[^>]*><svg', html)


def test_agreement_is_printed_in_every_format() -> None:
    """eBPF vs A/B, agreeing or not (and by how much), in every format of a run. The mesh adds
    500 us (A/B); the sidecar's legs sum to 490 us at 100 req/s (agree) and to 1,442 us at
    400 req/s (disagree, by about 0.94 ms)."""
    term = _render("terminal", QBUNDLE, width=140)
    rows = _rows(term, "eBPF vs A/B")
    assert [r[0] for r in rows] == ["100", "200", "400"]
    assert rows[0][-1] == "yes" and rows[2][-1].startswith("NO, by 0.9")
    assert "eBPF and A/B DISAGREE by 0.9" in term.replace("\n", " ")
    md = _render("markdown", QBUNDLE)
    assert "## eBPF vs A/B" in md and "| NO, by 0.9" in md and "DISAGREE by 0.9" in md
    html = _render("html", QBUNDLE)
    assert "<h2>eBPF vs A/B" in html and "<td>NO, by 0.9" in html
    for fmt in ("json", "yaml"):
        import yaml

        doc = yaml.safe_load(_render(fmt, QBUNDLE))
        ab = [s["ebpf_vs_ab"] for s in doc["steps"]]
        assert [a["agree"] for a in ab] == [True, False, False]
        assert abs(ab[2]["difference_ms"]) > 0.9
        assert "DISAGREE by 0.9" in doc["meaning"]
    smp = json.loads(_render("smp", QBUNDLE))
    assert [s["ebpf_vs_ab"]["agree"] for s in smp["details"]["steps"]] == [True, False, False]


def test_capture_queue_table_says_no_arrival_stamps_never_0() -> None:
    text = _render("terminal", QCAPTURE, width=100)
    assert _rows(text, QUEUE) == [
        ["envoy (7001)", "0.509", "0.239", "0.503", "0.191"],
        ["envoy (7002)", NO_STAMPS, "0.251", NO_STAMPS, "0.181"],
    ]
    flat = text.replace("\n", " ")
    assert "envoy (7002): none of the 211 requests had an arrival stamp (queue unknown)" in flat
    assert "envoy (7001):" not in flat
    legs = {(r[0], r[1]): r for r in _rows(text, "Legs (eBPF, ms)")}
    assert legs[("envoy (7002)", "request_proxy_queue")][3:] == [NO_STAMPS, "-", "-"]
    assert legs[("envoy (7001)", "request_proxy_queue")][3].startswith("0.509")
    # p99: 4 x p50 = 2,036 us, the midpoint of its 4-us bucket (2,035.5)
    assert legs[("envoy (7001)", "request_proxy_queue")][5] == "2.035"


def test_capture_queue_in_every_format() -> None:
    _golden("report_queue_capture_terminal.txt", _render("terminal", QCAPTURE, width=100))
    md = _render("markdown", QCAPTURE)
    assert f"| envoy (7002) | {NO_STAMPS} | 0.251 | {NO_STAMPS} | 0.181 |" in md
    html = _render("html", QCAPTURE)
    assert f"<td>envoy (7002)</td><td>{NO_STAMPS}</td><td>0.251</td>" in html
    doc = json.loads(_render("json", QCAPTURE))
    by_pid = {p["pid"]: p for p in doc["processes"]}
    q = {x["leg"]: x for x in by_pid[7002]["queue_work"]}
    assert q["request_proxy"]["state"] == NO_STAMPS and q["request_proxy"]["queue_ms"] is None
    assert q["request_proxy"]["work_ms"] == 0.251
    assert by_pid[7002]["arrival_missing"] == {"request": 211, "response": 211}
    q = {x["leg"]: x for x in by_pid[7001]["queue_work"]}
    assert q["response_proxy"]["queue_ms"] == 0.503 and q["response_proxy"]["state"] == "measured"


@pytest.mark.parametrize("path", [OLD_BUNDLE, OLD_CAPTURE])
@pytest.mark.parametrize("fmt", ["terminal", "markdown", "html", "json"])
def test_older_file_without_queue_fields_renders_dashes_and_a_note(path: Path, fmt: str) -> None:
    text = _render(fmt, path, **({"width": 200} if fmt == "terminal" else {}))
    assert "queue/work split" in text  # the note
    if fmt == "terminal":
        rows = _rows(text, QUEUE)
        assert rows and all(r[1:] == ["-"] * 4 for r in rows)
        assert "0.000" not in text.split(QUEUE, 1)[1].split("└", 1)[0]
    if fmt == "json":
        doc = json.loads(text)
        assert OLD_FILE_NOTE in doc["notes"]
        qws = [q for s in doc.get("steps", doc.get("processes", [])) for q in s["queue_work"]]
        assert qws and all(q["state"] == "not in file" and q["queue_ms"] is None for q in qws)


def _bar_heights(fig: str, name: str) -> dict[int, float]:
    """Drawn height (SVG units) of each bar of series ``name``, by bar index."""
    out = {}
    for j, d in re.findall(rf'<g id="series-{name}-(\d+)">\s*<path d="([^"]*)"', fig):
        ys = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", d)][1::2]
        out[int(j)] = max(ys) - min(ys)
    return out


@pytest.mark.parametrize("path", [QBUNDLE, QCAPTURE])
def test_queue_plot_draws_the_known_numbers(path: Path) -> None:
    """The stacked bars hold the known p50s (ms) and are drawn at heights proportional to them,
    one scale for all; a queue without arrival stamps has no bar (not a 0 bar) and is named.
    Catches queue and work swapped, bars of one leg drawn from another, a 0 drawn for unknown."""
    from tests import html_series as hs

    fig = hs.figure(_render("html", path), "queue")
    data = hs.series(fig)
    if path == QBUNDLE:
        want = {name: [(float(j), s[i] / 1000) for j, s in enumerate(STEPS)]
                for i, name in enumerate(x for parts in SPLIT.values() for x in parts)}  # fmt: skip
    else:
        want = {
            "request_proxy_queue": [(0.0, 0.509)],
            "request_proxy_work": [(0.0, 0.239), (1.0, 0.251)],
            "response_proxy_queue": [(0.0, 0.503)],
            "response_proxy_work": [(0.0, 0.191), (1.0, 0.181)],
        }
        assert f"{NO_STAMPS}:" in fig and "request queue, response queue" in fig
    assert data == want
    scale = [_bar_heights(fig, name)[int(j)] / v for name, pts in want.items() for j, v in pts]
    assert len(scale) == sum(len(p) for p in want.values())
    assert max(scale) / min(scale) < 1.01


REAL = FIX / "capture-wire.json"  # a real capture (testbed, 200 req/s, sk_data_ready stamps)


def test_real_capture_queue_table_is_its_legs() -> None:
    """A real capture with arrival stamps: the queue table's cells are the file's own p50s of
    each SPLIT leg in ms, and its missing stamps (4 of 769 requests) are noted, not hidden."""
    doc = json.loads(REAL.read_text())
    sc = doc["sidecars"][0]
    text = _render("terminal", REAL, width=100)
    want = [f"{sc['legs'][x]['p50_ms']:.3f}" for parts in SPLIT.values() for x in parts]
    assert _rows(text, QUEUE) == [[f"{sc['comm']} ({sc['pid']})", *want]]
    assert want == ["0.058", "0.152", "0.028", "0.101"]  # pinned: this file's numbers
    m = sc["arrival_missing"]
    assert (m["request"], m["response"], sc["requests"]) == (4, 0, 769)
    assert "4 of 769 requests had no arrival stamp" in text.replace("\n", " ")
    assert "responses had no arrival stamp" not in text.replace("\n", " ")


def test_run_and_demo_console_print_the_queue_table() -> None:
    """``run`` and ``demo`` print the report's queue table after their summary: the known
    numbers per rate, from the file (demo) or from the bundle in memory as written (run, no
    reading back: the same table); none for a file without the split."""
    import io

    from rich.console import Console

    from profiler import report
    from profiler.commands.console import queue_summary
    from profiler.report.source import bundle_source
    from profiler.smp.bundle import bundle_json

    def text(table: Any) -> str:
        buf = io.StringIO()
        Console(file=buf, width=120, no_color=True).print(table)
        return buf.getvalue()

    src = report.load(QBUNDLE)
    table = queue_summary(src)
    assert table is not None
    lines = [ln for ln in text(table).splitlines() if re.search(r"\d\.\d{3}", ln)]
    assert len(lines) == 3
    for line, (rq, rw, sq, sw) in zip(lines, STEPS, strict=True):
        cells = re.findall(r"\d+\.\d{3}", line)
        assert cells == [f"{x / 1000:.3f}" for x in (rq, rw, sq, sw)], line
    assert src.bundle is not None
    doc = bundle_json(src.bundle)
    in_memory = queue_summary(bundle_source(QBUNDLE, src.bundle, doc, doc))
    assert text(in_memory) == text(table)
    assert queue_summary(report.load(QCAPTURE)) is None  # a capture: its report has its own
