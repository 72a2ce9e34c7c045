"""``smp-profiler compare``: real bundles (Envoy with 1 vs 2 workers) and captures side by side,
the significance of the differences, and the refusal when the machines differ."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from profiler.cli import main
from profiler.errors import UsageError
from profiler.report import compare, load

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "report"
ONE, TWO = FIX / "bundle.json", FIX / "bundle-concurrency2.json"
CAPTURE = FIX / "capture.json"


def _rows(*paths: Path, force: bool = False) -> dict[tuple[str, str], compare.Row]:
    rows, _ = compare.compare([load(p) for p in paths], force=force)
    return {(r.step, r.metric): r for r in rows}


def _other_machine(tmp_path: Path, **env: object) -> Path:
    """The same bundle as if it had run on another node (only its environment changed)."""
    doc = json.loads(ONE.read_text())
    doc["run"]["environment"].update(env)
    path = tmp_path / "other.json"
    path.write_text(json.dumps(doc))
    return path


def test_a_file_against_itself_differs_in_nothing() -> None:
    rows = _rows(ONE, ONE)
    assert rows
    for r in rows.values():
        assert r.deltas[1] == 0
        assert r.significant[1] in (False, None)
        if r.ci[1] is not None:
            assert r.ci[1][0] <= 0 <= r.ci[1][1]


def test_one_vs_two_workers_differences_and_significance() -> None:
    a, b = load(ONE).documents, load(TWO).documents
    assert a is not None and b is not None
    rows = _rows(ONE, TWO)
    for i, rate in enumerate(("100", "300")):
        for p in ("p50", "p99"):
            r = rows[(rate, p)]
            va = a["details"]["steps"][i]["mesh"]["latency"][f"{p}_ms"]
            vb = b["details"]["steps"][i]["mesh"]["latency"][f"{p}_ms"]
            assert r.values == [va, vb]
            assert r.deltas[1] == pytest.approx(vb - va)
            lo, hi = r.ci[1] or (0.0, 0.0)
            assert lo <= r.deltas[1] <= hi
            assert r.significant[1] == (not lo <= 0 <= hi)
    # the eBPF sidecar median at 100 req/s: 0.426 -> 0.529 ms, thousands of spans each
    sc = rows[("100", "sidecar p50 (eBPF)")]
    assert sc.significant[1] is True and sc.p_value[1] is not None and sc.p_value[1] < 1e-6
    # the A/B overheads: each run has its own interval; apart means different
    for i, rate in enumerate(("100", "300")):
        ca = a["details"]["steps"][i]["overhead"]["p50"]["ci_ms"]
        cb = b["details"]["steps"][i]["overhead"]["p50"]["ci_ms"]
        apart = cb[0] > ca[1] or ca[0] > cb[1]
        assert rows[(rate, "A/B +p50")].significant[1] is apart
    # single numbers get a difference but no test
    cpu = rows[("100", "CPU / 1k req")]
    assert cpu.deltas[1] is not None and cpu.significant[1] is None


def test_cli_compare_terminal_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(ONE), str(TWO), "--width", "160"]) == 0
    out = capsys.readouterr().out
    assert "B - A [95% CI]" in out and "significant difference" in out
    assert main(["compare", str(ONE), str(TWO), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["kind"] == "smp-profiler/compare" and len(doc["files"]) == 2
    assert any(r["significant"][1] for r in doc["rows"])


def test_three_files_are_each_compared_with_the_first() -> None:
    rows = _rows(ONE, TWO, ONE)
    r = rows[("300", "p50")]
    assert len(r.values) == 3 and r.deltas[2] == 0 and r.deltas[1] != 0


@pytest.mark.parametrize(
    ("env", "reason"),
    [({"cpu_model": "Intel Xeon Gold 6338"}, "CPU model differs"), ({"cores": 16}, "core count")],
)
def test_refuses_other_machines_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], env: dict[str, object], reason: str
) -> None:
    other = _other_machine(tmp_path, **env)
    assert main(["compare", str(ONE), str(other)]) == UsageError.exit_code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and reason in err and "--force" in err
    assert main(["compare", str(ONE), str(other), "--force", "--width", "200"]) == 0
    out = capsys.readouterr().out
    assert "compared anyway (--force)" in out and reason in out


def test_captures_compare_leg_by_leg() -> None:
    rows = _rows(CAPTURE, CAPTURE)
    assert ("sidecar", "sidecar_total p50") in rows
    assert rows[("sidecar", "sidecar_total p50")].ci[1] is not None


def test_capture_against_run_and_single_file_are_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["compare", str(CAPTURE), str(ONE)]) == 2
    assert "cannot compare a capture with a run" in capsys.readouterr().err
    assert main(["compare", str(ONE)]) == 2
    assert "two or more" in capsys.readouterr().err
