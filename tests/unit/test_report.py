"""``smp-profiler report``: the loader, the renderers (golden terminal and markdown views of a
pinned real bundle and capture), SMP conversion of load-test results, and bad input.

Fixtures in tests/fixtures/report/: ``bundle.json`` (a real 2-rate x 3 s run on the testbed,
Envoy sidecar + no-sidecar baseline, captured), ``capture.json`` (the capture of its first
window), ``bundle-concurrency2.json`` (the same sweep with Envoy --concurrency 2). Regenerate the
golden files after a deliberate change (and review the diff) with
``REPORT_UPDATE_GOLDEN=1 pytest tests/unit/test_report.py``.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from profiler import report
from profiler.cli import main
from profiler.errors import BadInputFile, UsageError
from profiler.loadgen import fortio
from profiler.model import read_bundle
from profiler.report.view import capture_view
from profiler.smp import validate
from profiler.smp.bundle import bundle_json, write_bundle

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "report"
BUNDLE, CAPTURE = FIX / "bundle.json", FIX / "capture.json"
MESHERY_YAML = FIX / "meshery-result.yaml"
SHARED = Path(__file__).resolve().parents[1] / "fixtures" / "loadgen"
MESHERY_FORTIO = SHARED / "meshery-fortio-results.json"
NIGHTHAWK = SHARED / "nighthawk-output.json"
GOLDEN = Path(__file__).parent / "golden"


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("REPORT_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text()


def _render(fmt: str, path: Path, **opts: object) -> str:
    return report.get(fmt, **opts).render(report.load(path))


def test_terminal_view_of_the_pinned_bundle_matches_golden() -> None:
    text = _render("terminal", BUNDLE, width=120, color=False)
    assert "\x1b[" not in text  # no colour codes
    assert max(len(line) for line in text.splitlines()) <= 120
    _golden("report_bundle_terminal.txt", text)


def test_terminal_view_of_the_pinned_capture_matches_golden() -> None:
    _golden("report_capture_terminal.txt", _render("terminal", CAPTURE, width=120))


def test_capture_view_says_how_many_header_blocks_were_lost(tmp_path: Path) -> None:
    """The statuses line of a sidecar whose probe lost header blocks says so (an ``unknown``
    count that grew from a lost HPACK shadow is not a mystery); none lost, nothing said."""
    doc = json.loads(CAPTURE.read_text())
    sc = doc["sidecars"][0]
    sc["http2_statuses"] = {"http": {"200": 3900}, "grpc": {"0": 800}, "unknown": 3100}
    sc["unparsed"] = {"http2_blocks_lost": 7}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc))
    facts = dict(capture_view(report.load(path)).facts)
    line = facts[f"HTTP/2 statuses, pid {sc['pid']}"]
    assert line == "200 x 3,900; grpc 0 x 800; 3,100 not decoded; 7 header blocks not " + (
        "followed to their end"
    )
    sc["unparsed"]["http2_blocks_lost"] = 0
    path.write_text(json.dumps(doc))
    facts = dict(capture_view(report.load(path)).facts)
    assert facts[f"HTTP/2 statuses, pid {sc['pid']}"].endswith("; 3,100 not decoded")


def test_capture_view_shows_http1_statuses_of_sidecar_and_app(tmp_path: Path) -> None:
    """HTTP/1.1 statuses get a line per process, sidecar and app told apart, codes as the
    file has them and the unknown count always said; a file without the key (older) or with
    only zeros shows no line."""
    doc = json.loads(CAPTURE.read_text())
    sc = doc["sidecars"][0]
    sc["http1_statuses"] = {"200": 3900, "404": 5, "503": 1200, "unknown": 2}
    doc["apps"] = [{**sc, "pid": 4321, "http1_statuses": {"200": 7, "unknown": 0}}]
    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc))
    facts = dict(capture_view(report.load(path)).facts)
    assert facts[f"HTTP/1.1 statuses, sidecar pid {sc['pid']}"] == (
        "200 x 3,900, 404 x 5, 503 x 1,200; 2 unknown"
    )
    assert facts["HTTP/1.1 statuses, app pid 4321"] == "200 x 7; 0 unknown"
    sc["http1_statuses"] = {"unknown": 0}
    del doc["apps"][0]["http1_statuses"]
    path.write_text(json.dumps(doc))
    assert not [k for k, _ in capture_view(report.load(path)).facts if "HTTP/1.1" in k]


def test_markdown_of_the_pinned_bundle_matches_golden() -> None:
    _golden("report_bundle.md", _render("markdown", BUNDLE))


def test_terminal_numbers_come_from_the_bundle() -> None:
    """The view shows what the SMP builder derives from the raw records, not other numbers."""
    doc = bundle_json(read_bundle(BUNDLE))
    text = _render("terminal", BUNDLE, width=200)
    for step in doc["details"]["steps"]:
        assert f"{step['mesh']['latency']['p50_ms']:.3f}" in text
        assert f"{step['overhead']['p50']['delta_ms']:+.3f}" in text
        assert f"{step['sidecar']['cpu_ms_per_1k_requests']:,.1f}" in text
    assert f"MeshMark {doc['details']['meshmark']['score']:.1f}" in text
    last = doc["details"]["steps"][-1]
    lo, hi = last["overhead"]["p50"]["ci_ms"]
    assert (
        f"adds {last['overhead']['p50']['delta_ms']:.2f} ms at p50 (95% CI {lo:.2f}-{hi:.2f}"
        in (text.replace("\n", " "))
    )


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        (BUNDLE, "bundle"),
        (CAPTURE, "capture"),
        (MESHERY_FORTIO, "fortio"),
        (NIGHTHAWK, "nighthawk"),
        (MESHERY_YAML, "smp"),
    ],
)
def test_loader_recognises_the_file_by_content(path: Path, kind: str) -> None:
    assert report.load(path).kind == kind


def test_fortio_result_becomes_valid_smp_in_milliseconds(tmp_path: Path) -> None:
    out = tmp_path / "smp.json"
    assert main(["report", str(MESHERY_FORTIO), "--format", "smp", "-o", str(out)]) == 0
    docs = json.loads(out.read_text())
    assert validate(docs) == []
    loads = fortio.parse(MESHERY_FORTIO)
    results = docs["performance_test_results"]
    assert len(results) == len(loads) == 3
    raw = json.loads(MESHERY_FORTIO.read_text())
    raw = raw["results"] if isinstance(raw, dict) else raw
    for res, r, load in zip(results, raw, loads, strict=True):
        dh = r["runner_results"][0]["DurationHistogram"]
        if load.successes:
            # the figures fortio printed, exactly, in milliseconds (Meshery writes seconds)
            pct = {p["Percentile"]: p["Value"] for p in dh["Percentiles"]}
            lat = res["latencies_ms"]
            assert lat["p50"] == pytest.approx(pct[50] * 1000, abs=1e-4)
            assert lat["p90"] == pytest.approx(pct[90] * 1000, abs=1e-4)
            assert lat["p99"] == pytest.approx(pct[99] * 1000, abs=1e-4)
            assert lat["min"] == pytest.approx(dh["Min"] * 1000, abs=1e-4)
            assert lat["max"] == pytest.approx(dh["Max"] * 1000, abs=1e-4)
            assert lat["average"] == pytest.approx(dh["Avg"] * 1000, abs=1e-4)
            assert res["labels"]["error_rate"] == "0"
        else:  # 300 socket errors: no latency of the service, and the error rate says why
            assert "latencies_ms" not in res
            assert res["labels"]["error_rate"] == "1"
            assert res["labels"]["target_reached"] == "false"
        # successful responses per second (fortio's ActualQPS counts socket errors too)
        assert res["actual_qps"] == pytest.approx(load.successes / load.duration_s, abs=1e-3)
        for key in ("id", "test_id", "mesh_config_id", "env_id"):
            uuid.UUID(res[key])  # real ids, not placeholders
    assert len({r["id"] for r in results}) == 3
    # what a load-test result cannot know is left empty, not made up
    assert "nodes" not in docs["environment_config"]
    assert "mesh_type" not in docs["service_mesh_config"]
    assert "sidecar" not in docs["service_mesh_config"]
    assert docs["performance_test_config"]["clients"][0]["load_generator"] == "fortio"
    # the same file always converts to the same ids
    again = tmp_path / "again.json"
    assert main(["report", str(MESHERY_FORTIO), "--format", "smp", "-o", str(again)]) == 0
    assert json.loads(again.read_text()) == docs


def test_smp_yaml_by_suffix(tmp_path: Path) -> None:
    import yaml

    out = tmp_path / "smp.yaml"
    assert main(["report", str(NIGHTHAWK), "--format", "smp", "-o", str(out)]) == 0
    docs = yaml.safe_load(out.read_text())
    assert validate(docs) == []
    assert docs["performance_test_results"][0]["latencies_ms"]["p50"] < 1.0  # ms: 190 us


def test_bundle_smp_documents_keep_their_ids() -> None:
    docs = json.loads(_render("smp", BUNDLE))
    b = read_bundle(BUNDLE)
    assert validate(docs) == []
    assert [r["id"] for r in docs["performance_test_results"]] == b.result_ids
    assert docs["details"]["steps"]  # details_uri points into it


def test_meshery_yaml_with_only_latencies_renders_what_it_has() -> None:
    text = _render("terminal", MESHERY_YAML, width=120)
    assert "0.382" in text and "0.437" in text and "0.505" in text
    assert "SMP v0.0.1" in text  # says it read another version, and to check the unit
    html = _render("html", MESHERY_YAML)
    assert html.count("not in this file") == 5  # no plot can be drawn, none is made up
    md = _render("markdown", MESHERY_YAML)
    assert "Sidecar cost" not in md


@pytest.mark.parametrize(
    ("content", "suffix", "expect"),
    [
        ('{"kind": "smp-profiler/run-bundle", "format_version": 1, "ru', ".json", "truncated"),
        ('{"name": "not a result", "values": [1, 2]}', ".json", "not a result file"),
        ("", ".json", "empty file"),
        ("just some words\n", ".txt", "not a result file"),
        ("performance_test_config: {id: x, name: y}\n", ".yaml", "no result"),
        ('{"kind": "smp-profiler/run-bundle", "format_version": 1}', ".json", "run bundle"),
    ],
)
def test_bad_input_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, suffix: str, expect: str
) -> None:
    path = tmp_path / f"input{suffix}"
    path.write_text(content)
    assert main(["report", str(path)]) == BadInputFile.exit_code
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert expect in err and "Traceback" not in err


def test_truncated_real_bundle_and_meshery_profile_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cut = tmp_path / "cut.json"
    cut.write_text(BUNDLE.read_text()[:5000])
    assert main(["report", str(cut)]) == 65
    assert "truncated" in capsys.readouterr().err
    assert main(["report", str(FIX / "meshery-profile.yaml")]) == 65
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a result file" in err


def test_capture_has_no_smp_documents(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(CAPTURE), "--format", "smp"]) == 65
    assert "capture has no SMP documents" in capsys.readouterr().err


def test_format_by_flag_or_suffix() -> None:
    assert report.format_for(None, None) == "terminal"
    assert report.format_for(None, Path("r.md")) == "markdown"
    assert report.format_for(None, Path("r.yml")) == "yaml"
    assert report.format_for(None, Path("r.HTML")) == "html"
    assert report.format_for("smp", Path("r.json")) == "smp"
    with pytest.raises(UsageError):
        report.format_for(None, Path("r.pdf"))
    with pytest.raises(UsageError):
        report.format_for("pdf", None)


def test_json_and_yaml_carry_the_same_view(tmp_path: Path) -> None:
    import yaml

    j, y = tmp_path / "r.json", tmp_path / "r.yaml"
    assert main(["report", str(BUNDLE), "-o", str(j)]) == 0
    assert main(["report", str(BUNDLE), "-o", str(y)]) == 0
    dj, dy = json.loads(j.read_text()), yaml.safe_load(y.read_text())
    assert dj == dy
    assert dj["kind"] == "smp-profiler/report" and len(dj["steps"]) == 2
    assert dj["meaning"].startswith("at 300 req/s the sidecar adds")
    assert validate(dj["smp"]) == []


def test_html_is_self_contained_with_every_plot() -> None:
    html = _render("html", BUNDLE)
    for plot in ("legs", "cdf", "cost", "overhead"):
        m = re.search(rf'<figure id="plot-{plot}"[^>]*><svg', html)
        assert m, plot
    assert "<script" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing fetched at view time
    assert "<details" in html and "performance_test_results" in html
    assert html == _render("html", BUNDLE)  # deterministic


def test_html_of_a_capture_plots_its_legs() -> None:
    html = _render("html", CAPTURE)
    assert re.search(r'<figure id="plot-legs"[^>]*><svg', html)
    assert re.search(r'<figure id="plot-cdf"[^>]*><svg', html)


@pytest.mark.parametrize(
    ("baseline", "with_capture"), [(True, True), (False, True), (True, False), (False, False)]
)
@pytest.mark.parametrize("fmt", ["terminal", "markdown", "json", "html", "smp"])
def test_every_format_renders_bundles_with_parts_missing(
    tmp_path: Path, fmt: str, baseline: bool, with_capture: bool
) -> None:
    """Runs without a baseline or without captures render what they have (and nothing else)."""
    from tests.unit import smp_fixtures as fx

    b = fx.bundle(rates=(100.0, 200.0), repeat=1, baseline=baseline, with_capture=with_capture)
    path = tmp_path / "b.json"
    write_bundle(b, path)
    text = _render(fmt, path)
    assert text
    if fmt == "markdown":
        assert ("A/B: mesh minus baseline" in text) == baseline
        assert ("Sidecar cost" in text) == with_capture
    if fmt == "html":
        assert ('id="plot-cost" data-plot="cost"><svg' in text) == with_capture
        assert ('id="plot-overhead" data-plot="overhead"><svg' in text) == (
            baseline or with_capture
        )


def test_incomplete_capture_with_drops_says_so(tmp_path: Path) -> None:
    doc = json.loads(CAPTURE.read_text())
    doc.update(complete=False, incomplete_reason="target exited", drops=17)
    path = tmp_path / "cut-short.json"
    path.write_text(json.dumps(doc))
    text = _render("terminal", path, width=200)
    assert "INCOMPLETE (target exited), 3.5 s, 17 events dropped" in text
    assert "17 events dropped; INCOMPLETE: target exited" in text


def test_html_plots_draw_the_bundles_numbers(tmp_path: Path) -> None:
    """The cost and overhead plots draw exactly the bundle's figures: each line's data is the
    details' numbers and its drawn vertices are those numbers on the axes (three rates, so a
    line that is not these points cannot fit). Catches an empty axes, a series plotted from
    the wrong field (cpu_seconds for mcores, p99 for p50), swapped series, stale data."""
    from tests import html_series as hs
    from tests.unit import smp_fixtures as fx

    path = tmp_path / "b.json"
    write_bundle(fx.bundle(rates=(100.0, 200.0, 400.0), repeat=1, shift_us=400.0), path)
    doc = json.loads(path.read_text())
    page = _render("html", path)
    steps = doc["details"]["steps"]

    def pts(f: Any) -> list[tuple[float, float]]:
        return [(s["mesh"]["rate_achieved"], f(s)) for s in steps]

    cost = hs.figure(page, "cost")
    hs.check_drawn(cost, "cpu-cores", pts(lambda s: s["sidecar"]["cpu_mcores"] / 1000))
    hs.check_drawn(cost, "rss-mib", pts(lambda s: s["sidecar"]["mem_mb"]["rss"]))
    over = hs.figure(page, "overhead")
    for p in ("p50", "p99"):
        hs.check_drawn(over, f"ab-{p}", pts(lambda s, p=p: s["overhead"][p]["delta_ms"]))
    legs = [s["sidecar"]["legs"]["sidecar_total"]["p50_ms"] for s in steps]
    hs.check_drawn(over, "ebpf-p50", pts(lambda s: s["sidecar"]["legs"]["sidecar_total"]["p50_ms"]))
    # and the check can fail: another series' numbers are not what is drawn
    with pytest.raises(AssertionError):
        hs.check_drawn(
            over, "ab-p50", pts(lambda s: s["sidecar"]["legs"]["sidecar_total"]["p50_ms"])
        )
    # and the vertex check alone tells the lines apart (they are not affine images of each other)
    ab = [y for _, y in hs.drawn(over, "ab-p99")]
    assert hs.affine_residual(legs, ab) > 0.5


def test_nighthawk_import_keeps_its_figures_and_names_the_computed(tmp_path: Path) -> None:
    """Nighthawk printed min 180.007, mean 195.004, max 210.007 us and p50 190.007 us: the SMP
    result has exactly those; p90/p99 (not listed) are computed and the label says so."""
    out = tmp_path / "smp.json"
    assert main(["report", str(NIGHTHAWK), "--format", "smp", "-o", str(out)]) == 0
    res = json.loads(out.read_text())["performance_test_results"][0]
    lat = res["latencies_ms"]
    assert lat["min"] == pytest.approx(0.180007, abs=1e-4)  # the details keep 0.1 us
    assert lat["average"] == pytest.approx(0.195004, abs=1e-4)  # the details keep 0.1 us
    assert lat["max"] == pytest.approx(0.210007, abs=1e-4)  # the details keep 0.1 us
    assert lat["p50"] == pytest.approx(0.190007, abs=1e-4)  # the details keep 0.1 us
    assert set(res["labels"]["latency_computed"].split(",")) >= {"p90", "p99"}
