/* selftest: one event per getppid() of a traced process (see selftest.h). */
#include "smp_common.h"
#include "selftest.h"

BPF_HASH(smp_filter_pids, u32, u8, SMP_MAX_PIDS);
BPF_PERCPU_ARRAY(smp_drops, u64, 1);
BPF_RINGBUF_OUTPUT(smp_selftest_events, SMP_RINGBUF_PAGES);

TRACEPOINT_PROBE(syscalls, sys_enter_getppid)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    if (!smp_filter_pids.lookup(&tgid))
        return 0;
    struct selftest_event *e = smp_selftest_events.ringbuf_reserve(sizeof(*e));
    if (!e) {
        int zero = 0;
        u64 *n = smp_drops.lookup(&zero);
        if (n)
            (*n)++;
        return 0;
    }
    e->ts_ns = bpf_ktime_get_ns();
    e->pid = tgid;
    e->tid = (u32)id;
    smp_selftest_events.ringbuf_submit(e, 0);
    return 0;
}
