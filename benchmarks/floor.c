/* The floor of a request-timing probe on the sock path's hooks (benchmarks/floor.py).
 *
 * FLOOR_LEVEL 0: every hook the sidecar probe attaches to on the sock path, with a program
 *                that returns at once: what attaching to these hooks costs by itself.
 * FLOOR_LEVEL 1: the least each hook must do to time a request. A socket call: the PID filter
 *                (one hash lookup by tgid); for a traced process the syscall's registers, the
 *                clock and the first 12 bytes of its buffer (to tell a request from anything
 *                else). A data arrival: the socket's slot in an array. A packet sent: its
 *                length, then a per-CPU slot and the clock.
 *                Nothing is kept or sent to user space.
 * FLOOR_LEVEL 2: the least a probe must do to time every request and hand each to user
 *                space, on top of level 1: the first bytes of the data itself (through the
 *                iovec for readv/writev), the socket's entry in a hash (created on its first
 *                call, its gate slot then set) and the call's instant in it; a data arrival on a
 *                traced socket stamps its entry once until the next read; a response written
 *                ("HTTP" first) sends the entry to user space as one ring record (two a
 *                proxied request: the app's response and the sidecar's). No request ids, no
 *                connection roles, no HTTP/2, no answer queue: what a real probe needs beyond
 *                this is its own cost.
 * FLOOR_BURN_NS: level 1, and every socket call of the sidecar (floor_pids value 2) that moved
 *                data spins on the clock for this many ns first, in the sidecar's own thread:
 *                a known dose of BPF time per request, to measure what each us of it costs
 *                in throughput (floor.py's burn variants). floor_burned counts the calls. */
#include <asm/ptrace.h>

#ifndef FLOOR_LEVEL
#define FLOOR_LEVEL 0
#endif

BPF_HASH(floor_pids, u32, u32, 1024);
BPF_ARRAY(floor_gate, u32, 65536);
BPF_PERCPU_ARRAY(floor_slot, u64, 1);
BPF_PERCPU_ARRAY(floor_sink, u64, 1);  /* so the compiler keeps the reads */
#ifdef FLOOR_BURN_NS
BPF_PERCPU_ARRAY(floor_burned, u64, 1);
#endif
#if FLOOR_LEVEL >= 2
struct floor_conn {
    u64 sk;
    u64 t[4];       /* the last four calls' instants */
    u64 arr;        /* first data arrival since the last read, 0 none */
    u32 n;          /* calls since the last response */
    u32 tgid;
};
BPF_HASH(floor_conns, u64, struct floor_conn, 16384);
BPF_RINGBUF_OUTPUT(floor_ring, FLOOR_RING_PAGES);
struct floor_iovec { u64 base; u64 len; };
#endif

static inline __attribute__((always_inline)) int floor_sock(struct bpf_raw_tracepoint_args *ctx,
                                                            int is_read)
{
#if FLOOR_LEVEL >= 1
    if ((s32)ctx->args[1] <= 0)
        return 0;
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    u32 *traced = floor_pids.lookup(&tgid);
    if (!traced)
        return 0;
#ifdef FLOOR_BURN_NS
    if (*traced == 2) {
        u64 t0 = bpf_ktime_get_ns();
        for (int i = 0; i < 4096; i++)  /* bounded for the verifier; the clock ends it */
            if (bpf_ktime_get_ns() - t0 >= FLOOR_BURN_NS)
                break;
        int zero = 0;
        u64 *n = floor_burned.lookup(&zero);
        if (n)
            *n += 1;
    }
#endif
    struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
    char p[12] = {};
#if FLOOR_LEVEL >= 2
    u64 at = regs->si;
    u64 nr = regs->orig_ax;
    if (nr == 19 || nr == 20) {  /* readv, writev: the first iovec's buffer */
        struct floor_iovec v = {};
        bpf_probe_read_user(&v, sizeof(v), (void *)at);
        at = v.base;
    }
    bpf_probe_read_user(p, sizeof(p), (void *)at);
    u64 now = bpf_ktime_get_ns();
    u64 sk = ctx->args[0];
    struct floor_conn *c = floor_conns.lookup(&sk);
    if (!c) {
        struct floor_conn z = {};
        z.sk = sk;
        z.tgid = tgid;
        floor_conns.update(&sk, &z);
        c = floor_conns.lookup(&sk);
        if (!c)
            return 0;
        u32 slot = (u32)(sk >> 6) & 65535;
        u32 one = 1;
        floor_gate.update(&slot, &one);
    }
    c->t[c->n & 3] = now;
    c->n++;
    if (is_read) {
        c->arr = 0;
    } else if (p[0] == 'H' && p[1] == 'T' && p[2] == 'T' && p[3] == 'P') {
        struct floor_conn *e = floor_ring.ringbuf_reserve(sizeof(struct floor_conn));
        if (e) {
            __builtin_memcpy(e, c, sizeof(struct floor_conn));
            floor_ring.ringbuf_submit(e, BPF_RB_NO_WAKEUP);
        }
        c->n = 0;
    }
#else
    bpf_probe_read_user(p, sizeof(p), (void *)regs->si);
    int zero = 0;
    u64 *sink = floor_sink.lookup(&zero);
    if (sink)
        *sink += bpf_ktime_get_ns() + p[0] + regs->di;
#endif
#endif
    return 0;
}

RAW_TRACEPOINT_PROBE(sock_recv_length) { return floor_sock(ctx, 1); }
RAW_TRACEPOINT_PROBE(sock_send_length) { return floor_sock(ctx, 0); }

RAW_TRACEPOINT_PROBE(sk_data_ready)
{
#if FLOOR_LEVEL >= 1
    u32 slot = (u32)(ctx->args[0] >> 6) & 65535;
    u32 *g = floor_gate.lookup(&slot);
    if (!g || !*g)
        return 0;
#if FLOOR_LEVEL >= 2
    u64 sk = ctx->args[0];
    struct floor_conn *c = floor_conns.lookup(&sk);
    if (c && !c->arr)
        c->arr = bpf_ktime_get_ns();
#endif
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
