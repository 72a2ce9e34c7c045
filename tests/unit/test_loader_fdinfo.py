"""The fdinfo parser behind loader.prog_stats."""

from __future__ import annotations

from profiler.probes.loader import fdinfo_numbers, parse_fdinfo

FDINFO = """pos:\t0
flags:\t02000002
mnt_id:\t15
ino:\t2071
prog_type:\t5
prog_jited:\t1
prog_tag:\t3b185187f1855c4c
memlock:\t4096
prog_id:\t612
run_time_ns:\t123456
run_cnt:\t789
recursion_misses:\t0
verified_insns:\t20
"""


def test_parse_fdinfo_reads_both_counters() -> None:
    assert parse_fdinfo(FDINFO) == (789, 123456)


def test_parse_fdinfo_without_counters_is_zero() -> None:
    assert parse_fdinfo("pos:\t0\nprog_type:\t5\n") == (0, 0)


def test_fdinfo_numbers_has_the_verifier_count_and_skips_text() -> None:
    values = fdinfo_numbers(FDINFO)
    assert values["verified_insns"] == 20
    assert values["prog_id"] == 612
    assert "prog_tag" not in values  # hex text, not a number
