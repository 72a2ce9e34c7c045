"""``smp-profiler demo`` end to end, shortened: real testbeds up, a sweep, files, all torn down."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from profiler.smp import validate

pytestmark = [pytest.mark.testbed, pytest.mark.envoy]


def test_demo_writes_results_and_tears_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from profiler.commands import demo
    from profiler.testbed import leftovers, teardown

    name = f"dm{secrets.token_hex(2)}"
    out = tmp_path / "smp-results"
    try:
        assert demo.main(out, rates=[300.0], step_s=1.0, warmup_s=0.2, name=name) == 0
        assert leftovers(f"{name}-m") == [] and leftovers(f"{name}-b") == []
    finally:
        teardown(f"{name}-m")
        teardown(f"{name}-b")
    doc = json.loads((out / "result.json").read_text())
    assert validate(doc) == []
    assert len(doc["performance_test_results"]) == 1
    steps = doc["details"]["steps"]
    assert all(s["baseline"] is not None and s["overhead"] is not None for s in steps)
    assert (out / "result.yaml").read_text().startswith("format_version: 1\n")
    captured = capsys.readouterr()
    assert f"results in {out.resolve()}/" in captured.out
    html = out / "report.html"
    assert f"HTML report: {html.resolve()}" in captured.out
    assert '<figure id="plot-cdf" data-plot="cdf"><svg' in html.read_text()
    assert "MeshMark" in captured.err
