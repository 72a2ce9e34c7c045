"""The one-run eBPF estimate of what the mesh adds agrees with the classic A/B difference.

The A/B delta (mesh p50 - baseline p50, same load, alternated) contains at least the
sidecar's own time (``sidecar_total``) and at most that plus the loopback hop to the app it
causes (``mesh_added``), give or take noise. The A/B side's uncertainty is its spread over
repetitions (on a shared 2-core machine one repetition's delta can be 5x another's, which is
the point of measuring in one run); the stated tolerance on the eBPF side is 0.15 ms.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.bpf, pytest.mark.testbed, pytest.mark.envoy, pytest.mark.slow]
TOLERANCE_MS = 0.15


def test_ebpf_brackets_the_ab_delta(tmp_path: Path) -> None:
    from profiler.testbed import Testbed, TestbedConfig

    tag = uuid.uuid4().hex[:5]
    beds = []
    try:
        for role, sidecar in (("m", "envoy"), ("b", "none")):
            beds.append(
                Testbed.up(
                    TestbedConfig(
                        name=f"ab{tag}{role}",
                        sidecar=sidecar,
                        app_delay_s=0.001,
                        state_dir=tmp_path / role,
                    )
                )
            )
        out = tmp_path / "ab.json"
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "profiler.cli",
                "run",
                "--testbed",
                str(tmp_path / "m"),
                "--baseline-testbed",
                str(tmp_path / "b"),
                "--rates",
                "300",
                "--step-duration",
                "5s",
                "--warmup",
                "1s",
                "--repeat",
                "3",
                "-o",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr
    finally:
        for tb in beds:
            tb.down()
    step = json.loads(out.read_text())["details"]["steps"][0]
    cmp = step["ebpf_vs_ab"]
    print(json.dumps(cmp))
    assert cmp["ebpf_basis"] == "mesh_added"
    low, high = cmp["ebpf_sidecar_total_p50_ms"], cmp["ebpf_p50_ms"]
    assert low < high
    reps = cmp["ab_delta_p50_per_repetition_ms"]
    assert len(reps) == 3
    # the A/B repetitions' range meets the eBPF bracket
    assert min(reps) <= high + TOLERANCE_MS and max(reps) >= low - TOLERANCE_MS, cmp
