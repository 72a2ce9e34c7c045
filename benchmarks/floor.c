/* The floor of a request-timing probe on the sock path's hooks (benchmarks/floor.py).
 *
 * FLOOR_LEVEL 0: every hook the sidecar probe attaches to on the sock path, with a program
 *                that returns at once: what attaching to these hooks costs by itself.
 * FLOOR_LEVEL 1: the least each hook must do to time a request. A socket call: the PID filter
 *                (one hash lookup by tgid); for a traced process the syscall's registers, the
 *                clock and the first 12 bytes of its buffer (to tell a request from anything
 *                else). A data arrival: the socket's slot in an array. A packet sent: its
 *                length, then a per-CPU slot and the clock.
 * Nothing is kept or sent to user space. */
#include <asm/ptrace.h>

#ifndef FLOOR_LEVEL
#define FLOOR_LEVEL 0
#endif

BPF_HASH(floor_pids, u32, u32, 1024);
BPF_ARRAY(floor_gate, u32, 65536);
BPF_PERCPU_ARRAY(floor_slot, u64, 1);
BPF_PERCPU_ARRAY(floor_sink, u64, 1);  /* so the compiler keeps the reads */

static inline __attribute__((always_inline)) int floor_sock(struct bpf_raw_tracepoint_args *ctx)
{
#if FLOOR_LEVEL >= 1
    if ((s32)ctx->args[1] <= 0)
        return 0;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (!floor_pids.lookup(&tgid))
        return 0;
    struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
    char p[12] = {};
    bpf_probe_read_user(p, sizeof(p), (void *)regs->si);
    int zero = 0;
    u64 *sink = floor_sink.lookup(&zero);
    if (sink)
        *sink += bpf_ktime_get_ns() + p[0] + regs->di;
#endif
    return 0;
}

RAW_TRACEPOINT_PROBE(sock_recv_length) { return floor_sock(ctx); }
RAW_TRACEPOINT_PROBE(sock_send_length) { return floor_sock(ctx); }

RAW_TRACEPOINT_PROBE(sk_data_ready)
{
#if FLOOR_LEVEL >= 1
    u32 slot = (u32)(ctx->args[0] >> 6) & 65535;
    u32 *g = floor_gate.lookup(&slot);
    if (g && *g)
        return 1;
#endif
    return 0;
}

/* as the probe takes it: the raw tracepoint, skb->len at the offset BTF gives (floor.py) */
RAW_TRACEPOINT_PROBE(net_dev_queue)
{
#if FLOOR_LEVEL >= 1
    u32 len = 0;
    bpf_probe_read_kernel(&len, sizeof(len), (void *)(ctx->args[0] + SKB_LEN_OFF));
    if (len <= 94)
        return 0;
    int zero = 0;
    u64 *s = floor_slot.lookup(&zero);
    if (s)
        *s = bpf_ktime_get_ns();
#endif
    return 0;
}

RAW_TRACEPOINT_PROBE(inet_sock_set_state) { return 0; }
