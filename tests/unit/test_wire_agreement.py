"""smp.details: when eBPF's mesh_added and the A/B delta disagree, the step says why."""

from __future__ import annotations

from profiler.analysis.details import _why_not


def test_disagreement_names_size_side_and_repetitions() -> None:
    ab = {"delta_ms": 4.152, "ci_ms": [3.928, 4.488]}
    text = _why_not(1.7155, (1.6115, 1.8276), ab, [2.168, None, 5.048, 4.332])
    assert "eBPF 1.716 ms [1.611, 1.828] vs A/B 4.152 ms [3.928, 4.488]" in text
    assert "2.437 ms apart" in text and "A/B is larger" in text
    assert "repetitions ranged 2.168..5.048 ms" in text


def test_ebpf_larger_says_so_without_repetitions() -> None:
    text = _why_not(1.0, (0.9, 1.1), {"delta_ms": 0.5, "ci_ms": [0.4, 0.6]}, [])
    assert "0.500 ms apart" in text and "eBPF is larger" in text
    assert "repetitions" not in text
