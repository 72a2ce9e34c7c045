/* selftest: one event per getppid() of a traced process. Proves the whole path:
 * compile, tracepoint attach, PID filter, ring buffer, drop counter, decode. */
#ifndef SMP_SELFTEST_H
#define SMP_SELFTEST_H

struct selftest_event {
    u64 ts_ns;
    u32 pid;
    u32 tid;
};

#endif
