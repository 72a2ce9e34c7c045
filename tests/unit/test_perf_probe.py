"""benchmarks.perf_probe's attribution of perf samples to the probe's programs."""

from __future__ import annotations

from benchmarks.perf_probe import attribute

SCRIPT = """
\tffffffffa0001234 lookup_nulls_elem_raw+0x20
\tffffffffa0005678 __htab_map_lookup_elem+0x10
\tffffffffc0001000 bpf_prog_fa5f1beff120540f_raw_tracepoint__sock_recv_length+0x1a0
\tffffffff81000000 bpf_trace_run3+0x90

\tffffffffc0001010 bpf_prog_fa5f1beff120540f_raw_tracepoint__sock_recv_length+0x1b0
\tffffffff81000000 bpf_trace_run3+0x90

\tffffffff81234567 tcp_ack+0x40
\tffffffff81234999 tcp_rcv_established+0x100

\tffffffffa0009999 bpf_probe_read_kernel+0x8
\tffffffffc0002000 bpf_prog_19a9e4905e4e0127_raw_tracepoint__net_dev_queue+0x30
"""


def test_samples_go_to_the_program_and_the_frame_it_called() -> None:
    total, progs = attribute(SCRIPT)
    assert total == 4  # the sample outside any program counts in the total
    recv = progs["raw_tracepoint__sock_recv_length"]
    # the helper the program called, not the leaf below it
    assert recv == {"__htab_map_lookup_elem": 1, "(self)": 1}
    assert progs["raw_tracepoint__net_dev_queue"] == {"bpf_probe_read_kernel": 1}
