/* sidecar: per-request legs through a proxy (and its app).
 *
 * One state machine, two sets of hooks chosen at build time with -DSMP_PATH (sidecar.h):
 *   SMP_PATH_SOCK      raw tracepoints sock:sock_recv_length / sock:sock_send_length (they
 *                      fire inside socket reads and writes only: no other process pays) and
 *                      sock:inet_sock_set_state (connect, close); the syscall's own user
 *                      registers (bpf_task_pt_regs) give the fd and the user buffer.
 *   SMP_PATH_SYSCALLS  syscalls:sys_{enter,exit}_* tracepoints, for kernels without the
 *                      sock tracepoints (< 6.3).
 * Stable ABIs only: tracepoint arguments, helpers, and the user registers of a syscall. No
 * kprobes, no fentry, no kernel-internal struct fields. Spans are assembled here, one
 * ring-buffer record per request (struct smp_span, sidecar.h), so user space does no
 * per-syscall work. See docs/probes/sidecar.md.
 */
#include "smp_common.h"
#include "sidecar.h"

#ifndef SMP_PATH
#define SMP_PATH SMP_PATH_SOCK
#endif
#ifndef SMP_MAX_CONNS
#define SMP_MAX_CONNS 16384
#endif
#ifndef SMP_MAX_THREADS
#define SMP_MAX_THREADS 8192
#endif
#ifndef SMP_MAX_NS
#define SMP_MAX_NS 4               /* PID namespaces with targets still to be learned */
#endif
/* User space takes the records in batches; waking it for each record (an irq_work and a
 * context switch per request) would cost more than the record. Records are submitted without
 * a wakeup, except the one that makes SMP_RB_WAKE_AT records unread since the reader last
 * read (user space sets it to half the ring's records, and zeroes the count when it reads),
 * so it sleeps its whole poll timeout unless a batch is there (smp_rb_submit). */
#ifndef SMP_RB_WAKE_AT
#define SMP_RB_WAKE_AT 1024
#endif
#ifndef SMP_WRITE_TS_AT_EXIT
#define SMP_WRITE_TS_AT_EXIT 0
#endif
#define SMP_SCAN_LEN 512           /* bytes of a request head searched for x-request-id */
#define SMP_SCAN_MASK (SMP_SCAN_LEN - 1)
/* Clamp an index so the verifier sees the bound (clang would fold a plain mask away). */
#define SMP_CLAMP(x) asm volatile("%0 &= 511" : "+r"(x))
#ifndef SMP_ARRIVAL
#define SMP_ARRIVAL SMP_ARRIVAL_NONE
#endif
#ifndef SMP_XMIT_STAMPS
#define SMP_XMIT_STAMPS 0          /* 1: writes stamped by net:net_dev_queue (see below) */
#endif
#ifndef SMP_XMIT_MIN_LEN
#define SMP_XMIT_MIN_LEN 94        /* bytes: longer than any packet without payload */
#endif
#ifndef SMP_XMIT_WINDOW_NS
#define SMP_XMIT_WINDOW_NS 500000  /* sock path: a packet queued this long before the write
                                    * returned can be its own */
#endif
#ifndef SMP_FIFO
#define SMP_FIFO 32                /* requests a worker thread may have read but not yet sent on */
#endif

#define SMP_INLINE static inline __attribute__((always_inline))

enum smp_class {
    CLS_OTHER = 0,
    CLS_REQ = 1,                   /* starts with an HTTP/1.x method */
    CLS_RESP = 2,                  /* starts with "HTTP/1." */
    CLS_TLS = 3,                   /* a TLS record header */
    CLS_H2PRI = 4,                 /* the HTTP/2 client preface "PRI * HTTP/2.0..." */
};

/* How the call's user buffer is described. */
enum smp_io_kind {
    IO_PTR = 0,                    /* (fd, buf, len) */
    IO_IOV = 1,                    /* (fd, struct iovec *, n) */
    IO_MSG = 2,                    /* (fd, struct msghdr *) */
    IO_MMSG = 3,                   /* (fd, struct mmsghdr *, n): the return counts messages */
};

#define MSG_PEEK 2
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_FIN_WAIT1 4
#define TCP_CLOSE 7

/* One read or write of a traced process, as both paths describe it to the state machine. */
struct smp_io {
    u64 key;        /* the connection: sk (sock path) or tgid << 32 | fd (syscalls path) */
    u64 ts;         /* the event's instant (see sidecar.h: a read's return, a write's) */
    u64 ts_call;    /* when the call started (syscalls path); ts on the sock path */
    u64 arr;        /* a read: when its first bytes reached the socket (0: unknown) */
    u64 buf;        /* the call's first user buffer */
    u64 ptr;        /* the call's buffer argument (enum smp_io_kind says what it points to) */
    void *ctx;      /* the program's context (for the HTTP/2 walk's tail calls) */
    u32 len;        /* data bytes in that buffer */
    u32 ret;        /* bytes moved */
    u32 tid;
    u32 upid;
    s32 fd;
    u8 mode;
    u8 is_read;
    u8 kind;        /* enum smp_io_kind */
    u8 xmit_call;   /* a write: ts is the call's own instant, no packet of it was stamped */
    u16 status;     /* CLS_RESP: the status code its first bytes carry (0: not three digits) */
};

struct smp_iovec { u64 base; u64 len; };
struct smp_msghdr { u64 name; s32 namelen; s32 pad; u64 iov; u64 iovlen; };
struct smp_scan {
    char buf[SMP_SCAN_LEN + 64];
    u32 at;        /* where the x-request-id value starts, 0 when absent */
    u32 n;
    u64 rid_hash;
    u8 rid_len;
    char rid[SMP_RID_LEN];
};
struct smp_fifo {
    u64 keys[SMP_FIFO];
    u32 head;
    u32 tail;
    u32 upid;       /* so user space can drop a detached process's threads */
    u32 pad;
};
struct smp_pidns { u64 dev; u64 ino; };
/* The syscalls path: a call's arguments from its entry to its exit, per thread. */
struct smp_args {
    u64 ts;
    u64 ptr;
    u32 fd;
    u32 upid;
    u8 io;
    u8 skip;
    u8 mode;
    u8 pad[5];
    u64 sk;         /* a TCP read: the socket tcp_rcv_space_adjust named during it (else 0) */
};
#include "sidecar_h2.h"

#if SMP_PATH == SMP_PATH_SOCK
#define SMP_ARGS_ENTRIES 1         /* unused on the sock path; declared so every build has
                                    * the same maps */
#else
#define SMP_ARGS_ENTRIES SMP_MAX_THREADS
#endif

BPF_HASH(smp_filter_pids, u32, struct smp_target, SMP_MAX_PIDS);
/* The PID gate, before smp_filter_pids: a slot per tgid modulo SMP_PID_GATE_SLOTS, set for
 * every tgid put in smp_filter_pids (by user space, or by smp_learn). Every socket call and
 * packet of the node's other processes is turned away by an array load (inlined) instead of a
 * hash lookup that misses. A slot shared with a traced tgid, or left set, only sends its
 * callers on to the lookup; user space clears a slot only when no tgid in smp_filter_pids
 * maps to it and no target is being learned. */
BPF_ARRAY(smp_pid_gate, u32, SMP_PID_GATE_SLOTS);
BPF_PERCPU_ARRAY(smp_drops, u64, 1);
BPF_RINGBUF_OUTPUT(smp_spans, SMP_RINGBUF_PAGES);
struct smp_rb_unread {
    u64 n;        /* records submitted since the reader last read (it zeroes this) */
    u64 woken;    /* the reader was woken for them */
};
BPF_ARRAY(smp_rb_unread, struct smp_rb_unread, 1);
BPF_HASH(smp_proc, u32, struct smp_proc_stats, SMP_MAX_PIDS);
BPF_TABLE("lru_hash", u64, struct smp_conn, smp_conns, SMP_MAX_CONNS);
BPF_TABLE("lru_hash", u64, u64, smp_rid_index, SMP_MAX_CONNS);
BPF_TABLE("lru_hash", u32, struct smp_fifo, smp_thread_fifo, SMP_MAX_THREADS);
BPF_HASH(smp_args_map, u64, struct smp_args, SMP_ARGS_ENTRIES);
/* Roles of connections open before the probe attached: upid << 32 | fd -> enum smp_role. */
BPF_HASH(smp_seed, u64, u8, SMP_MAX_CONNS);
/* The syscalls path sees every fd: the traced processes' sockets (accepted, connected, or
 * open when the probe attached: seeded by user space), upid << 32 | fd -> SMP_SOCKFD_*, so
 * that their bytes count as on the sock path when no connection entry explains them (an
 * app's non-HTTP bytes). Unused on the sock path (every byte it sees is a socket's). */
#define SMP_SOCKFD_SOCKET 1      /* a socket (seeded, or connected) */
#define SMP_SOCKFD_ACCEPTED 2    /* accepted: on a listener of the process (listeners, below) */
#if SMP_PATH == SMP_PATH_SOCK
#define SMP_SOCKFD_ENTRIES 1
#else
#define SMP_SOCKFD_ENTRIES SMP_MAX_CONNS
#endif
BPF_TABLE("lru_hash", u64, u8, smp_sockfd, SMP_SOCKFD_ENTRIES);
/* PID namespaces: targets given by their PID in a namespace that is not the kernel's
 * initial one are learned the first time they do socket I/O (smp_target_of). */
BPF_ARRAY(smp_ns, struct smp_pidns, SMP_MAX_NS);
BPF_HASH(smp_ns_pending, u64, struct smp_target, SMP_MAX_PIDS);   /* slot << 32 | ns tgid */
BPF_ARRAY(smp_learning, u32, 1);                                  /* targets still pending */
BPF_PERCPU_ARRAY(smp_fifo_init, struct smp_fifo, 1);
BPF_PERCPU_ARRAY(smp_scratch, struct smp_scan, 1);
/* zeroed connection entries to copy: slot 0 for the programs of a thread's socket calls, 1
 * for inet_sock_set_state's (a softirq may interrupt the former on the same CPU) */
BPF_PERCPU_ARRAY(smp_conn_init, struct smp_conn, 2);
/* The sock path's per-packet hook (sk_data_ready) runs for every socket of the node: before
 * its smp_conns lookup, a counting filter of the sks in smp_conns (an array slot per hash of
 * sk, +1 when an entry is made, -1 when the probe deletes it) turns the node's other sockets
 * away with an array load. A slot shared by two sks, or left counted (an LRU eviction, an
 * entry made twice), only sends them on to the lookup. */
#define SMP_GATE_SLOTS (SMP_MAX_CONNS * 4)
BPF_ARRAY(smp_gate, u32, SMP_GATE_SLOTS);

SMP_INLINE u32 smp_gate_slot(u64 sk)
{
    return (u32)(((sk >> 6) * 0x9E3779B97F4A7C15ULL) >> 40) & (SMP_GATE_SLOTS - 1);
}

SMP_INLINE void smp_gate_add(u64 sk, s32 delta)
{
    if (SMP_PATH != SMP_PATH_SOCK)
        return;
    u32 slot = smp_gate_slot(sk);
    u32 *g = smp_gate.lookup(&slot);
    if (g)
        __sync_fetch_and_add(g, delta);
}

/* -- helpers ------------------------------------------------------------------------------ */

SMP_INLINE void smp_count_drop(void)
{
    int zero = 0;
    u64 *d = smp_drops.lookup(&zero);
    if (d)
        (*d)++;
}

SMP_INLINE void smp_count_unparsed(struct smp_proc_stats *ps, u32 bytes)
{
    if (ps)
        __sync_fetch_and_add(&ps->unparsed_bytes, bytes);
}

/* A target given by its PID in a child namespace: the kernel's tgid of the current task is
 * learned when that task's own namespace and tgid there match a pending target (its gate is
 * opened). Only runs while some target is pending; one helper call per pending namespace. */
SMP_INLINE struct smp_target *smp_learn(u32 tgid)
{
    int zero = 0;
    u32 *pending = smp_learning.lookup(&zero);
    if (!pending || !*pending)
        return 0;
    u32 gate = tgid & (SMP_PID_GATE_SLOTS - 1);
    for (u32 i = 0; i < SMP_MAX_NS; i++) {
        u32 slot = i;
        struct smp_pidns *ns = smp_ns.lookup(&slot);
        if (!ns || !ns->ino)
            continue;
        struct bpf_pidns_info info = {};
        if (bpf_get_ns_current_pid_tgid(ns->dev, ns->ino, &info, sizeof(info)))
            continue;
        u64 pk = ((u64)i << 32) | info.tgid;
        struct smp_target *want = smp_ns_pending.lookup(&pk);
        if (!want)
            return 0;
        struct smp_target t = *want;
        smp_filter_pids.update(&tgid, &t);
        u32 *g = smp_pid_gate.lookup(&gate);
        if (g)
            *g = 1;
        smp_ns_pending.delete(&pk);
        __sync_fetch_and_add(pending, -1);
        return smp_filter_pids.lookup(&tgid);
    }
    return 0;
}

/* Whether tgid may be traced: its gate slot is set (see smp_pid_gate), or some target is
 * still being learned. If not, it is not traced: return at once. */
SMP_INLINE int smp_maybe_traced(u32 tgid)
{
    u32 slot = tgid & (SMP_PID_GATE_SLOTS - 1);
    u32 *g = smp_pid_gate.lookup(&slot);
    if (g && *g)
        return 1;
    int zero = 0;
    u32 *pending = smp_learning.lookup(&zero);
    return pending && *pending;
}

/* The PID filter: what the current process is to us, or 0 (return at once). The gate comes
 * first and the rest is unchanged: the verifier's paths through the callers stay as many. */
SMP_INLINE struct smp_target *smp_target_of(u32 tgid)
{
    if (!smp_maybe_traced(tgid))
        return 0;
    struct smp_target *t = smp_filter_pids.lookup(&tgid);
    if (t)
        return t;
    return smp_learn(tgid);
}

/* Every source of an id with a length is zero past it (smp_find_rid clears its value before
 * filling it; spans and answers take ids only from there), so a copy is a copy. */
SMP_INLINE void smp_copy_rid(struct smp_span *span, u8 n, u64 hash, const char *rid)
{
    span->rid_len = n;
    span->rid_hash = hash;
    __builtin_memcpy(span->rid, rid, SMP_RID_LEN);
}

/* A write's instant put on a span's leg: the leg's flag (SMP_F_*_TX_CALL) says whether it
 * is the call's own (no packet of the write was stamped). No branch: the verifier walks
 * these transitions on many paths. */
SMP_INLINE void smp_tx_flag(struct smp_span *s, u16 flag, u8 call)
{
    s->flags = (s->flags & ~flag) | ((u16)-(u16)(call & 1) & flag);
}

/* A new connection entry (zeroed) with its role, or the existing one re-initialised; from
 * scratch slot ``slot`` of smp_conn_init. */
SMP_INLINE struct smp_conn *smp_conn_make(u64 key, u8 role, u32 upid, int slot)
{
    struct smp_conn *init = smp_conn_init.lookup(&slot);
    if (!init)
        return 0;
    init->sk = key;
    init->role = role;
    init->upid = upid;
    if (!smp_conns.lookup(&key))
        smp_gate_add(key, 1);
    smp_conns.update(&key, init);
    init->sk = 0;
    init->role = 0;
    init->upid = 0;
    return smp_conns.lookup(&key);
}

SMP_INLINE struct smp_conn *smp_conn_new(u64 key, u8 role, u32 upid)
{
    return smp_conn_make(key, role, upid, 0);
}

SMP_INLINE struct smp_fifo *smp_fifo_of(u32 tid, u32 upid)
{
    struct smp_fifo *q = smp_thread_fifo.lookup(&tid);
    if (q)
        return q;
    int zero = 0;
    struct smp_fifo *empty = smp_fifo_init.lookup(&zero);
    if (!empty)
        return 0;
    empty->upid = upid;
    smp_thread_fifo.update(&tid, empty);
    empty->upid = 0;
    return smp_thread_fifo.lookup(&tid);
}

/* The first buffer of the call and how many of its bytes hold data. */
SMP_INLINE u64 smp_first_buf(u64 ptr, u8 io, s64 ret, u32 *len)
{
    u64 base = ptr;
    u64 blen = (u64)ret;
    if (io == IO_MMSG) {
        /* ret counts messages: the bytes are the first one's msg_len (struct mmsghdr is a
         * struct user_msghdr, 56 bytes on 64-bit, then unsigned int msg_len) */
        u32 first = 0;
        if (bpf_probe_read_user(&first, sizeof(first), (void *)(ptr + 56)))
            return 0;
        blen = first;
    }
    if (io == IO_MSG || io == IO_MMSG) {
        struct smp_msghdr m = {};
        if (bpf_probe_read_user(&m, sizeof(m), (void *)ptr))
            return 0;
        base = m.iov;
    }
    if (io != IO_PTR) {
        struct smp_iovec v = {};
        if (bpf_probe_read_user(&v, sizeof(v), (void *)base))
            return 0;
        base = v.base;
        if (v.len < blen)
            blen = v.len;
    }
    *len = blen > 0xffffffff ? 0xffffffff : (u32)blen;
    return base;
}

/* What a call's first bytes are. A response head's status code ("HTTP/1.x NNN") goes to
 * *status, from the same 12 bytes (no second read). */
SMP_INLINE u8 smp_classify(u64 buf, u32 len, u16 *status)
{
    char p[12] = {};
    if (len < 3 || bpf_probe_read_user(p, len < sizeof(p) ? 8 : sizeof(p), (void *)buf))
        return CLS_OTHER;
    /* a TLS record header (BoringSSL reads the 5-byte header on its own) */
    if ((p[0] >= 0x14 && p[0] <= 0x17) && p[1] == 0x03 && p[2] <= 0x04)
        return CLS_TLS;
    if (len < 8)
        return CLS_OTHER;
    if (p[0] == 'P' && p[1] == 'R' && p[2] == 'I' && p[3] == ' ' && p[4] == '*' && p[5] == ' ')
        return CLS_H2PRI;
    /* "HTTP/1.x NNN": the space and a digit after it, so that "HTTP/1.1" inside other bytes
     * (a chunk of a JSON access log on the syscalls path) is not a response */
    if (p[0] == 'H' && p[1] == 'T' && p[2] == 'T' && p[3] == 'P' && p[4] == '/' && p[5] == '1' &&
        p[6] == '.' && p[8] == ' ' && p[9] >= '1' && p[9] <= '5') {
        if (p[10] >= '0' && p[10] <= '9' && p[11] >= '0' && p[11] <= '9')
            *status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
        return CLS_RESP;
    }
    if ((p[0] == 'G' && p[1] == 'E' && p[2] == 'T' && p[3] == ' ') ||
        (p[0] == 'P' && p[1] == 'O' && p[2] == 'S' && p[3] == 'T') ||
        (p[0] == 'P' && p[1] == 'U' && p[2] == 'T' && p[3] == ' ') ||
        (p[0] == 'H' && p[1] == 'E' && p[2] == 'A' && p[3] == 'D') ||
        (p[0] == 'D' && p[1] == 'E' && p[2] == 'L' && p[3] == 'E') ||
        (p[0] == 'P' && p[1] == 'A' && p[2] == 'T' && p[3] == 'C') ||
        (p[0] == 'O' && p[1] == 'P' && p[2] == 'T' && p[3] == 'I'))
        return CLS_REQ;
    return CLS_OTHER;
}

/* Find "\nx-request-id:" (any case) in the first bytes of a request head and keep its
 * value (up to the end of that header line) in the per-CPU scratch. Nothing else of the
 * payload is kept; user space checks the characters. */
SMP_INLINE struct smp_scan *smp_find_rid(u64 buf, u32 len)
{
    int zero = 0;
    struct smp_scan *s = smp_scratch.lookup(&zero);
    if (!s)
        return 0;
    s->rid_len = 0;
    s->rid_hash = 0;
    s->at = 0;
    u32 n = len < SMP_SCAN_LEN ? len : SMP_SCAN_LEN;
    /* only the bytes the call moved (a GET is often under 100); the rest of the scratch is
     * zero (cleared after every scan) */
    if (n == SMP_SCAN_LEN) {
        if (bpf_probe_read_user(s->buf, SMP_SCAN_LEN, (void *)buf))
            return s;
    } else if (bpf_probe_read_user(s->buf, n & SMP_SCAN_MASK, (void *)buf)) {
        return s;
    }
    s->n = n;
    const u64 want1 = 0x7365757165722d78ULL;   /* "x-reques" */
    const u64 want2 = 0x3a64692d74ULL;         /* "t-id:" */
    /* Eight bytes at a time: only a word holding a '\n' (the "has a zero byte" test on
     * word ^ "\n\n\n\n\n\n\n\n") is looked at byte by byte. Positions as before:
     * i + 15 < n, i < SMP_SCAN_LEN - 16. */
    u8 found = 0;
    for (u32 w = 0; w < SMP_SCAN_LEN / 8 - 2; w++) {
        if (found || w * 8 + 15 >= n)
            break;
        u64 v = 0;
        __builtin_memcpy(&v, &s->buf[(w * 8) & SMP_SCAN_MASK], 8);
        u64 x = v ^ 0x0a0a0a0a0a0a0a0aULL;
        if (!((x - 0x0101010101010101ULL) & ~x & 0x8080808080808080ULL))
            continue;
        for (u32 j = 0; j < 8; j++) {
            u32 i = w * 8 + j;
            if (i + 15 >= n)
                break;
            if (s->buf[i & SMP_SCAN_MASK] != '\n')
                continue;
            u64 w1 = 0, w2 = 0;
            __builtin_memcpy(&w1, &s->buf[(i + 1) & SMP_SCAN_MASK], 8);
            __builtin_memcpy(&w2, &s->buf[(i + 9) & SMP_SCAN_MASK], 8);
            w1 |= 0x2020202020202020ULL;
            w2 = (w2 | 0x2020202020ULL) & 0xffffffffffULL;
            if (w1 == want1 && w2 == want2) {
                s->at = i + 14;
                found = 1;
                break;
            }
        }
    }
    /* Re-read from the map so the verifier checks the copy below once, not once per
     * position where the scan could have stopped. */
    u32 at = *(volatile u32 *)&s->at;
    n = *(volatile u32 *)&s->n;
    if (at && at < SMP_SCAN_LEN) {
        u32 a0 = at;
        SMP_CLAMP(a0);
        if (s->buf[a0] == ' ')
            at++;
        u64 h = 0xcbf29ce484222325ULL;
        u32 k;
        u8 cut = 0;
        __builtin_memset(s->rid, 0, SMP_RID_LEN);  /* nothing of an earlier, longer id */
        for (k = 0; k < SMP_RID_LEN; k++) {
            u32 j = at + k;
            if (j >= n) {
                cut = 1;  /* the buffer ends inside the value (a split head, an iovec) */
                break;
            }
            SMP_CLAMP(j);
            char c = s->buf[j];
            if (c == '\r' || c == '\n' || c == ' ')
                break;
            s->rid[k] = c;
            h = (h ^ (u8)c) * 0x100000001b3ULL;
        }
        /* a value cut by the end of the buffer is not the id: never report a prefix */
        s->rid_len = cut ? 0 : k;
        s->rid_hash = (k && !cut) ? h : 0;
    }
    /* The request head (Authorization, cookies) must not stay readable in the map. */
    __builtin_memset(s->buf, 0, sizeof(s->buf));
    return s;
}

/* Submit a reserved record; the SMP_RB_WAKE_AT-th unread one wakes the reader (two CPUs
 * may both wake it: harmless; a reset racing a count delays the next wakeup by a few). */
SMP_INLINE void smp_rb_submit(void *e)
{
    int zero = 0;
    u64 flags = BPF_RB_NO_WAKEUP;
    struct smp_rb_unread *u = smp_rb_unread.lookup(&zero);
    if (u) {
        __sync_fetch_and_add(&u->n, 1);
        if (u->n >= SMP_RB_WAKE_AT && !u->woken) {
            u->woken = 1;
            flags = BPF_RB_FORCE_WAKEUP;
        }
    }
    smp_spans.ringbuf_submit(e, flags);
}

SMP_INLINE void smp_emit(struct smp_conn *c)
{
    struct smp_span *e = smp_spans.ringbuf_reserve(sizeof(struct smp_span));
    if (!e) {
        smp_count_drop();
        return;
    }
    __builtin_memcpy(e, &c->span, sizeof(struct smp_span));
    smp_rb_submit(e);
    u32 upid = c->upid;
    struct smp_proc_stats *ps = smp_proc.lookup(&upid);
    if (ps)
        __sync_fetch_and_add(&ps->spans, 1);
}

/* -- HTTP/2 and the never-silent count ------------------------------------------------------
 * Requests in progress are named by a handle in the thread FIFO: an HTTP/1.1 request by its
 * downstream connection's key; an HTTP/2 stream by SMP_H2_TAG | a 48-bit number, resolved
 * through smp_h2_handles (neither a kernel socket pointer, whose top bits are all ones, nor a
 * tgid << 32 | fd key, below 2^54, can carry that tag). */
#define SMP_H2_TAG 0x7ffe000000000000ULL
#define SMP_IS_H2_HANDLE(h) (((h) >> 48) == 0x7ffe)
#ifndef SMP_MAX_STREAMS
#define SMP_MAX_STREAMS 16384
#endif

struct smp_h2_skey {
    u64 conn;   /* the connection's key */
    u32 sid;
    u32 gen;    /* the connection's generation (struct smp_h2_conn) */
};
struct smp_h2_stream {
    struct smp_span span;   /* DS: the stream's request in progress. US: the upstream leg */
    u64 handle;             /* DS: its FIFO handle */
    u8 state;               /* DS: H2_DS_* */
    u8 pad[7];
};
#define H2_DS_OPEN 0
#define H2_DS_ANSWERED 1        /* its response started with an upstream answer */
#define H2_DS_LOCAL 2           /* its response started without one: a local reply */
#define H2_US_BURST 3           /* US: the span itself, its downstream HTTP/2 inside TLS */

BPF_TABLE("lru_hash", struct smp_h2_skey, struct smp_h2_stream, smp_h2_streams, SMP_MAX_STREAMS);
BPF_TABLE("lru_hash", u64, struct smp_h2_skey, smp_h2_handles, SMP_MAX_STREAMS);
BPF_TABLE("lru_hash", u64, struct smp_h2_conn, smp_h2_conns, SMP_MAX_CONNS);
BPF_PERCPU_ARRAY(smp_h2_stream_init, struct smp_h2_stream, 1);
BPF_PERCPU_ARRAY(smp_h2_scratch, struct smp_h2_call, 1);
BPF_PROG_ARRAY(smp_h2_progs, 2);   /* [0]: smp_h2_step, [1]: smp_h2_hpack_step (user space) */

/* Header blocks the decoder could not follow to their end, per process (see smp_hpack). */
SMP_INLINE void smp_hp_lost(u32 upid, u64 n)
{
    struct smp_proc_stats *ps = smp_proc.lookup(&upid);
    if (ps)
        __sync_fetch_and_add(&ps->h2_blocks_lost, n);
}


SMP_INLINE int smp_emit_span(struct smp_span *s)
{
    struct smp_span *e = smp_spans.ringbuf_reserve(sizeof(struct smp_span));
    if (!e) {
        smp_count_drop();
        return -1;
    }
    __builtin_memcpy(e, s, sizeof(struct smp_span));
    smp_rb_submit(e);
    return 0;
}

/* Bytes on a traced connection that no protocol explained: per process (unparsed_bytes)
 * and per connection (a SMP_SPAN_UNPARSED record when it closes), never silently dropped. */
SMP_INLINE void smp_conn_unparsed(struct smp_conn *c, struct smp_proc_stats *ps, s32 fd,
                                  u8 is_read, u64 n)
{
    if (!n)
        return;
    smp_count_unparsed(ps, n);
    if (ps && !c->unparsed_rx && !c->unparsed_tx)
        __sync_fetch_and_add(&ps->unparsed_conns, 1);
    c->fd = fd;
    if (is_read)
        c->unparsed_rx += n;
    else
        c->unparsed_tx += n;
}

SMP_INLINE void smp_emit_unparsed(struct smp_conn *c)
{
    if (!c->unparsed_rx && !c->unparsed_tx)
        return;
    int zero = 0;
    struct smp_h2_stream *tmp = smp_h2_stream_init.lookup(&zero);
    if (!tmp)
        return;
    struct smp_span *s = &tmp->span;
    s->kind = SMP_SPAN_UNPARSED;
    s->tgid = c->upid;
    s->ds_rx_beg = bpf_ktime_get_ns();
    s->ds_fd = c->role == SMP_ROLE_US ? -1 : c->fd;
    s->us_fd = c->role == SMP_ROLE_US ? c->fd : -1;
    s->req_bytes = c->unparsed_rx > 0xffffffff ? 0xffffffff : (u32)c->unparsed_rx;
    s->resp_bytes = c->unparsed_tx > 0xffffffff ? 0xffffffff : (u32)c->unparsed_tx;
    smp_emit_span(s);
    __builtin_memset(tmp, 0, sizeof(*tmp));
    c->unparsed_rx = 0;
    c->unparsed_tx = 0;
}

/* The span of a request still waiting for its response (HTTP/1.1: a downstream connection
 * in REQUEST; HTTP/2: a downstream stream not yet answered), else 0. */
SMP_INLINE struct smp_span *smp_pending_span(u64 handle)
{
    if (SMP_IS_H2_HANDLE(handle)) {
        struct smp_h2_skey *k = smp_h2_handles.lookup(&handle);
        if (!k)
            return 0;
        struct smp_h2_skey sk = *k;
        struct smp_h2_stream *st = smp_h2_streams.lookup(&sk);
        return st && st->state == H2_DS_OPEN ? &st->span : 0;
    }
    struct smp_conn *c = smp_conns.lookup(&handle);
    return c && c->phase == SMP_PHASE_REQUEST ? &c->span : 0;
}

SMP_INLINE void smp_fifo_push(u32 tid, u32 upid, u64 handle)
{
    struct smp_fifo *q = smp_fifo_of(tid, upid);
    if (!q)
        return;
    u32 t = q->tail;
    if (t - q->head >= SMP_FIFO) {
        /* full: the oldest goes. If it is still waiting and has no id to be matched by, its
         * span is lost: count it, never silently */
        u64 old = q->keys[q->head & (SMP_FIFO - 1)];
        struct smp_span *o = smp_pending_span(old);
        if (o && !o->us_tx_end && !o->rid_hash)
            smp_count_drop();
        q->head++;
    }
    q->keys[t & (SMP_FIFO - 1)] = handle;
    q->tail = t + 1;
}

/* The oldest request this thread read and has not sent on yet (its handle in *handle). */
SMP_INLINE struct smp_span *smp_fifo_pop(u32 tid, u64 *handle)
{
    struct smp_fifo *q = smp_thread_fifo.lookup(&tid);
    if (!q)
        return 0;
    for (int i = 0; i < SMP_FIFO; i++) {
        if (q->head == q->tail)
            break;
        u64 k = q->keys[q->head & (SMP_FIFO - 1)];
        q->head++;
        struct smp_span *cand = smp_pending_span(k);
        if (cand && !cand->us_tx_end) {
            *handle = k;
            return cand;
        }
    }
    return 0;
}

/* -- TLS upstreams (mTLS between sidecars) --------------------------------------------------
 * Streams multiplexed inside TLS cannot be told apart: a worker thread's last TLS upstream
 * write and read are kept, and an HTTP/2 downstream stream whose upstream was TLS takes them
 * as its upstream instants (flag SMP_F_US_TLS: per burst, not per stream). */
#define SMP_BURST_PEND 16   /* upstream-driven streams answered, waiting for a downstream write */
#define SMP_BURST_MAX_AGE_NS 50000000ULL
struct smp_tls_seen {
    u64 us_tx;      /* the thread's last write to a TLS upstream */
    u64 us_rx;      /* ... and read */
    s32 us_fd;
    u32 upid;       /* so user space can drop a detached process's threads */
    /* HTTP/2 inside a TLS downstream (the server sidecar under mTLS): the thread's current
     * read burst on such a downstream (from its first read), and the upstream streams whose
     * response ended, waiting for the thread's next write on it */
    u64 ds_rx;      /* the burst's first read */
    u64 ds_rx_arr;
    s32 ds_fd;
    u8 ds_open;     /* a burst is open: later reads belong to it */
    u8 pad[3];
    u32 phead;
    u32 ptail;
    struct smp_h2_skey pend[SMP_BURST_PEND];
};
BPF_TABLE("lru_hash", u32, struct smp_tls_seen, smp_tls_last, SMP_MAX_THREADS);
BPF_PERCPU_ARRAY(smp_tls_init, struct smp_tls_seen, 1);  /* zeroes, off the stack */

SMP_INLINE struct smp_tls_seen *smp_tls_thread(u32 tid, u32 upid)
{
    struct smp_tls_seen *t = smp_tls_last.lookup(&tid);
    if (t)
        return t;
    int zero = 0;
    struct smp_tls_seen *fresh = smp_tls_init.lookup(&zero);
    if (!fresh)
        return 0;
    fresh->upid = upid;
    smp_tls_last.update(&tid, fresh);
    fresh->upid = 0;
    return smp_tls_last.lookup(&tid);
}

SMP_INLINE void smp_tls_burst(struct smp_io *io)
{
    struct smp_tls_seen *t = smp_tls_thread(io->tid, io->upid);
    if (!t)
        return;
    if (io->is_read) {
        t->us_rx = io->ts;
    } else {
        t->us_tx = io->ts;
        t->us_fd = io->fd;
    }
}

/* A read on a downstream connection known to carry HTTP/2 inside TLS (smp_conn.tls == 2):
 * the first read of a burst starts it; the burst closes at the thread's next write. */
SMP_INLINE void smp_burst_ds_read(struct smp_io *io)
{
    struct smp_tls_seen *t = smp_tls_thread(io->tid, io->upid);
    if (!t || t->ds_open)
        return;
    t->ds_rx = io->ts;
    t->ds_rx_arr = io->arr;
    t->ds_fd = io->fd;
    t->ds_open = 1;
}

/* A write on such a downstream: the upstream-driven streams this thread read the end of
 * are answered by it (ds_tx_end), emitted. */
SMP_INLINE void smp_burst_ds_write(struct smp_io *io, struct smp_proc_stats *ps)
{
    u32 tid = io->tid;
    struct smp_tls_seen *t = smp_tls_last.lookup(&tid);
    if (!t)
        return;
    t->ds_open = 0;
    for (int i = 0; i < SMP_BURST_PEND; i++) {
        u32 h = t->phead;
        if (h == t->ptail)
            break;
        struct smp_h2_skey sk = t->pend[h & (SMP_BURST_PEND - 1)];
        t->phead = h + 1;
        struct smp_h2_stream *st = smp_h2_streams.lookup(&sk);
        if (!st)
            continue;
        st->span.ds_tx_end = io->ts;
        if (st->span.ds_fd < 0)
            st->span.ds_fd = io->fd;
        if (!smp_emit_span(&st->span) && ps)
            __sync_fetch_and_add(&ps->spans, 1);
        smp_h2_streams.delete(&sk);
    }
}

/* An upstream-driven stream's response ended: it waits for the thread's next downstream
 * write. A full queue loses its oldest (counted as a drop, never silently). */
SMP_INLINE void smp_burst_pend(u32 tid, struct smp_h2_skey *sk)
{
    struct smp_tls_seen *t = smp_tls_last.lookup(&tid);
    if (!t) {
        smp_h2_streams.delete(sk);
        return;
    }
    u32 tl = t->ptail;
    if (tl - t->phead >= SMP_BURST_PEND) {
        struct smp_h2_skey old = t->pend[t->phead & (SMP_BURST_PEND - 1)];
        smp_h2_streams.delete(&old);
        smp_count_drop();
        t->phead++;
    }
    t->pend[tl & (SMP_BURST_PEND - 1)] = *sk;
    t->ptail = tl + 1;
}

/* An HTTP/2 downstream response starts at now with no upstream answer: if the thread wrote
 * to a TLS upstream since the request was read, that burst is its upstream leg. */
SMP_INLINE int smp_tls_upstream(u32 tid, struct smp_span *d, u64 now)
{
    struct smp_tls_seen *t = smp_tls_last.lookup(&tid);
    if (!t || t->us_tx < d->ds_rx_beg || t->us_tx > now)
        return 0;
    d->us_tx_beg = t->us_tx;
    d->us_tx_end = t->us_tx;
    d->us_rx_beg = t->us_rx >= t->us_tx && t->us_rx <= now ? t->us_rx : 0;
    d->us_rx_arr = 0;
    d->us_fd = t->us_fd;
    d->flags = (d->flags & ~(SMP_F_MATCH_THREAD | SMP_F_US_H2)) | SMP_F_US_TLS;
    return 1;
}

/* -- upstream answers, in the order a worker thread reads them ------------------------------
 * Envoy does not write a batch of requests upstream in the order it read them (8 streams of
 * one HTTP/2 read: thread order right for 1 in 4), but it encodes each downstream response
 * as it reads the upstream one. So the upstream leg of a downstream response is the oldest
 * upstream answer the thread read, preferring one whose request thread order gave to the
 * same downstream connection (Envoy flushes downstream connections one after another).
 * Each answer carries its upstream instants and request id, copied, so the upstream
 * connection can carry its next request before the downstream write. Answers older than
 * SMP_ANS_MAX_AGE_NS (their downstream went away) are skipped and counted. */
#ifndef SMP_ANS_DEPTH
#define SMP_ANS_DEPTH 64
#endif
#ifndef SMP_ANS_SCAN
#define SMP_ANS_SCAN 32
#endif
#ifndef SMP_ANS_MAX_AGE_NS
#define SMP_ANS_MAX_AGE_NS 50000000ULL
#endif
struct smp_ans_key {
    u32 tid;
    u32 seq;
};
struct smp_ans {
    u64 us_tx_beg;
    u64 us_tx_end;
    u64 us_rx_beg;
    u64 us_rx_arr;
    u64 rid_hash;
    s32 us_fd;
    u32 us_sid;
    s32 ds_fd;      /* the downstream connection thread order gave the request (a hint) */
    u8 rid_len;
    u8 us_tx_call;  /* us_tx_end is the write call's own instant (SMP_F_US_TX_CALL) */
    u8 pad[2];
    char rid[SMP_RID_LEN];
};
struct smp_ans_q {
    u32 head;
    u32 tail;
    u32 upid;       /* so user space can drop a detached process's threads */
    u32 pad;
};
BPF_TABLE("lru_hash", u32, struct smp_ans_q, smp_ans_queue, SMP_MAX_THREADS);
BPF_TABLE("lru_hash", struct smp_ans_key, struct smp_ans, smp_ans_entries, SMP_MAX_STREAMS);
BPF_PERCPU_ARRAY(smp_ans_init, struct smp_ans, 1);
BPF_PERCPU_ARRAY(smp_ans_out, struct smp_ans, 1);

/* An upstream response starts at ts: queue the upstream leg held in s (an upstream
 * connection's or stream's own record). */
SMP_INLINE void smp_ans_push(u32 tid, u32 upid, struct smp_span *s, u64 ts, u64 arr)
{
    struct smp_ans_q *q = smp_ans_queue.lookup(&tid);
    if (!q) {
        struct smp_ans_q fresh = {};
        fresh.upid = upid;
        smp_ans_queue.update(&tid, &fresh);
        q = smp_ans_queue.lookup(&tid);
        if (!q)
            return;
    }
    int zero = 0;
    struct smp_ans *a = smp_ans_init.lookup(&zero);
    if (!a)
        return;
    a->us_tx_beg = s->us_tx_beg;
    a->us_tx_end = s->us_tx_end;
    a->us_rx_beg = ts;
    a->us_rx_arr = arr;
    a->us_fd = s->us_fd;
    a->us_sid = s->us_sid;
    a->ds_fd = s->ds_fd;
    a->rid_hash = s->rid_hash;
    a->rid_len = s->rid_len;
    a->us_tx_call = (s->flags & SMP_F_US_TX_CALL) != 0;
    __builtin_memcpy(a->rid, s->rid, SMP_RID_LEN);
    u32 t = q->tail;
    if (t - q->head >= SMP_ANS_DEPTH) {
        struct smp_ans_key old = {tid, q->head};
        smp_ans_entries.delete(&old);
        q->head++;
    }
    struct smp_ans_key k = {tid, t};
    smp_ans_entries.update(&k, a);
    q->tail = t + 1;
}

/* A downstream response starts at now on downstream fd ds_fd: its upstream answer (in a
 * per-CPU buffer), or 0: the one whose request thread order gave ds_fd, else the oldest;
 * one written upstream before ``since`` (the request's read) only when there is no other. */
SMP_INLINE struct smp_ans *smp_ans_take(u32 tid, u64 now, s32 ds_fd, u64 since,
                                        struct smp_proc_stats *ps)
{
    struct smp_ans_q *q = smp_ans_queue.lookup(&tid);
    if (!q)
        return 0;
    int zero = 0;
    struct smp_ans *out = smp_ans_out.lookup(&zero);
    if (!out)
        return 0;
    u32 head = q->head, tail = q->tail;
    u32 pick = tail, first = tail, early = tail;
    for (u32 i = 0; i < SMP_ANS_SCAN; i++) {
        u32 h = head + i;
        if (h == tail)
            break;
        struct smp_ans_key k = {tid, h};
        struct smp_ans *a = smp_ans_entries.lookup(&k);
        if (!a) {
            if (h == q->head)
                q->head = h + 1;  /* a hole an earlier pick left */
            continue;
        }
        if (now > a->us_rx_beg + SMP_ANS_MAX_AGE_NS) {
            smp_ans_entries.delete(&k);
            if (h == q->head)
                q->head = h + 1;
            if (ps)
                __sync_fetch_and_add(&ps->stale_answers, 1);
            continue;
        }
        if (a->us_tx_end < since) {
            if (early == tail)
                early = h;
            continue;  /* sent upstream before the request was read: not its answer */
        }
        if (first == tail)
            first = h;
        if (a->ds_fd == ds_fd) {
            pick = h;
            break;
        }
    }
    if (pick == tail)
        pick = first;
    if (pick == tail)
        pick = early;  /* none after it: the oldest still goes (its span will be counted as
                        * incomplete), or answers no response takes would pile up ahead of
                        * the scan and every later response would find none */
    if (pick == tail)
        return 0;
    struct smp_ans_key k = {tid, pick};
    struct smp_ans *a = smp_ans_entries.lookup(&k);
    if (!a)
        return 0;
    __builtin_memcpy(out, a, sizeof(*out));
    smp_ans_entries.delete(&k);
    if (pick == q->head)
        q->head = pick + 1;
    return out;
}

SMP_INLINE struct smp_ans *smp_ans_pop(u32 tid, u64 now, s32 ds_fd, struct smp_proc_stats *ps)
{
    return smp_ans_take(tid, now, ds_fd, 0, ps);
}

/* The upstream leg of an answer, onto a downstream span. */
SMP_INLINE void smp_ans_apply(struct smp_span *d, struct smp_ans *a)
{
    d->us_tx_beg = a->us_tx_beg;
    d->us_tx_end = a->us_tx_end;
    d->us_rx_beg = a->us_rx_beg;
    d->us_rx_arr = a->us_rx_arr;
    d->us_fd = a->us_fd;
    d->us_sid = a->us_sid;
    d->flags = (d->flags & ~(SMP_F_MATCH_THREAD | SMP_F_US_H2)) | SMP_F_MATCH_RESP |
               (a->us_sid ? SMP_F_US_H2 : 0);
    smp_tx_flag(d, SMP_F_US_TX_CALL, a->us_tx_call);
    if (a->rid_len)
        smp_copy_rid(d, a->rid_len, a->rid_hash, a->rid);
}

/* -- HTTP/2 streams ------------------------------------------------------------------------
 * The frame walk (smp_h2_step) calls smp_h2_frame for each frame header; each downstream
 * stream becomes a span with the same legs as HTTP/1.1:
 *   downstream HEADERS read      -> ds_rx_beg; pushed on the thread's FIFO
 *   upstream HEADERS write       -> the upstream stream's us_tx_beg, us_tx_end (and a FIFO pop,
 *                                   which keeps the FIFO in step for HTTP/1.1 neighbours)
 *   upstream DATA write          -> us_tx_end (the last write of the request)
 *   upstream frame read (first)  -> us_rx_beg: the answer is queued
 *   downstream response starts   -> the upstream leg from the answer queue
 *   downstream DATA write        -> ds_tx_data (the first: a gRPC reply's first message)
 *   downstream END_STREAM write  -> ds_tx_end, the span is emitted
 * An HTTP/1.1 leg on either side uses the HTTP/1.1 code, which queues and takes answers the
 * same way. */
SMP_INLINE void smp_h2_frame(struct smp_h2_ctx *x, struct smp_proc_stats *ps, u8 type, u8 flags,
                             u32 sid, u32 flen)
{
    if (!sid || type > H2_CONTINUATION)
        return;  /* connection-level (SETTINGS, PING, GOAWAY, WINDOW_UPDATE) or extension */
    struct smp_h2_skey sk = {};
    sk.conn = x->key;
    sk.sid = sid;
    sk.gen = x->gen;
    u8 end = (flags & H2_END_STREAM) && (type == H2_HEADERS || type == H2_DATA);
    struct smp_h2_stream *st = smp_h2_streams.lookup(&sk);
    int zero = 0;
    if (x->role == SMP_ROLE_DS && x->is_read) {
        if (type == H2_HEADERS && !st) {
            struct smp_h2_stream *init = smp_h2_stream_init.lookup(&zero);
            if (!init)
                return;
            u64 handle = SMP_H2_TAG | ((bpf_ktime_get_ns() << 4 | bpf_get_smp_processor_id()) &
                                       0xffffffffffffULL);
            struct smp_span *s = &init->span;
            s->kind = x->mode == SMP_MODE_APP ? SMP_SPAN_SERVER : SMP_SPAN_PROXY;
            s->tgid = x->upid;
            s->tid = x->tid;
            s->ds_fd = x->fd;
            s->us_fd = -1;
            s->ds_sid = sid;
            s->ds_rx_beg = x->ts;
            s->ds_rx_arr = x->arr;
            x->arr = 0;  /* the read's arrival stamp is its first bytes': the first stream's */
            s->flags = SMP_F_DS_H2;
            init->handle = handle;
            smp_h2_streams.update(&sk, init);
            __builtin_memset(init, 0, sizeof(*init));
            if (x->mode == SMP_MODE_PROXY) {
                smp_h2_handles.update(&handle, &sk);
                smp_fifo_push(x->tid, x->upid, handle);
            }
        } else if (st && type == H2_DATA) {
            st->span.req_bytes += flen;
        } else if (st && type == H2_RST_STREAM) {
            smp_h2_streams.delete(&sk);
            if (ps)
                __sync_fetch_and_add(&ps->h2_resets, 1);
        }
        return;
    }
    if (x->role == SMP_ROLE_DS) {
        /* the response, written downstream */
        if (!st)
            return;
        if (type == H2_RST_STREAM) {
            smp_h2_streams.delete(&sk);
            if (ps)
                __sync_fetch_and_add(&ps->h2_resets, 1);
            return;
        }
        if (st->state == H2_DS_OPEN) {
            /* the response starts: the upstream answer it carries */
            st->state = H2_DS_ANSWERED;
            if (x->mode == SMP_MODE_PROXY) {
                struct smp_ans *a = smp_ans_pop(x->tid, x->ts, x->fd, ps);
                if (a)
                    smp_ans_apply(&st->span, a);
                else if (!smp_tls_upstream(x->tid, &st->span, x->ts))
                    st->state = H2_DS_LOCAL;
            }
        }
        if (st->state == H2_DS_LOCAL) {
            /* no upstream answer: a local reply (no route, no upstream), not a span */
            if (end) {
                smp_h2_streams.delete(&sk);
                if (ps)
                    __sync_fetch_and_add(&ps->local_replies, 1);
            }
            return;
        }
        if (type == H2_DATA) {
            st->span.resp_bytes += flen;
            if (!st->span.ds_tx_data)
                st->span.ds_tx_data = x->ts;
        }
        if (end) {
            st->span.ds_tx_end = x->ts;
            if (!smp_emit_span(&st->span) && ps)
                __sync_fetch_and_add(&ps->spans, 1);
            smp_h2_streams.delete(&sk);
        }
        return;
    }
    /* SMP_ROLE_US: the proxy's own HTTP/2 client connection */
    if (!x->is_read) {
        if (type == H2_HEADERS && !st) {
            u64 h = 0;
            struct smp_span *d = smp_fifo_pop(x->tid, &h);
            s32 ds_fd = -1;
            struct smp_tls_seen *t = 0;
            if (d && (d->flags & SMP_F_DS_TLS) && !SMP_IS_H2_HANDLE(h)) {
                /* the request came inside TLS and goes on as an HTTP/2 stream: HTTP/2 inside
                 * TLS downstream. From now on the connection is followed per upstream stream
                 * (smp_conn.tls = 2), its reads and writes as the thread's bursts */
                struct smp_conn *dc = smp_conns.lookup(&h);
                t = smp_tls_thread(x->tid, x->upid);
                if (dc && t) {
                    dc->tls = 2;
                    dc->phase = SMP_PHASE_IDLE;
                    t->ds_rx = d->ds_rx_beg;
                    t->ds_rx_arr = d->ds_rx_arr;
                    t->ds_fd = d->ds_fd;
                } else {
                    t = 0;
                }
                d = 0;
            } else if (!d) {
                u32 tid = x->tid;
                t = smp_tls_last.lookup(&tid);
                if (t && (!t->ds_rx || x->ts > t->ds_rx + SMP_BURST_MAX_AGE_NS))
                    t = 0;
            }
            if (t) {
                /* one span per upstream stream: the downstream legs from the thread's TLS
                 * bursts on the downstream (SMP_F_DS_BURST), the upstream leg its own */
                t->ds_open = 0;
                struct smp_h2_stream *init = smp_h2_stream_init.lookup(&zero);
                if (!init)
                    return;
                struct smp_span *s = &init->span;
                s->kind = SMP_SPAN_PROXY;
                s->tgid = x->upid;
                s->tid = x->tid;
                s->ds_fd = t->ds_fd;
                s->us_fd = x->fd;
                s->us_sid = sid;
                s->ds_rx_beg = t->ds_rx;
                s->ds_rx_arr = t->ds_rx_arr;
                t->ds_rx_arr = 0;  /* the burst's first bytes are the first stream's */
                s->us_tx_beg = x->ts_call;
                s->us_tx_end = x->ts;
                s->flags = SMP_F_DS_TLS | SMP_F_DS_BURST | SMP_F_US_H2;
                init->state = H2_US_BURST;
                smp_h2_streams.update(&sk, init);
                u64 ukey = x->key;
                struct smp_h2_conn *uc = smp_h2_conns.lookup(&ukey);
                if (uc && !uc->rx.hp.on) {
                    uc->rx.hp.on = 1;  /* the answers' statuses are the spans' */
                    if (uc->rx.hp.missed)
                        /* answers went by before (an earlier stream of the connection was
                         * no burst span): entries they inserted are unknown, counted once */
                        smp_hp_lost(x->upid, 1);
                }
                __builtin_memset(init, 0, sizeof(*init));
                return;
            }
            if (d) {
                /* thread order: kept for HTTP/1.1 downstreams; answers correct it */
                d->us_fd = x->fd;
                d->us_sid = sid;
                d->us_tx_beg = x->ts_call;
                d->us_tx_end = x->ts;
                d->flags |= SMP_F_MATCH_THREAD | SMP_F_US_H2;
                ds_fd = d->ds_fd;
            }
            struct smp_h2_stream *init = smp_h2_stream_init.lookup(&zero);
            if (!init)
                return;
            init->span.ds_fd = ds_fd;
            init->span.us_fd = x->fd;
            init->span.us_sid = sid;
            init->span.us_tx_beg = x->ts_call;
            init->span.us_tx_end = x->ts;
            smp_h2_streams.update(&sk, init);
            __builtin_memset(init, 0, sizeof(*init));
            return;
        }
        if (!st)
            return;
        if (type == H2_RST_STREAM) {
            smp_h2_streams.delete(&sk);
            return;
        }
        if (!st->span.us_rx_beg)
            st->span.us_tx_end = x->ts;  /* a later frame of the request (its body) */
        if (type == H2_DATA && st->state == H2_US_BURST)
            st->span.req_bytes += flen;
        return;
    }
    /* upstream frames read: the first one starts the answer */
    if (!st)
        return;
    if (st->state == H2_US_BURST) {
        /* an upstream-driven stream: its span waits for the end of the response, then
         * for the thread's next write downstream */
        if (type == H2_RST_STREAM) {
            smp_h2_streams.delete(&sk);
            if (ps)
                __sync_fetch_and_add(&ps->h2_resets, 1);
            return;
        }
        if (!st->span.us_rx_beg) {
            st->span.us_rx_beg = x->ts;
            st->span.us_rx_arr = x->arr;
        }
        x->arr = 0;
        if (type == H2_DATA) {
            st->span.resp_bytes += flen;
            if (!st->span.ds_tx_data)
                st->span.ds_tx_data = x->ts;  /* (read here; written with the next burst) */
        }
        if (end)
            smp_burst_pend(x->tid, &sk);
        return;
    }
    if (type != H2_RST_STREAM)
        smp_ans_push(x->tid, x->upid, &st->span, x->ts, x->arr);
    x->arr = 0;  /* a later stream's bytes in this read may have arrived later: unknown */
    smp_h2_streams.delete(&sk);
}

/* -- statuses (HPACK) ------------------------------------------------------------------------
 * The header blocks of responses: those the proxy writes downstream (spans and local
 * replies alike), and on an upstream connection whose streams are spans themselves (HTTP/2
 * inside TLS downstream) those it reads. Counted per process: :status, grpc-status, and the
 * blocks whose status could not be decoded (a head without a :status it could read, an
 * end-of-stream block with fields it could not resolve and no grpc-status), never guessed. */
#define SMP_ST_HTTP 1
#define SMP_ST_GRPC 2
#define SMP_ST_UNKNOWN 3
#define SMP_ST_LOCAL_H1 4  /* an HTTP/1.1 local reply's status (no span carries it; 0 unknown) */
struct smp_status_key {
    u32 upid;
    u16 kind;   /* SMP_ST_* */
    u16 code;
};
#ifndef SMP_STATUS_ENTRIES
#define SMP_STATUS_ENTRIES 8192  /* (process, kind, code) counts of the node: ~0.5 MB */
#endif
BPF_HASH(smp_h2_status, struct smp_status_key, u64, SMP_STATUS_ENTRIES);
#ifndef SMP_HP_PARTS
#define SMP_HP_PARTS 1024          /* cut-off header blocks waiting for their rest (~280 KB) */
#endif
BPF_TABLE("lru_hash", struct smp_hp_pkey, struct smp_hp_part, smp_hp_parts, SMP_HP_PARTS);

SMP_INLINE void smp_status_add(u32 upid, u16 kind, u16 code, u64 n)
{
    struct smp_status_key sk = {};
    sk.upid = upid;
    sk.kind = kind;
    sk.code = code;
    u64 zero = 0;
    smp_h2_status.insert(&sk, &zero);
    u64 *v = smp_h2_status.lookup(&sk);
    if (v) {
        __sync_fetch_and_add(v, n);
        return;
    }
    /* the table is full: a new code cannot be counted; how many were not, per process */
    struct smp_proc_stats *ps = smp_proc.lookup(&upid);
    if (ps)
        __sync_fetch_and_add(&ps->statuses_lost, n);
}

/* n header blocks given up on: their statuses unknown, counted lost, and the shadow's
 * earlier entries unknown from now on (their insertions are not counted: see smp_hpack). */
SMP_INLINE void smp_hp_abandon(struct smp_h2_dir *d, u32 upid, u64 n)
{
    d->hp.floor = d->hp.ins;
    smp_status_add(upid, SMP_ST_UNKNOWN, 0, n);
    smp_hp_lost(upid, n);
}

/* Whether the statuses of the call's header block on stream sid are counted: always for
 * writes (the responses downstream); for reads, an upstream answer, only when its stream is
 * the span. */
SMP_INLINE u8 smp_hp_counts(struct smp_h2_call *k, u32 sid)
{
    if (!k->x.is_read)
        return 1;
    struct smp_h2_skey sk = {};
    sk.conn = k->x.key;
    sk.sid = sid;
    sk.gen = k->x.gen;
    struct smp_h2_stream *st = smp_h2_streams.lookup(&sk);
    return st && st->state == H2_US_BURST;
}

/* A queued header block (q): decode the part of it in its buffer, count its statuses. A
 * block the call's end cut off (HQ_CUT) is kept whole in smp_hp_parts and decoded when the
 * connection's next call brings its rest (HQ_REST), not followed to a cut: else the shadow
 * would lose count of the encoder's table at every such cut (a busy gRPC connection's reads
 * end inside a frame now and then), and every later reference to an earlier entry (grpc-status
 * OK, inserted once) would be unknown for the connection's life. */
SMP_INLINE void smp_h2_hpack(struct smp_h2_call *k, struct smp_h2_dir *d, struct smp_hq *q)
{
    u64 n = q->n;
    if (n > SMP_HP_BUF - 1)
        n = SMP_HP_BUF - 1;
    asm volatile("%0 &= 255" : "+r"(n));
    u32 flen = q->flen, sid = q->sid, upid = k->x.upid;
    u8 fl = q->fl, counts = 0, how = q->how;
    struct smp_hp_pkey pk = {};
    pk.conn = k->x.key;
    pk.gen = k->x.gen;
    pk.dir = k->x.is_read;
    u64 have = 0;
    if (how == HQ_REST) {
        d->hp.pend = 0;
        struct smp_hp_part *p = smp_hp_parts.lookup(&pk);
        if (!p) {
            /* evicted (smp_hp_parts full): lost, like a block the walk gave up on */
            smp_hp_abandon(d, upid, 1);
            return;
        }
        have = p->have;
        flen = p->flen;
        sid = p->sid;
        fl = p->fl;
        counts = p->counts;
        __builtin_memcpy(k->hp, p->b, SMP_HP_BUF);
        smp_hp_parts.delete(&pk);
        asm volatile("%0 &= 255" : "+r"(have));
        if (n && bpf_probe_read_user(k->hp + have, n, (void *)q->at))
            n = 0;
        n += have;
        if (n > SMP_HP_BUF - 1)
            n = SMP_HP_BUF - 1;
    } else {
        if (n && bpf_probe_read_user(k->hp, n, (void *)q->at))
            n = 0;
        counts = smp_hp_counts(k, sid);
        if (how == HQ_CUT && n == q->n && n < flen && flen < SMP_HP_BUF) {
            struct smp_hp_part *p = &k->part;
            __builtin_memcpy(p->b, k->hp, SMP_HP_BUF);
            p->have = n;
            p->flen = flen;
            p->sid = sid;
            p->fl = fl;
            p->counts = counts;
            int kept = !smp_hp_parts.update(&pk, p);
            __builtin_memset(p->b, 0, SMP_HP_BUF);
            if (kept) {
                d->hp.pend = 1;
                __builtin_memset(k->hp, 0, SMP_HP_BUF);
                return;
            }
        }
    }
    struct smp_hp_out o = {};
    smp_hp_parse(&d->hp, k->hp, (u32)n, fl, n == flen, &o, &k->hp_w);
    u64 *w = (u64 *)k->hp;
    for (int i = 0; i < 2 * SMP_HP_BUF / 8; i++)
        w[i] = 0;  /* no payload bytes stay in a map */
    if (o.cut)
        smp_hp_lost(upid, 1);
    if (!counts)
        return;
    if (o.status)
        smp_status_add(upid, SMP_ST_HTTP, o.status, 1);
    if (o.grpc != HP_NONE)
        smp_status_add(upid, SMP_ST_GRPC, o.grpc, 1);
    u8 end = fl & H2_END_STREAM;
    if ((!end && !o.status) || (end && o.grpc == HP_NONE && o.unresolved))
        smp_status_add(upid, SMP_ST_UNKNOWN, 0, 1);
}

/* A kept block (smp_hp_parts) whose rest will not be decoded: removed, no bytes stay. */
SMP_INLINE void smp_hp_drop(struct smp_h2_call *k, struct smp_h2_dir *d)
{
    struct smp_hp_pkey pk = {};
    pk.conn = k->x.key;
    pk.gen = k->x.gen;
    pk.dir = k->x.is_read;
    smp_hp_parts.delete(&pk);
    d->hp.pend = 0;
}

/* A connection's kept blocks (its rest never came: closed, or reused): no bytes stay. */
SMP_INLINE void smp_hp_forget(u64 key, struct smp_h2_conn *hc)
{
    if (!hc || !(hc->rx.hp.pend | hc->tx.hp.pend))
        return;
    struct smp_hp_pkey pk = {};
    pk.conn = key;
    pk.gen = hc->gen;
    smp_hp_parts.delete(&pk);
    pk.dir = 1;
    smp_hp_parts.delete(&pk);
}

/* Header blocks queued but not decoded (the chain of tail calls ran out, or the queue
 * was full): unknown, and the shadow lost count of the encoder's table (counted in
 * h2_blocks_lost: the statuses of entries inserted before are unknown from then on). */
SMP_INLINE void smp_hq_give_up(struct smp_h2_call *k, struct smp_h2_dir *d)
{
    u32 left = (k->hq_n > k->hq_i ? k->hq_n - k->hq_i : 0) + k->hq_over;
    if (!left)
        return;
    k->hq_i = k->hq_n;
    k->hq_over = 0;
    smp_hp_abandon(d, k->x.upid, left);
    if (d->hp.pend)
        smp_hp_drop(k, d);  /* a kept block whose rest was among them */
}

/* The walk is done (or lost its place): the queued header blocks to the decoder. */
SMP_INLINE void smp_hq_decode(void *ctx, struct smp_h2_call *k, struct smp_h2_dir *d)
{
    if (k->hq_i < k->hq_n)
        smp_h2_progs.call(ctx, 1);
    smp_hq_give_up(k, d);
}

/* The call's bytes from the cursor on are lost to the walk: counted, resynchronised later. */
SMP_INLINE void smp_h2_lost(struct smp_h2_call *k, struct smp_h2_dir *d, struct smp_proc_stats *ps)
{
    u64 key = k->x.key;
    struct smp_conn *c = smp_conns.lookup(&key);
    d->synced = 0;
    d->skip = 0;
    d->have = 0;
    if (ps)
        __sync_fetch_and_add(&ps->h2_desyncs, 1);
    if (c)
        smp_conn_unparsed(c, ps, k->x.fd, k->x.is_read, k->ret > k->done ? k->ret - k->done : 0);
}

/* Up to SMP_H2_PER_STEP frame headers of the call in smp_h2_scratch, then on to the next
 * (a tail call: at most 33 in a chain, so up to 33 * SMP_H2_PER_STEP frames per call). Loaded
 * by user space with the type of the path's programs. The fewer tail calls the walk needs, the
 * more are left for the header blocks (measured under CPU contention with 4: a gRPC server
 * sidecar's reads of many answers at once ran out of them in 1 run of 24, see smp_hq_give_up;
 * with 5, 0 of 12). 6 loads here as root, but not in the DaemonSet's container (headerless
 * node, its capabilities only): the verifier's limit is near. */
#ifndef SMP_H2_PER_STEP
#define SMP_H2_PER_STEP 5
#endif
int smp_h2_step(void *ctx)
{
    int zero = 0;
    struct smp_h2_call *k = smp_h2_scratch.lookup(&zero);
    if (!k)
        return 0;
    u64 key = k->x.key;
    u32 upid = k->x.upid;
    struct smp_h2_conn *hc = smp_h2_conns.lookup(&key);
    if (!hc)
        return 0;
    struct smp_h2_dir *d = k->x.is_read ? &hc->rx : &hc->tx;
    struct smp_proc_stats *ps = smp_proc.lookup(&upid);
    u8 f[16] = {};
    for (int i = 0; i < SMP_H2_PER_STEP; i++) {
        int r = smp_h2_next(k, d, f);
        if (r < 0) {
            smp_h2_lost(k, d, ps);
            smp_hq_decode(ctx, k, d);
            return 0;
        }
        if (r == 0) {
            if (k->total < k->ret)
                smp_h2_lost(k, d, ps);  /* more iovecs than followed: the rest, and the place */
            smp_hq_decode(ctx, k, d);
            return 0;
        }
        u32 flen = smp_h2_len(f);
        d->skip = flen;
        k->frames++;
        struct smp_h2_ctx x = k->x;
        smp_h2_frame(&x, ps, f[3], f[4], smp_h2_sid(f), flen);
        k->x.arr = x.arr;
        if (f[3] == H2_HEADERS && d->hp.on) {
            /* its block is decoded when the walk is done (a program of its own) */
            u32 qn = k->hq_n;
            if (qn < SMP_HQ) {
                struct smp_hq *q = &k->hq[qn & (SMP_HQ - 1)];
                u32 j = k->seg;
                u64 l = j < SMP_H2_SEGS ? k->len[j & (SMP_H2_SEGS - 1)] : 0;
                u64 avail = l > k->off ? l - k->off : 0;
                q->at = j < SMP_H2_SEGS ? k->base[j & (SMP_H2_SEGS - 1)] + k->off : 0;
                q->n = avail < flen ? avail : flen;
                q->flen = flen;
                q->sid = smp_h2_sid(f);
                q->fl = f[4];
                /* the call ends inside it: the rest comes in the connection's next call */
                q->how = avail < flen && k->done + avail >= k->ret ? HQ_CUT : HQ_WHOLE;
                k->hq_n = qn + 1;
            } else {
                k->hq_over++;  /* not decoded: counted after the queued ones */
            }
        } else if (f[3] == H2_HEADERS) {
            d->hp.missed = 1;
        }
    }
    smp_h2_progs.call(ctx, 0);
    /* the chain's length limit: fine if what is left is this frame's payload */
    if (k->ret - k->done <= d->skip)
        d->skip -= k->ret - k->done;
    else
        smp_h2_lost(k, d, ps);
    smp_hq_give_up(k, d);  /* no tail call left to decode them */
    return 0;
}

/* The walk's queued header blocks, SMP_HP_PER_CALL per program, in order (the shadow
 * follows the encoder's insertions in order), then on to the next (a tail call). */
#ifndef SMP_HP_PER_CALL
#define SMP_HP_PER_CALL 2
#endif
int smp_h2_hpack_step(void *ctx)
{
    int zero = 0;
    struct smp_h2_call *k = smp_h2_scratch.lookup(&zero);
    if (!k)
        return 0;
    u64 key = k->x.key;
    struct smp_h2_conn *hc = smp_h2_conns.lookup(&key);
    if (!hc)
        return 0;
    struct smp_h2_dir *d = k->x.is_read ? &hc->rx : &hc->tx;
    for (int i = 0; i < SMP_HP_PER_CALL; i++) {
        u32 qi = k->hq_i;
        if (qi >= k->hq_n || qi >= SMP_HQ) {
            smp_hq_give_up(k, d);  /* the blocks the queue had no room for, if any */
            return 0;
        }
        k->hq_i = qi + 1;
        smp_h2_hpack(k, d, &k->hq[qi & (SMP_HQ - 1)]);
    }
    smp_hq_decode(ctx, k, d);
    return 0;
}

/* A read or write on a connection that is (or may be) HTTP/2: set the walk up and start it
 * (a tail call: nothing after it runs). -1 when the bytes are not HTTP/2. */
SMP_INLINE int smp_h2_begin(struct smp_conn *c, struct smp_io *io, u8 cls, struct smp_proc_stats *ps)
{
    int zero = 0;
    struct smp_h2_call *k = smp_h2_scratch.lookup(&zero);
    if (!k)
        return 0;
    if (smp_h2_gather(k, io->ptr, io->kind, io->ret)) {
        if (c->proto != SMP_PROTO_H2)
            return -1;
        smp_conn_unparsed(c, ps, io->fd, io->is_read, io->ret);
        return 0;
    }
    u64 key = io->key;
    u64 pos = cls == CLS_H2PRI ? H2_PREFACE_LEN : 0;
    struct smp_h2_conn *hc = smp_h2_conns.lookup(&key);
    if (!hc || c->proto != SMP_PROTO_H2) {
        if (cls != CLS_H2PRI && !smp_h2_plausible(k, 0))
            return -1;
        smp_hp_forget(key, hc);  /* an earlier connection's (fd or socket reused) */
        struct smp_h2_conn fresh = {};
        fresh.gen = (u32)bpf_ktime_get_ns() | 1;
        fresh.tx.hp.on = c->role == SMP_ROLE_DS;  /* the responses' statuses */
        smp_h2_conns.update(&key, &fresh);
        hc = smp_h2_conns.lookup(&key);
        if (!hc)
            return 0;
        c->proto = SMP_PROTO_H2;
    }
    struct smp_h2_dir *d = io->is_read ? &hc->rx : &hc->tx;
    if (cls == CLS_H2PRI || !d->synced) {
        if (cls != CLS_H2PRI && !smp_h2_plausible(k, 0)) {
            smp_conn_unparsed(c, ps, io->fd, io->is_read, io->ret);
            return 0;
        }
        d->synced = 1;
        d->skip = 0;
        d->have = 0;
    }
    if (pos > k->len[0])
        pos = k->len[0];
    k->off = pos;
    k->done = pos;
    k->hq_n = 0;
    k->hq_i = 0;
    k->hq_over = 0;
    k->x.key = key;
    k->x.ts = io->ts;
    k->x.ts_call = io->ts_call;
    k->x.arr = io->arr;
    k->x.upid = io->upid;
    k->x.tid = io->tid;
    k->x.gen = hc->gen;
    k->x.fd = io->fd;
    k->x.role = c->role;
    k->x.mode = io->mode;
    k->x.is_read = io->is_read;
    if (d->hp.pend) {
        /* the last call cut a header block off: its rest is this call's first bytes */
        u64 l = k->len[0] > pos ? k->len[0] - pos : 0;
        if (d->skip && l) {
            struct smp_hq *q = &k->hq[0];
            q->at = k->base[0] + pos;
            q->n = l < d->skip ? l : d->skip;
            q->how = HQ_REST;
            k->hq_n = 1;
        } else {
            /* the walk lost its place since (resynchronised): the block is lost */
            smp_hp_drop(k, d);
            smp_hp_abandon(d, io->upid, 1);
        }
    }
    smp_h2_progs.call(io->ctx, 0);
    /* no walk program (user space has not set it yet): the bytes are not followed */
    smp_conn_unparsed(c, ps, io->fd, io->is_read, io->ret);
    d->synced = 0;
    return 0;
}

/* -- arrival stamps ----------------------------------------------------------------------
 * When bytes reach a traced connection's socket, before any thread reads them: the first
 * arrival since the last read is kept in the connection (smp_conn.arr) and taken by the next
 * read. Only connections already in smp_conns get stamps (the hooks run in softirq, for any
 * socket of the node: a lookup, nothing else, for the others). Programs at the end. */

/* A read of connection ``c`` at ``now``: the arrival of its first bytes, 0 if unknown. */
SMP_INLINE u64 smp_arrival_take(struct smp_conn *c, u64 now)
{
    u64 a = c->arr;
    c->arr = 0;
    return a && a <= now ? a : 0;
}

/* Bytes reached socket ``sk`` (the key of smp_conns, or mapped to it): stamp its first. */
SMP_INLINE void smp_arrival_mark(u64 key)
{
    struct smp_conn *c = smp_conns.lookup(&key);
    if (c && !c->arr)
        c->arr = bpf_ktime_get_ns();
}

/* Listeners: a stamp for a connection's first request. A connection found at its first read
 * has its entry made then, after its first request's bytes arrived: that request would have no
 * arrival stamp. The local ports of traced processes' downstream connections, per network
 * namespace, are learnt from those entries (smp_listeners; the syscalls path learns them at
 * the read that names the sk); a socket that completes its handshake on one of them (SYN_RECV
 * -> ESTABLISHED, in softirq, before its first bytes are queued) gets its entry then. Only
 * connections accepted before the probe had seen their listener (the first one, or a burst
 * that connected at once) have no stamp on their first request (arrival_missing). The probe
 * is built without kernel headers: struct sock_common's first fields have kept these offsets
 * since Linux 3.x (skc_num: the local port, host order; skc_net: the struct net pointer). */
#define SMP_SKC_NUM_OFF 14
#define SMP_SKC_NET_OFF 48
#define SMP_MAX_LISTENERS 1024
struct smp_listener {
    u64 net;
    u32 port;
    u32 pad;
};
BPF_HASH(smp_listeners, struct smp_listener, u32, SMP_MAX_LISTENERS);   /* -> upid */

SMP_INLINE int smp_listener_of(u64 sk, struct smp_listener *l)
{
    u16 port = 0;
    u64 net = 0;
    if (bpf_probe_read_kernel(&port, sizeof(port), (void *)(sk + SMP_SKC_NUM_OFF)) ||
        bpf_probe_read_kernel(&net, sizeof(net), (void *)(sk + SMP_SKC_NET_OFF)))
        return 0;
    l->net = net;
    l->port = port;
    l->pad = 0;
    return port != 0;
}

/* ``sk``, a downstream connection of traced process ``upid``: its listener is that process's */
SMP_INLINE void smp_listener_learn(u64 sk, u32 upid)
{
    struct smp_listener l = {};
    if (!smp_listener_of(sk, &l) || smp_listeners.lookup(&l))
        return;
    smp_listeners.update(&l, &upid);
}

/* ``sk`` completed a passive handshake: the upid whose listener it came to, else 0 */
SMP_INLINE u32 smp_listener_upid(u64 sk)
{
    struct smp_listener l = {};
    if (!smp_listener_of(sk, &l))
        return 0;
    u32 *upid = smp_listeners.lookup(&l);
    return upid ? *upid : 0;
}

#if SMP_ARRIVAL == SMP_ARRIVAL_TCP_PROBE && SMP_PATH == SMP_PATH_SYSCALLS
/* The syscalls path keys connections by tgid << 32 | fd: a traced thread's socket read names
 * its sk in tcp:tcp_rcv_space_adjust (inside tcp_recvmsg, the reader's context), which puts
 * it in the read's own saved arguments (smp_args.sk: the untraced reads of the node find no
 * entry, the one lookup they pay); the read's exit maps that sk to the connection's key. */
BPF_TABLE("lru_hash", u64, u64, smp_sk_key, SMP_MAX_CONNS);       /* sk -> connection key */
/* A socket accepted on a traced listener (listeners, above) before any read names it: its
 * smp_sk_key entry is the sk itself (no tgid << 32 | fd is a kernel address) and its first
 * arrival waits here for the read. */
BPF_TABLE("lru_hash", u64, u64, smp_early_arr, SMP_MAX_CONNS);    /* sk -> first arrival */
/* A traced thread's connect() in progress: its connection's key, for the sk its SYN_SENT
 * names (inet_sock_set_state, in the same call), so that the first response is stamped. */
BPF_TABLE("lru_hash", u32, u64, smp_connecting, SMP_MAX_PIDS);     /* tid -> connection key */

/* A read returned bytes on ``key`` (its fd ``sfd``: upid << 32 | fd); ``sk`` is the socket
 * named during it (0: none, e.g. a pipe). An LRU update replaces the entry: only when the
 * mapping changes. Returns the arrival stamped since the socket's handshake on a traced
 * listener, for its first read (else 0). */
SMP_INLINE u64 smp_arrival_learn(u64 sk, u64 key, u64 sfd)
{
    if (!sk)
        return 0;
    u64 *known = smp_sk_key.lookup(&sk);
    if (known && *known == key)
        return 0;
    u64 first = 0;
    if (known && *known == sk) {  /* accepted on a listener: its first bytes' stamp */
        u64 *early = smp_early_arr.lookup(&sk);
        if (early)
            first = *early;
        smp_early_arr.delete(&sk);
    } else {  /* new to this sk; a downstream's: proxies' have an entry, apps' an accepted fd */
        struct smp_conn *c = smp_conns.lookup(&key);
        u8 *kind = c ? 0 : smp_sockfd.lookup(&sfd);
        if (c ? c->role == SMP_ROLE_DS : kind && *kind == SMP_SOCKFD_ACCEPTED)
            smp_listener_learn(sk, sfd >> 32);
    }
    smp_sk_key.update(&sk, &key);
    return first;
}
#else
SMP_INLINE u64 smp_arrival_learn(u64 sk, u64 key, u64 sfd) { return 0; }
#endif

/* -- write stamps --------------------------------------------------------------------------
 * A write's instant as the wire sees it: when its first packet is queued to a device, in the
 * writer's own context (net:net_dev_queue, the current task a traced thread). Without one (the
 * data was held back by TCP, or the hook is absent) the call's own instant. */
#if SMP_XMIT_STAMPS
/* Per CPU: for the last few threads that queued a data packet there, the first since their
 * slot was last taken. A write's packet is queued in the writer's context, on its CPU, just
 * before the write returns there: array slots (no hash insert and delete per packet, no PID
 * filter for the node's other packets: they only take a slot a traced thread's write looks up
 * by tid). SMP_XMIT_WAYS threads per CPU, so that a thread woken by the write and run before
 * it returns (a preemption) does not take the writer's stamp. A thread moved to another CPU
 * in between finds no stamp: its call's own instant. */
#define SMP_XMIT_WAYS 4
struct smp_xmit_cpu {
    u64 ts[SMP_XMIT_WAYS];
    u32 tid[SMP_XMIT_WAYS];
    u32 next;
    u32 pad;
};
BPF_PERCPU_ARRAY(smp_xmit, struct smp_xmit_cpu, 1);

/* The write's instant: its first packet if queued within [since, until], else ``fallback``
 * (and *missed set). */
SMP_INLINE u64 smp_xmit_take(u32 tid, u64 since, u64 until, u64 fallback, u8 *missed)
{
    int zero = 0;
    *missed = 1;
    struct smp_xmit_cpu *x = smp_xmit.lookup(&zero);
    if (!x)
        return fallback;
#pragma unroll
    for (int i = 0; i < SMP_XMIT_WAYS; i++) {
        if (x->tid[i] != tid || !x->ts[i])
            continue;
        u64 t = x->ts[i];
        x->ts[i] = 0;
        if (t < since || t > until)
            return fallback;
        *missed = 0;
        return t;
    }
    return fallback;
}

SMP_INLINE void smp_xmit_forget(u32 tid)
{
    int zero = 0;
    struct smp_xmit_cpu *x = smp_xmit.lookup(&zero);
    if (!x)
        return;
#pragma unroll
    for (int i = 0; i < SMP_XMIT_WAYS; i++)
        if (x->tid[i] == tid)
            x->ts[i] = 0;
}
#else
SMP_INLINE u64 smp_xmit_take(u32 tid, u64 since, u64 until, u64 fallback, u8 *missed)
{
    *missed = 1;
    return fallback;
}

SMP_INLINE void smp_xmit_forget(u32 tid) {}
#endif

/* -- transitions -------------------------------------------------------------------------- */

/* A connection seen for the first time (no accept/connect seen): its role from what user
 * space seeded for it, else from its first bytes. */
SMP_INLINE struct smp_conn *smp_conn_join(struct smp_io *io, u8 cls)
{
    u8 role = SMP_ROLE_NONE;
    u64 seed_key = ((u64)io->upid << 32) | (u32)io->fd;
    u8 *seed = smp_seed.lookup(&seed_key);
    if (seed) {
        role = *seed;
        smp_seed.delete(&seed_key);
    } else if (cls == CLS_REQ && (io->is_read || SMP_PATH == SMP_PATH_SOCK)) {
        role = io->is_read ? SMP_ROLE_DS : SMP_ROLE_US;
    } else if (cls == CLS_RESP && (io->is_read || SMP_PATH == SMP_PATH_SOCK)) {
        /* (the syscalls path sees every fd: a write that starts like HTTP may go to a file,
         * e.g. Envoy's access log flushed with writev, a slice starting at "POST") */
        role = io->is_read ? SMP_ROLE_US : SMP_ROLE_DS;
    } else if (cls == CLS_H2PRI) {
        role = io->is_read ? SMP_ROLE_DS : SMP_ROLE_US;
    } else if (cls == CLS_TLS && io->is_read) {
        /* we connect our upstreams in sight (connect, SYN_SENT): a TLS client hello read
         * on any other connection is a downstream's */
        role = SMP_ROLE_DS;
    }
#if SMP_PATH == SMP_PATH_SOCK
    if (role == SMP_ROLE_NONE && io->mode == SMP_MODE_PROXY)
        role = SMP_ROLE_DS;  /* bytes no parser explains: an entry, so they count per
                              * connection (our upstreams' connects are in sight) */
#endif
    if (role == SMP_ROLE_NONE || (io->mode == SMP_MODE_APP && role != SMP_ROLE_DS))
        return 0;
    struct smp_conn *c = smp_conn_new(io->key, role, io->upid);
#if SMP_PATH == SMP_PATH_SOCK
    if (c && role == SMP_ROLE_DS)
        smp_listener_learn(io->key, io->upid);
#endif
    if (c && cls == CLS_RESP) { /* joined mid-exchange: wait for the next request */
        c->phase = role == SMP_ROLE_US ? SMP_PHASE_RESPONSE : SMP_PHASE_IDLE;
        c->proto = SMP_PROTO_H1;
    }
    return c;
}

/* DS, IDLE/RESPONSE -> REQUEST: a request's first bytes. Emits the previous one. */
SMP_INLINE void smp_ds_request(struct smp_conn *c, struct smp_io *io, struct smp_scan *rid)
{
    if (c->phase == SMP_PHASE_RESPONSE)
        smp_emit(c);
    __builtin_memset(&c->span, 0, sizeof(c->span));
    c->phase = SMP_PHASE_REQUEST;
    c->span.kind = io->mode == SMP_MODE_APP ? SMP_SPAN_SERVER : SMP_SPAN_PROXY;
    c->span.tgid = io->upid;
    c->span.tid = io->tid;
    c->span.ds_fd = io->fd;
    c->span.us_fd = -1;
    c->span.ds_rx_beg = io->ts;
    c->span.ds_rx_arr = io->arr;
    c->span.req_bytes = io->ret;
    if (c->tls)
        c->span.flags |= SMP_F_DS_TLS;
    if (rid && rid->rid_len)
        smp_copy_rid(&c->span, rid->rid_len, rid->rid_hash, rid->rid);
    if (io->mode != SMP_MODE_PROXY)
        return;
    if (c->span.rid_hash)
        smp_rid_index.update(&c->span.rid_hash, &io->key);
    smp_fifo_push(io->tid, io->upid, io->key);
}

SMP_INLINE void smp_ds_read(struct smp_conn *c, struct smp_io *io, u8 cls, struct smp_scan *rid,
                            struct smp_proc_stats *ps)
{
    if (c->phase == SMP_PHASE_REQUEST) {
        if (cls == CLS_REQ && !c->tls) {
            /* a pipelined request: one span per connection at a time, so it is counted */
            if (ps)
                __sync_fetch_and_add(&ps->pipelined, 1);
            smp_count_unparsed(ps, io->ret);
        } else {
            c->span.req_bytes += io->ret;  /* more of the request */
        }
        return;
    }
    if (c->tls == 2) {
        smp_burst_ds_read(io);  /* HTTP/2 inside TLS: spans per upstream stream */
        return;
    }
    if (cls == CLS_TLS)
        c->tls = 1;
    if (c->tls || cls == CLS_REQ)
        smp_ds_request(c, io, rid);
    else
        smp_conn_unparsed(c, ps, io->fd, 1, io->ret);
}

/* DS, REQUEST -> RESPONSE (or -> IDLE for a local reply); RESPONSE: more of the response. */
SMP_INLINE void smp_ds_write(struct smp_conn *c, struct smp_io *io, u8 cls,
                             struct smp_proc_stats *ps)
{
    if (c->tls == 2) {
        smp_burst_ds_write(io, ps);  /* HTTP/2 inside TLS: spans per upstream stream */
        return;
    }
    if (c->phase == SMP_PHASE_REQUEST) {
        /* A plaintext HTTP/1.1 response to a request thread order matched to an upstream
         * write takes its upstream half from the answer queue: the answer to the upstream
         * exchange thread order gave it if that was read, else the oldest answer not sent
         * before the request was read. A worker writes neither upstream requests nor
         * downstream responses strictly in the order it read them (Envoy, bursts from 10
         * connections: ~50% of thread-order matches are another request's), so a request
         * whose own exchange has not answered yet takes one that did, never none: no
         * request that went upstream ends as a "local reply" for want of a match. (A TLS
         * record may be a handshake or a session ticket: not a response head.) */
        u8 by_order = io->mode == SMP_MODE_PROXY && cls == CLS_RESP && c->span.us_tx_end &&
                      (c->span.flags & SMP_F_MATCH_THREAD) &&
                      !(c->span.flags & (SMP_F_US_H2 | SMP_F_US_TLS));
        if (io->mode == SMP_MODE_PROXY && !(c->span.flags & SMP_F_US_TLS) &&
            (c->span.us_rx_beg || (c->span.flags & SMP_F_US_H2) || by_order)) {
            /* the response starts: take the thread's upstream answer (keeping the queue in
             * step); it decides the upstream leg when HTTP/2 is on the upstream side or the
             * request was matched by thread order (above), not when a request id matched */
            struct smp_ans *a = smp_ans_take(io->tid, io->ts, io->fd,
                                             by_order ? c->span.ds_rx_beg : 0, ps);
            if (a && by_order) {
                if (a->us_fd != c->span.us_fd || a->us_tx_end != c->span.us_tx_end) {
                    smp_ans_apply(&c->span, a);  /* thread order had it wrong */
                    c->span.flags |= SMP_F_REPAIRED;
                }
            } else if (a && !(c->span.flags & SMP_F_MATCH_RID) &&
                       (a->us_sid || (c->span.flags & SMP_F_US_H2))) {
                smp_ans_apply(&c->span, a);
            } else if (!a && (c->span.flags & SMP_F_US_H2)) {
                c->span.us_rx_beg = 0;  /* no answer: a local reply */
            }
        }
        if (io->mode == SMP_MODE_PROXY && !c->span.us_rx_beg) {
            /* no upstream answer yet: a local reply or TLS handshake, not a span; a reply's
             * status is counted here (rare: a map update per local reply only) */
            c->phase = SMP_PHASE_IDLE;
            if (ps)
                __sync_fetch_and_add(&ps->local_replies, 1);
            if (cls == CLS_RESP)
                smp_status_add(io->upid, SMP_ST_LOCAL_H1, io->status, 1);
            smp_conn_unparsed(c, ps, io->fd, 0, io->ret + c->span.req_bytes);
            return;
        }
        c->phase = SMP_PHASE_RESPONSE;
        c->span.status = cls == CLS_RESP ? io->status : 0;  /* the head's first write */
    } else if (c->phase == SMP_PHASE_RESPONSE && cls == CLS_RESP && c->span.status >= 100 &&
               c->span.status < 200) {
        c->span.status = io->status;  /* the final head after an interim one (100 Continue) */
    }
    if (c->phase == SMP_PHASE_RESPONSE) {
        c->span.ds_tx_end = io->ts;
        smp_tx_flag(&c->span, SMP_F_DS_TX_CALL, io->xmit_call);
        c->span.resp_bytes += io->ret;
    } else {
        smp_conn_unparsed(c, ps, io->fd, 0, io->ret);
    }
}

/* The downstream request an upstream request carries: by x-request-id, else the oldest
 * request this worker thread read and has not sent on yet (HTTP/1.1 or HTTP/2). */
SMP_INLINE struct smp_span *smp_us_match(struct smp_io *io, struct smp_scan *rid, u64 *dkey,
                                         u16 *how)
{
    if (rid && rid->rid_hash) {
        u64 h = rid->rid_hash;
        u64 *k = smp_rid_index.lookup(&h);
        if (k) {
            u64 key = *k;
            smp_rid_index.delete(&h);
            struct smp_span *d = smp_pending_span(key);
            if (d && !d->us_tx_end) {
                *dkey = key;
                *how = SMP_F_MATCH_RID;
                return d;
            }
            /* an id seen twice: fall back to the thread's order */
        }
    }
    *how = SMP_F_MATCH_THREAD;
    return smp_fifo_pop(io->tid, dkey);
}

/* US, IDLE/RESPONSE -> REQUEST: a request sent upstream; REQUEST: more of it. */
SMP_INLINE void smp_us_write(struct smp_conn *c, struct smp_io *io, struct smp_scan *rid,
                             struct smp_proc_stats *ps)
{
    if (c->phase == SMP_PHASE_REQUEST) {
        struct smp_span *d = smp_pending_span(c->ds_key);
        if (d && d->us_fd == io->fd) {
            d->us_tx_end = io->ts;
            smp_tx_flag(d, SMP_F_US_TX_CALL, io->xmit_call);
        }
        c->span.us_tx_end = io->ts;
        smp_tx_flag(&c->span, SMP_F_US_TX_CALL, io->xmit_call);
        return;
    }
    u64 dkey = 0;
    u16 how = 0;
    struct smp_span *d = smp_us_match(io, rid, &dkey, &how);
    if (!d) {
        smp_conn_unparsed(c, ps, io->fd, 0, io->ret);
        return;
    }
    if (rid && rid->rid_len && !d->rid_len && !SMP_IS_H2_HANDLE(dkey)) {
        /* the proxy made the id (none came from downstream): adopt it, so the app's span
         * of this request can be joined to this one (an HTTP/2 stream takes it from its
         * answer) */
        smp_copy_rid(d, rid->rid_len, rid->rid_hash, rid->rid);
        d->flags |= SMP_F_RID_ADOPTED;
    }
    if (!SMP_IS_H2_HANDLE(dkey)) {
        struct smp_conn *dc = smp_conns.lookup(&dkey);
        if (dc)
            dc->us_key = io->key;
    }
    d->us_fd = io->fd;
    d->us_tx_beg = io->ts_call;
    d->us_tx_end = io->ts;
    d->flags |= how;
    smp_tx_flag(d, SMP_F_US_TX_CALL, io->xmit_call);
    if (c->proto == SMP_PROTO_TLS)
        d->flags |= SMP_F_US_TLS;
    c->ds_key = dkey;
    c->phase = SMP_PHASE_REQUEST;
    /* the connection's own record of this request, for the answer queue */
    c->span.ds_fd = d->ds_fd;
    c->span.us_fd = io->fd;
    c->span.us_sid = 0;
    c->span.us_tx_beg = io->ts_call;
    c->span.us_tx_end = io->ts;
    smp_tx_flag(&c->span, SMP_F_US_TX_CALL, io->xmit_call);
    c->span.rid_len = 0;
    c->span.rid_hash = 0;
    if (rid && rid->rid_len)
        smp_copy_rid(&c->span, rid->rid_len, rid->rid_hash, rid->rid);
}

/* US, REQUEST -> RESPONSE: the response's first bytes. */
SMP_INLINE void smp_us_read(struct smp_conn *c, struct smp_io *io)
{
    if (c->phase != SMP_PHASE_REQUEST)
        return;
    struct smp_span *d = smp_pending_span(c->ds_key);
    if (d && d->us_fd == io->fd && !d->us_rx_beg && !(d->flags & SMP_F_DS_H2)) {
        d->us_rx_beg = io->ts;
        d->us_rx_arr = io->arr;
    }
    c->phase = SMP_PHASE_RESPONSE;
    if (c->proto != SMP_PROTO_TLS)  /* a TLS burst answers no one stream */
        smp_ans_push(io->tid, io->upid, &c->span, io->ts, io->arr);
}

SMP_INLINE void smp_count_bytes(struct smp_proc_stats *ps, struct smp_io *io)
{
    if (!ps)
        return;
    if (io->is_read)
        __sync_fetch_and_add(&ps->rx_bytes, io->ret);
    else
        __sync_fetch_and_add(&ps->tx_bytes, io->ret);
}

/* Every read or write of a traced process's socket (on the syscalls path: of any file
 * descriptor; only those of known connections are counted there, files and pipes look the
 * same as an unknown socket). */
SMP_INLINE int smp_on_io(struct smp_io *io)
{
    u32 upid = io->upid;
    struct smp_proc_stats *ps = smp_proc.lookup(&upid);
    if (SMP_PATH == SMP_PATH_SOCK || io->mode == SMP_MODE_SELF)
        smp_count_bytes(ps, io);
    if (io->mode == SMP_MODE_SELF)
        return 0;
    u8 cls = io->buf ? smp_classify(io->buf, io->len, &io->status) : CLS_OTHER;
    struct smp_scan *rid = cls == CLS_REQ ? smp_find_rid(io->buf, io->len) : 0;
    u64 key = io->key;
    struct smp_conn *c = smp_conns.lookup(&key);
    if (!c) {
        c = smp_conn_join(io, cls);
        if (!c) {
            if (SMP_PATH == SMP_PATH_SOCK) {
                smp_count_unparsed(ps, io->ret);
            } else {
                u64 sfd = ((u64)io->upid << 32) | (u32)io->fd;
                if (smp_sockfd.lookup(&sfd)) {  /* a socket: its bytes, as on the sock path */
                    smp_count_bytes(ps, io);
                    smp_count_unparsed(ps, io->ret);
                }
            }
            return 0;
        }
        if (SMP_PATH != SMP_PATH_SOCK)
            smp_count_bytes(ps, io);
        if (cls == CLS_RESP)
            return 0;
    } else if (SMP_PATH != SMP_PATH_SOCK) {
        smp_count_bytes(ps, io);
    }
    if (io->is_read) {
        u64 a = smp_arrival_take(c, io->ts);
        if (!io->arr || io->arr > io->ts)  /* else the stamp since its handshake (learn) */
            io->arr = a;
    }
    if (c->proto == SMP_PROTO_H2 || cls == CLS_H2PRI ||
        (c->proto == SMP_PROTO_NONE && cls == CLS_OTHER)) {
        if (!smp_h2_begin(c, io, cls, ps))
            return 0;
    }
    if (cls == CLS_REQ || cls == CLS_RESP)
        c->proto = SMP_PROTO_H1;
    else if (cls == CLS_TLS && c->proto == SMP_PROTO_NONE)
        c->proto = SMP_PROTO_TLS;
    if (c->proto == SMP_PROTO_NONE) {
        smp_conn_unparsed(c, ps, io->fd, io->is_read, io->ret);
        return 0;
    }
    if (c->proto == SMP_PROTO_TLS && c->role == SMP_ROLE_US)
        smp_tls_burst(io);
    if (c->role == SMP_ROLE_DS) {
        if (io->is_read)
            smp_ds_read(c, io, cls, rid, ps);
        else
            smp_ds_write(c, io, cls, ps);
    } else if (io->is_read) {
        smp_us_read(c, io);
    } else {
        smp_us_write(c, io, rid, ps);
    }
    return 0;
}

/* The connection is gone (close, or the socket reached TCP_CLOSE): the answered request it
 * holds is emitted, the entry removed. */
SMP_INLINE void smp_conn_close(u64 key, int remove)
{
    struct smp_conn *c = smp_conns.lookup(&key);
    if (!c)
        return;
    if (c->role == SMP_ROLE_DS && c->phase == SMP_PHASE_RESPONSE) {
        smp_emit(c);
        c->phase = SMP_PHASE_IDLE;
    } else if (c->role == SMP_ROLE_DS && c->phase == SMP_PHASE_REQUEST) {
        /* closed before any response: no span, counted */
        u32 upid = c->upid;
        struct smp_proc_stats *ps = smp_proc.lookup(&upid);
        if (ps)
            __sync_fetch_and_add(&ps->aborted, 1);
        c->phase = SMP_PHASE_IDLE;
    }
    if (remove) {
        smp_emit_unparsed(c);
        if (c->proto == SMP_PROTO_H2) {
            smp_hp_forget(key, smp_h2_conns.lookup(&key));
            smp_h2_conns.delete(&key);
        }
        if (!smp_conns.delete(&key))
            smp_gate_add(key, -1);
    }
}

SMP_INLINE void smp_conn_role(u64 key, u8 role, u32 tgid)
{
    struct smp_target *t = smp_target_of(tgid);
    if (t && t->mode == SMP_MODE_PROXY)
        smp_conn_new(key, role, t->upid);
}

#if SMP_PATH == SMP_PATH_SOCK
/* -- the sock path -------------------------------------------------------------------------
 * sock_recv_length / sock_send_length (struct sock *sk, int ret, int flags) fire when a
 * socket's recvmsg/sendmsg returns, inside the syscall: the task's user registers hold the
 * syscall number and its arguments (x86-64: orig_ax; di = fd, si = buffer). */
#if !defined(__x86_64__) && !defined(__TARGET_ARCH_x86)
#error "the sock path decodes x86-64 syscall registers only; build with -DSMP_PATH=SMP_PATH_SYSCALLS"
#endif
#include <asm/ptrace.h>   /* struct pt_regs: the user register frame, ptrace ABI */

SMP_INLINE int smp_sock_io(void *ctx, u64 sk, s32 ret, u32 flags, u8 is_read)
{
    /* before the PID filter: an event-loop proxy's every read is followed by one that
     * returns EAGAIN */
    if (ret <= 0 || (is_read && (flags & MSG_PEEK)))
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    struct smp_target *t = smp_target_of(id >> 32);
    if (!t)
        return 0;
    struct smp_io io = {};
    io.upid = t->upid;
    io.mode = t->mode;
    struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
    u64 nr = regs->orig_ax;
    u8 kind;
    switch (nr) {
    case 0:   /* read */
    case 1:   /* write */
    case 44:  /* sendto */
    case 45:  /* recvfrom */
        kind = IO_PTR;
        break;
    case 19:  /* readv */
    case 20:  /* writev */
        kind = IO_IOV;
        break;
    case 46:  /* sendmsg */
    case 47:  /* recvmsg */
    case 299: /* recvmmsg: one event per message; the first message's buffer is looked at */
    case 307: /* sendmmsg */
        kind = IO_MSG;
        break;
    default: {  /* sendfile, splice, io_uring ...: counted, never parsed */
        u32 upid = t->upid;
        struct smp_proc_stats *ps = smp_proc.lookup(&upid);
        if (ps) {
            __sync_fetch_and_add(&ps->unattributed, 1);
            __sync_fetch_and_add(is_read ? &ps->rx_bytes : &ps->tx_bytes, ret);
            __sync_fetch_and_add(&ps->unparsed_bytes, ret);
        }
        return 0;
    }
    }
    io.key = sk;
    io.ts = bpf_ktime_get_ns();
    io.ts_call = io.ts;
    if (is_read)
        smp_xmit_forget((u32)id);
    else
        io.ts = smp_xmit_take((u32)id, io.ts - SMP_XMIT_WINDOW_NS, io.ts, io.ts,
                              &io.xmit_call);
    io.ts_call = io.ts;  /* no entry instant on this path: a write's start is its stamp (never
                          * after it: us_tx_beg <= us_tx_end) */
    io.ret = ret;
    io.tid = (u32)id;
    io.fd = (s32)regs->di;
    io.is_read = is_read;
    io.buf = smp_first_buf(regs->si, kind, ret, &io.len);
    io.ptr = regs->si;
    io.kind = kind;
    io.ctx = ctx;
    return smp_on_io(&io);
}

RAW_TRACEPOINT_PROBE(sock_recv_length)
{
    return smp_sock_io(ctx, ctx->args[0], (s32)ctx->args[1], (u32)ctx->args[2], 1);
}

RAW_TRACEPOINT_PROBE(sock_send_length)
{
    return smp_sock_io(ctx, ctx->args[0], (s32)ctx->args[1], (u32)ctx->args[2], 0);
}

/* (const struct sock *sk, int oldstate, int newstate): a traced process's connect() puts
 * its socket in SYN_SENT (in its own context): an upstream. TCP_CLOSE ends any connection
 * (it runs in softirq too: keyed by sk, no process needed). */
RAW_TRACEPOINT_PROBE(inet_sock_set_state)
{
    int newstate = (int)ctx->args[2];
    u64 sk = ctx->args[0];
    if (newstate == TCP_SYN_SENT) {
        smp_conn_role(sk, SMP_ROLE_US, bpf_get_current_pid_tgid() >> 32);
    } else if (newstate == TCP_ESTABLISHED && (int)ctx->args[1] == TCP_SYN_RECV) {
        u32 upid = smp_listener_upid(sk);  /* an accepted socket (listeners, above) */
        if (upid)
            smp_conn_make(sk, SMP_ROLE_DS, upid, 1);
    } else if (newstate == TCP_CLOSE) {
        smp_conn_close(sk, 1);
    } else if (newstate == TCP_FIN_WAIT1) {  /* we closed: no more response bytes */
        smp_conn_close(sk, 0);
    }
    return 0;
}

#else
/* -- the syscalls path ---------------------------------------------------------------------
 * Entry saves the arguments, exit (which knows the byte count) runs the state machine. */

SMP_INLINE int smp_enter(u32 fd, u64 ptr, u8 io, u8 skip)
{
    u64 id = bpf_get_current_pid_tgid();
    struct smp_target *t = smp_target_of(id >> 32);
    if (!t)
        return 0;
    struct smp_args a = {};
    a.ts = bpf_ktime_get_ns();
    a.ptr = ptr;
    a.fd = fd;
    a.io = io;
    a.skip = skip;
    a.upid = t->upid;
    a.mode = t->mode;
    smp_args_map.update(&id, &a);
    return 0;
}

SMP_INLINE int smp_exit(void *ctx, s64 ret, u8 is_read)
{
    u64 id = bpf_get_current_pid_tgid();
    struct smp_args *a = smp_args_map.lookup(&id);
    if (!a)
        return 0;
    struct smp_args args = *a;
    smp_args_map.delete(&id);
    if (ret <= 0 || args.skip)
        return 0;
    struct smp_io io = {};
    io.ts = bpf_ktime_get_ns();
    io.ts_call = args.ts;
    /* A write's time is when the process hands the bytes to the kernel (its entry), as in
     * Envoy's own US_TX_END/DS_TX_END; a read's is when the bytes reached the process. */
    if (!is_read)
        io.ts = smp_xmit_take((u32)id, args.ts, io.ts, SMP_WRITE_TS_AT_EXIT ? io.ts : args.ts,
                              &io.xmit_call);
    else
        smp_xmit_forget((u32)id);
    io.key = (id & 0xffffffff00000000ULL) | args.fd;
    io.tid = (u32)id;
    io.upid = args.upid;
    io.mode = args.mode;
    io.fd = args.fd;
    io.is_read = is_read;
    io.buf = smp_first_buf(args.ptr, args.io, ret, &io.len);
    io.ret = args.io == IO_MMSG ? io.len : (u32)ret;
    io.ptr = args.ptr;
    io.kind = args.io;
    io.ctx = ctx;
    if (is_read)
        io.arr = smp_arrival_learn(args.sk, io.key, ((u64)args.upid << 32) | (u32)args.fd);
    return smp_on_io(&io);
}

/* Every sys_exit_* tracepoint starts with the same two fields (its format file): the exits
 * of the five reads run one program and those of the five writes another, reached by a tail
 * call from a stub per tracepoint. The verifier then checks each body once, not five times
 * (940,000 instructions processed for a read's body on 6.18 when this was done, 532,000 for
 * a write's; 524,000 and 535,000 since 2026-12-08): the syscalls path loaded in 8.6 s
 * instead of 20.5 s. */
struct smp_sys_exit {
    u64 common;             /* common_type, common_flags, common_preempt_count, common_pid */
    s32 nr;                 /* __syscall_nr */
    s32 pad;
    s64 ret;
};

BPF_PROG_ARRAY(smp_exit_progs, 2);  /* [0]: smp_exit_read, [1]: smp_exit_write (user space) */

int smp_exit_read(struct smp_sys_exit *args) { return smp_exit(args, args->ret, 1); }
int smp_exit_write(struct smp_sys_exit *args) { return smp_exit(args, args->ret, 0); }

/* The exit stubs, on to the body (a tail call that fails, before user space fills the array,
 * leaves the saved arguments: the thread's next entry overwrites them). Written out: BCC
 * makes a tracepoint's argument struct from the function's name, not through a macro. */
/* reads */
TRACEPOINT_PROBE(syscalls, sys_enter_read) { return smp_enter(args->fd, (u64)args->buf, IO_PTR, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_read) { smp_exit_progs.call(args, 0); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_readv) { return smp_enter(args->fd, (u64)args->vec, IO_IOV, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_readv) { smp_exit_progs.call(args, 0); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_recvfrom)
{
    return smp_enter(args->fd, (u64)args->ubuf, IO_PTR, (args->flags & MSG_PEEK) != 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_recvfrom) { smp_exit_progs.call(args, 0); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_recvmsg)
{
    return smp_enter(args->fd, (u64)args->msg, IO_MSG, (args->flags & MSG_PEEK) != 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_recvmsg) { smp_exit_progs.call(args, 0); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_recvmmsg)
{
    return smp_enter(args->fd, (u64)args->mmsg, IO_MMSG, (args->flags & MSG_PEEK) != 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_recvmmsg) { smp_exit_progs.call(args, 0); return 0; }

/* writes */
TRACEPOINT_PROBE(syscalls, sys_enter_write) { return smp_enter(args->fd, (u64)args->buf, IO_PTR, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_write) { smp_exit_progs.call(args, 1); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_writev) { return smp_enter(args->fd, (u64)args->vec, IO_IOV, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_writev) { smp_exit_progs.call(args, 1); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_sendto) { return smp_enter(args->fd, (u64)args->buff, IO_PTR, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_sendto) { smp_exit_progs.call(args, 1); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg) { return smp_enter(args->fd, (u64)args->msg, IO_MSG, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_sendmsg) { smp_exit_progs.call(args, 1); return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_sendmmsg) { return smp_enter(args->fd, (u64)args->mmsg, IO_MMSG, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_sendmmsg) { smp_exit_progs.call(args, 1); return 0; }

/* connection roles: accepted sockets are downstream, connected ones upstream; both are
 * sockets of the process whatever its mode (smp_sockfd) */
SMP_INLINE int smp_fd_role(s64 fd, u8 role)
{
    u64 id = bpf_get_current_pid_tgid();
    if (fd < 0)
        return 0;
    struct smp_target *t = smp_target_of(id >> 32);
    if (!t)
        return 0;
    u64 sfd = ((u64)t->upid << 32) | (u32)fd;
    u8 kind = role == SMP_ROLE_DS ? SMP_SOCKFD_ACCEPTED : SMP_SOCKFD_SOCKET;
    smp_sockfd.update(&sfd, &kind);
    if (t->mode != SMP_MODE_PROXY)
        return 0;
    u64 key = (id & 0xffffffff00000000ULL) | (u32)fd;
    smp_conn_new(key, role, t->upid);
#if SMP_ARRIVAL == SMP_ARRIVAL_TCP_PROBE
    if (role == SMP_ROLE_US) {
        u32 tid = (u32)id;
        smp_connecting.update(&tid, &key);
    }
#endif
    return 0;
}
TRACEPOINT_PROBE(syscalls, sys_exit_accept4) { return smp_fd_role(args->ret, SMP_ROLE_DS); }
TRACEPOINT_PROBE(syscalls, sys_exit_accept) { return smp_fd_role(args->ret, SMP_ROLE_DS); }
TRACEPOINT_PROBE(syscalls, sys_enter_connect) { return smp_fd_role(args->fd, SMP_ROLE_US); }
TRACEPOINT_PROBE(syscalls, sys_enter_close)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    if (!smp_maybe_traced(tgid))
        return 0;
    struct smp_target *t = smp_filter_pids.lookup(&tgid);
    if (!t)
        return 0;
    u64 sfd = ((u64)t->upid << 32) | (u32)args->fd;
    smp_sockfd.delete(&sfd);
    smp_conn_close((id & 0xffffffff00000000ULL) | (u32)args->fd, 1);
    return 0;
}
#endif

/* -- arrival programs (see "arrival stamps" above) ----------------------------------------- */
#if SMP_ARRIVAL == SMP_ARRIVAL_SK_DATA_READY
/* (const struct sock *sk): data (or a FIN) was queued on sk; softirq or the sender's
 * context, so no PID filter: only sockets in smp_conns are stamped. */
RAW_TRACEPOINT_PROBE(sk_data_ready)
{
    u32 slot = smp_gate_slot(ctx->args[0]);
    u32 *g = smp_gate.lookup(&slot);
    if (!g || !*g)
        return 0;
    smp_arrival_mark(ctx->args[0]);
    return 0;
}
#elif SMP_ARRIVAL == SMP_ARRIVAL_TCP_PROBE
/* Every TCP segment received on an established socket (tcp_rcv_established): those that
 * carry data stamp their socket. */
TRACEPOINT_PROBE(tcp, tcp_probe)
{
    if (!args->data_len)
        return 0;
    u64 sk = (u64)args->skaddr;
#if SMP_PATH == SMP_PATH_SYSCALLS
    u64 *key = smp_sk_key.lookup(&sk);
    if (!key)
        return 0;
    if (*key != sk) {
        smp_arrival_mark(*key);
        return 0;
    }
    u64 *early = smp_early_arr.lookup(&sk);  /* accepted, not read yet */
    if (early && !*early)
        *early = bpf_ktime_get_ns();
#else
    smp_arrival_mark(sk);
#endif
    return 0;
}
#if SMP_PATH == SMP_PATH_SYSCALLS
/* (const struct sock *sk, int oldstate, int newstate): a socket completed its handshake on
 * a traced listener (softirq, before its first bytes are queued): it is stamped from then.
 * A closed socket's mapping goes: its address may be a new socket's soon (a stale mapping
 * would stamp another connection of the same key, and hide the new socket's listener). */
RAW_TRACEPOINT_PROBE(inet_sock_set_state)
{
    u64 sk = ctx->args[0];
    if ((int)ctx->args[2] == TCP_CLOSE) {
        smp_sk_key.delete(&sk);
        smp_early_arr.delete(&sk);
        return 0;
    }
    if ((int)ctx->args[2] == TCP_SYN_SENT) {  /* in the connecting thread's connect() */
        u32 tid = (u32)bpf_get_current_pid_tgid();
        u64 *key = smp_connecting.lookup(&tid);
        if (key) {
            smp_sk_key.update(&sk, key);
            smp_connecting.delete(&tid);
        }
        return 0;
    }
    if ((int)ctx->args[2] != TCP_ESTABLISHED || (int)ctx->args[1] != TCP_SYN_RECV)
        return 0;
    if (!smp_listener_upid(sk))
        return 0;
    u64 zero = 0;
    smp_early_arr.update(&sk, &zero);
    smp_sk_key.update(&sk, &sk);
    return 0;
}

TRACEPOINT_PROBE(tcp, tcp_rcv_space_adjust)
{
    u64 id = bpf_get_current_pid_tgid();
    struct smp_args *a = smp_args_map.lookup(&id);  /* a traced thread's read in progress */
    if (a)
        a->sk = (u64)args->skaddr;
    return 0;
}
#endif
#endif

/* -- write stamp program (see "write stamps" above) ---------------------------------------- */
#if SMP_XMIT_STAMPS
/* A packet queued to a device; in the sender's context when a traced thread's write sends it
 * at once. Only packets longer than any bare TCP header (Ethernet 14 + IP 20 + TCP 60): an
 * ACK a timer sends while the thread runs is not its write. The first since the thread's last
 * socket call. A raw tracepoint where user space found skb->len's offset on this kernel in
 * its BTF (SMP_SKB_LEN_OFF; struct sk_buff is no stable ABI): the classic tracepoint's
 * format gives the length, but the kernel fills its record (the device's name too) for every
 * packet of the node before the program runs. */
#ifdef SMP_SKB_LEN_OFF
SMP_INLINE u32 smp_xmit_len(struct bpf_raw_tracepoint_args *ctx)
{
    u32 len = 0;
    bpf_probe_read_kernel(&len, sizeof(len), (void *)(ctx->args[0] + SMP_SKB_LEN_OFF));
    return len;
}
#define SMP_XMIT_PACKET_LEN smp_xmit_len(ctx)
RAW_TRACEPOINT_PROBE(net_dev_queue)
#else
#define SMP_XMIT_PACKET_LEN args->len
TRACEPOINT_PROBE(net, net_dev_queue)
#endif
{
    /* the node's other processes' packets first: the gate is an array load, the length a
     * helper call (raw tracepoint); a target still being learned is let through */
    u64 id = bpf_get_current_pid_tgid();
    if (!smp_maybe_traced(id >> 32))
        return 0;
    if (SMP_XMIT_PACKET_LEN <= SMP_XMIT_MIN_LEN)
        return 0;
    int zero = 0;
    struct smp_xmit_cpu *x = smp_xmit.lookup(&zero);
    if (!x)
        return 0;
    u32 tid = (u32)id;
#pragma unroll
    for (int i = 0; i < SMP_XMIT_WAYS; i++) {
        if (x->tid[i] != tid)
            continue;
        if (!x->ts[i])  /* else not the first since the thread's last socket call */
            x->ts[i] = bpf_ktime_get_ns();
        return 0;
    }
    u32 k = x->next & (SMP_XMIT_WAYS - 1);
    x->next = k + 1;
    x->tid[k] = tid;
    x->ts[k] = bpf_ktime_get_ns();
    return 0;
}
#endif
