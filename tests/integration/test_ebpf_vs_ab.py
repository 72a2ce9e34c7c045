"""The one-run eBPF estimate of what the mesh adds agrees with the classic A/B difference.

At two rates, three repetitions each. The A/B delta (mesh p50 - baseline p50, same load,
alternated) contains at least the sidecar's own time (``sidecar_total``, with the time
requests wait in its sockets) and at most that plus the loopback hop to the app it causes
(``mesh_added``), give or take noise, and the CPU contention the mesh run adds to the client
and the app, which only the A/B side sees; where the intervals do not meet, the step says why
and by how much. The A/B side's uncertainty is its spread over
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
                "200,600",
                # 3 s: 600 and 1,800 requests a window put each p50 within ~0.03 ms, well
                # under the 0.15 ms tolerance and the ~0.3 ms sidecar time checked below
                "--step-duration",
                "3s",
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
    steps = json.loads(out.read_text())["details"]["steps"]
    assert len(steps) == 2
    for step in steps:
        cmp = step["ebpf_vs_ab"]
        print(json.dumps(cmp))
        assert cmp["ebpf_basis"] == "mesh_added"
        low, high = cmp["ebpf_sidecar_total_p50_ms"], cmp["ebpf_p50_ms"]
        assert low < high
        reps = cmp["ab_delta_p50_per_repetition_ms"]
        assert len(reps) == 3
        # the largest A/B delta holds at least the sidecar's own time (a queue counted twice,
        # or a unit slip, would break this); A/B may exceed mesh_added: it also holds the
        # slowdown the sidecar's and the profiler's CPU cause to the client and the app
        assert max(reps) >= low - TOLERANCE_MS, cmp
        # agreement within the intervals, or the run says why not and by how much
        if cmp["agree"]:
            assert cmp["why_not"] is None
        else:
            assert "ms apart" in cmp["why_not"] and "repetitions ranged" in cmp["why_not"]
