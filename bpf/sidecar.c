/* sidecar: per-request legs through a proxy (and its app).
 *
 * Syscall tracepoints only: stable ABIs, no kprobes, no fentry. Spans are
 * assembled here, one ring-buffer record per request (struct smp_span, sidecar.h), so user
 * space does no per-syscall work. See docs/probes/sidecar.md.
 */
#include "smp_common.h"
#include "sidecar.h"

#ifndef SMP_MAX_CONNS
#define SMP_MAX_CONNS 16384
#endif
#ifndef SMP_MAX_THREADS
#define SMP_MAX_THREADS 8192
#endif
/* User space takes the records every 100 ms; waking it for each record (an irq_work and a
 * context switch per request) would cost more than the record. */
#ifndef SMP_RB_SUBMIT_FLAGS
#define SMP_RB_SUBMIT_FLAGS BPF_RB_NO_WAKEUP
#endif
#ifndef SMP_WRITE_TS_AT_EXIT
#define SMP_WRITE_TS_AT_EXIT 0
#endif
#define SMP_SCAN_LEN 512           /* bytes of a request head searched for x-request-id */
#define SMP_SCAN_MASK (SMP_SCAN_LEN - 1)
/* Clamp an index so the verifier sees the bound (clang would fold a plain mask away). */
#define SMP_CLAMP(x) asm volatile("%0 &= 511" : "+r"(x))

#define MODE_PROXY 1
#define MODE_APP 2

#define ROLE_DS 1                  /* we serve this connection (accepted) */
#define ROLE_US 2                  /* we are the client (connected) */

#define CLS_OTHER 0
#define CLS_REQ 1                  /* starts with an HTTP/1.x method */
#define CLS_RESP 2                 /* starts with "HTTP/1." */
#define CLS_TLS 3                  /* a TLS record header */
#define CLS_H2PRI 4                /* the HTTP/2 client preface "PRI * HTTP/2.0..." */

/* what a connection's bytes were recognised as (struct smp_conn.proto) */
#define PROTO_NONE 0               /* not (yet) recognised: its bytes count as unparsed */
#define PROTO_H1 1
#define PROTO_H2 2
#define PROTO_TLS 3

#define IO_PTR 0
#define IO_IOV 1
#define IO_MSG 2
#define IO_MMSG 3

#define MSG_PEEK 2

struct smp_conn {
    u8 role;
    u8 phase;   /* DS: 0 idle, 1 request, 2 responding. US: 0 idle, 1 sent, 2 answered */
    u8 tls;
    u8 proto;   /* PROTO_* */
    u8 pad[4];
    u64 ds_key; /* US: the request this one carries (a connection key or an HTTP/2 handle) */
    struct smp_span span;  /* DS: the request in progress */
    u64 unparsed_rx;       /* bytes no protocol explained (see smp_unparsed) */
    u64 unparsed_tx;
};

struct smp_args {
    u64 ts;
    u64 ptr;
    u32 fd;
    u8 io;
    u8 skip;
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

#include "sidecar_h2.h"

BPF_HASH(smp_filter_pids, u32, u8, SMP_MAX_PIDS);
BPF_PERCPU_ARRAY(smp_drops, u64, 1);
BPF_RINGBUF_OUTPUT(smp_spans, SMP_RINGBUF_PAGES);
BPF_HASH(smp_proc, u32, struct smp_proc_stats, SMP_MAX_PIDS);
BPF_TABLE("lru_hash", u64, struct smp_conn, smp_conns, SMP_MAX_CONNS);
BPF_TABLE("lru_hash", u64, u64, smp_rid_index, SMP_MAX_CONNS);
#ifndef SMP_FIFO
#define SMP_FIFO 32              /* requests a worker thread may have read but not yet sent on */
#endif
struct smp_fifo {
    u64 keys[SMP_FIFO];
    u32 head;
    u32 tail;
    u32 tgid;   /* so user space can drop a detached process's threads */
    u32 pad;
};
BPF_TABLE("lru_hash", u32, struct smp_fifo, smp_thread_fifo, SMP_MAX_THREADS);
BPF_PERCPU_ARRAY(smp_fifo_init, struct smp_fifo, 1);
BPF_HASH(smp_args_map, u64, struct smp_args, SMP_MAX_THREADS);
BPF_PERCPU_ARRAY(smp_scratch, struct smp_scan, 1);
BPF_PERCPU_ARRAY(smp_conn_init, struct smp_conn, 1);

static inline __attribute__((always_inline)) u8 smp_mode(u32 tgid)
{
    u8 *m = smp_filter_pids.lookup(&tgid);
    return m ? *m : 0;
}

static inline __attribute__((always_inline)) int smp_enter(u32 fd, u64 ptr, u8 io, u8 skip)
{
    u64 id = bpf_get_current_pid_tgid();
    if (!smp_mode(id >> 32))
        return 0;
    struct smp_args a = {};
    a.ts = bpf_ktime_get_ns();
    a.ptr = ptr;
    a.fd = fd;
    a.io = io;
    a.skip = skip;
    smp_args_map.update(&id, &a);
    return 0;
}

/* The first buffer of the call and how many of its bytes hold data. */
static inline __attribute__((always_inline)) u64 smp_first_buf(struct smp_args *a, s64 ret, u32 *len)
{
    u64 base = a->ptr;
    u64 blen = (u64)ret;
    if (a->io == IO_MMSG) {
        /* ret counts messages: the bytes are the first one's msg_len (struct mmsghdr is a
         * struct user_msghdr, 56 bytes on 64-bit, then unsigned int msg_len) */
        u32 first = 0;
        if (bpf_probe_read_user(&first, sizeof(first), (void *)(a->ptr + 56)))
            return 0;
        blen = first;
    }
    if (a->io == IO_MSG || a->io == IO_MMSG) {
        struct smp_msghdr m = {};
        if (bpf_probe_read_user(&m, sizeof(m), (void *)a->ptr))
            return 0;
        base = m.iov;
    }
    if (a->io != IO_PTR) {
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

static inline __attribute__((always_inline)) u8 smp_classify(u64 buf, u32 len)
{
    char p[8] = {};
    if (len < 3 || bpf_probe_read_user(p, sizeof(p), (void *)buf))
        return CLS_OTHER;
    /* a TLS record header (BoringSSL reads the 5-byte header on its own) */
    if ((p[0] >= 0x14 && p[0] <= 0x17) && p[1] == 0x03 && p[2] <= 0x04)
        return CLS_TLS;
    if (len < 8)
        return CLS_OTHER;
    if (p[0] == 'P' && p[1] == 'R' && p[2] == 'I' && p[3] == ' ' && p[4] == '*' && p[5] == ' ')
        return CLS_H2PRI;
    if (p[0] == 'H' && p[1] == 'T' && p[2] == 'T' && p[3] == 'P' && p[4] == '/' && p[5] == '1')
        return CLS_RESP;
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
static inline __attribute__((always_inline)) struct smp_scan *smp_find_rid(u64 buf, u32 len)
{
    int zero = 0;
    struct smp_scan *s = smp_scratch.lookup(&zero);
    if (!s)
        return 0;
    s->rid_len = 0;
    s->rid_hash = 0;
    s->at = 0;
    u32 n = len < SMP_SCAN_LEN ? len : SMP_SCAN_LEN;
    if (bpf_probe_read_user(s->buf, SMP_SCAN_LEN, (void *)buf)) {
        if (bpf_probe_read_user(s->buf, n & SMP_SCAN_MASK, (void *)buf))
            return s;
    }
    s->n = n;
    const u64 want1 = 0x7365757165722d78ULL;   /* "x-reques" */
    const u64 want2 = 0x3a64692d74ULL;         /* "t-id:" */
    for (u32 i = 0; i < SMP_SCAN_LEN - 16; i++) {
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
            break;
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
        for (k = 0; k < SMP_RID_LEN; k++) {
            u32 j = at + k;
            if (j >= n)
                break;
            SMP_CLAMP(j);
            char c = s->buf[j];
            if (c == '\r' || c == '\n' || c == ' ')
                break;
            s->rid[k] = c;
            h = (h ^ (u8)c) * 0x100000001b3ULL;
        }
        s->rid_len = k;
        s->rid_hash = k ? h : 0;
    }
    /* The request head (Authorization, cookies) must not stay readable in the map. */
    __builtin_memset(s->buf, 0, sizeof(s->buf));
    return s;
}

static inline __attribute__((always_inline)) int smp_emit_span(struct smp_span *s)
{
    struct smp_span *e = smp_spans.ringbuf_reserve(sizeof(struct smp_span));
    if (!e) {
        int zero = 0;
        u64 *d = smp_drops.lookup(&zero);
        if (d)
            (*d)++;
        return -1;
    }
    __builtin_memcpy(e, s, sizeof(struct smp_span));
    smp_spans.ringbuf_submit(e, SMP_RB_SUBMIT_FLAGS);
    return 0;
}

static inline __attribute__((always_inline)) void smp_emit(struct smp_conn *c, u32 tgid)
{
    if (smp_emit_span(&c->span))
        return;
    struct smp_proc_stats *ps = smp_proc.lookup(&tgid);
    if (ps)
        __sync_fetch_and_add(&ps->spans, 1);
}

static inline __attribute__((always_inline)) struct smp_conn *smp_conn_new(u64 key, u8 role)
{
    int zero = 0;
    struct smp_conn *init = smp_conn_init.lookup(&zero);
    if (!init)
        return 0;
    init->role = role;
    smp_conns.update(&key, init);
    init->role = 0;
    return smp_conns.lookup(&key);
}

/* ---------------------------------------------------------------------------------------
 * Requests in progress, by handle: an HTTP/1.1 request is its downstream connection's key
 * (tgid << 32 | fd); an HTTP/2 stream is SMP_H2_HANDLE | fd << 32 | stream id (the process
 * is the current one's). A worker thread's FIFO holds both kinds in the order it read them.
 */
#define SMP_H2_HANDLE 0x8000000000000000ULL

struct smp_h2_skey {
    u64 conn;   /* tgid << 32 | fd */
    u32 sid;
    u32 gen;    /* the connection's generation (struct smp_h2_conn) */
};
struct smp_h2_stream {
    struct smp_span span;   /* a downstream stream: its request in progress */
    u64 ds_handle;          /* an upstream stream: the request it carries */
};
#ifndef SMP_MAX_STREAMS
#define SMP_MAX_STREAMS 16384
#endif
BPF_TABLE("lru_hash", struct smp_h2_skey, struct smp_h2_stream, smp_h2_streams, SMP_MAX_STREAMS);
BPF_PERCPU_ARRAY(smp_h2_stream_init, struct smp_h2_stream, 1);
BPF_TABLE("lru_hash", u64, struct smp_h2_conn, smp_h2_conns, SMP_MAX_CONNS);
BPF_PERCPU_ARRAY(smp_h2_scratch, struct smp_h2_call, 1);
BPF_PROG_ARRAY(smp_h2_progs, 1);   /* [0]: smp_h2_step, set by user space */

/* The span of a request still waiting for its response (HTTP/1.1: phase 1; HTTP/2: a
 * stream not yet ended), else 0. */
static inline __attribute__((always_inline)) struct smp_span *smp_pending_span(u64 handle, u32 tgid)
{
    if (handle & SMP_H2_HANDLE) {
        struct smp_h2_skey k = {};
        k.conn = ((u64)tgid << 32) | ((handle >> 32) & 0x7fffffff);
        k.sid = (u32)handle;
        struct smp_h2_conn *hc = smp_h2_conns.lookup(&k.conn);
        if (!hc)
            return 0;
        k.gen = hc->gen;
        struct smp_h2_stream *st = smp_h2_streams.lookup(&k);
        return st ? &st->span : 0;
    }
    struct smp_conn *c = smp_conns.lookup(&handle);
    return c && c->phase == 1 ? &c->span : 0;
}

static inline __attribute__((always_inline)) void smp_fifo_push(u32 tid, u32 tgid, u64 handle)
{
    struct smp_fifo *q = smp_thread_fifo.lookup(&tid);
    if (!q) {
        int zero = 0;
        struct smp_fifo *empty = smp_fifo_init.lookup(&zero);
        if (!empty)
            return;
        empty->tgid = tgid;
        smp_thread_fifo.update(&tid, empty);
        q = smp_thread_fifo.lookup(&tid);
    }
    if (!q)
        return;
    u32 t = q->tail;
    if (t - q->head >= SMP_FIFO) {
        /* full: the oldest goes. If it is still waiting and has no id to be matched by, its
         * span is lost: count it, never silently */
        u64 old = q->keys[q->head & (SMP_FIFO - 1)];
        struct smp_span *o = smp_pending_span(old, tgid);
        if (o && !o->us_tx_end && !o->rid_hash) {
            int zero = 0;
            u64 *d = smp_drops.lookup(&zero);
            if (d)
                (*d)++;
        }
        q->head++;
    }
    q->keys[t & (SMP_FIFO - 1)] = handle;
    q->tail = t + 1;
}

/* The oldest request this thread read and has not sent on yet (its handle in *handle). */
static inline __attribute__((always_inline)) struct smp_span *smp_fifo_pop(u32 tid, u32 tgid, u64 *handle)
{
    struct smp_fifo *q = smp_thread_fifo.lookup(&tid);
    if (!q)
        return 0;
    for (int i = 0; i < SMP_FIFO; i++) {
        if (q->head == q->tail)
            break;
        u64 k = q->keys[q->head & (SMP_FIFO - 1)];
        q->head++;
        struct smp_span *cand = smp_pending_span(k, tgid);
        if (cand && !cand->us_tx_end) {
            *handle = k;
            return cand;
        }
    }
    return 0;
}

/* Bytes on a traced connection that no protocol explained: counted per connection (a
 * SMP_SPAN_UNPARSED record when it closes) and per process, never silently dropped. */
static inline __attribute__((always_inline)) void smp_unparsed(struct smp_conn *c, struct smp_proc_stats *ps,
                                                               int is_read, u64 n)
{
    if (!n)
        return;
    if (ps && !c->unparsed_rx && !c->unparsed_tx)
        __sync_fetch_and_add(&ps->unparsed_conns, 1);
    if (is_read) {
        c->unparsed_rx += n;
        if (ps)
            __sync_fetch_and_add(&ps->unparsed_rx, n);
    } else {
        c->unparsed_tx += n;
        if (ps)
            __sync_fetch_and_add(&ps->unparsed_tx, n);
    }
}

static inline __attribute__((always_inline)) void smp_emit_unparsed(struct smp_conn *c, u32 tgid, s32 fd)
{
    if (!c->unparsed_rx && !c->unparsed_tx)
        return;
    int zero = 0;
    struct smp_conn *tmp = smp_conn_init.lookup(&zero);
    if (!tmp)
        return;
    struct smp_span *s = &tmp->span;
    __builtin_memset(s, 0, sizeof(*s));
    u64 id = bpf_get_current_pid_tgid();
    s->kind = SMP_SPAN_UNPARSED;
    s->tgid = tgid;
    s->tid = (u32)id;
    s->ds_rx_beg = bpf_ktime_get_ns();
    s->ds_fd = c->role == ROLE_US ? -1 : fd;
    s->us_fd = c->role == ROLE_US ? fd : -1;
    s->req_bytes = c->unparsed_rx > 0xffffffff ? 0xffffffff : (u32)c->unparsed_rx;
    s->resp_bytes = c->unparsed_tx > 0xffffffff ? 0xffffffff : (u32)c->unparsed_tx;
    smp_emit_span(s);
    __builtin_memset(s, 0, sizeof(*s));
}

/* ---------------------------------------------------------------------------------------
 * Upstream answers, in the order a worker thread reads them. Envoy does not write a batch of
 * requests upstream in the order it read them (measured: within 8 streams of one HTTP/2 read,
 * thread order was right for 1 in 4), but it encodes each downstream response as it reads
 * the upstream one, so the n-th upstream response a thread starts reading feeds the n-th
 * downstream response it starts writing. Each entry carries the upstream leg's instants (and
 * the request id the upstream request carried), copied so that the connection can carry its
 * next request before the downstream write. Entries older than SMP_ANS_MAX_AGE_NS (an
 * answer whose downstream went away) are skipped and counted.
 */
#ifndef SMP_ANS_DEPTH
#define SMP_ANS_DEPTH 64
#endif
#ifndef SMP_ANS_SCAN
#define SMP_ANS_SCAN 32           /* answers searched for the downstream connection's */
#endif
#ifndef SMP_ANS_MAX_AGE_NS
#define SMP_ANS_MAX_AGE_NS 20000000ULL
#endif

struct smp_ans_key {
    u32 tid;
    u32 seq;
};
struct smp_ans {
    u64 us_tx_beg;
    u64 us_tx_end;
    u64 us_rx_beg;
    u64 rid_hash;
    s32 us_fd;
    u32 us_sid;
    s32 ds_fd;    /* the downstream connection thread order gave the request (a hint) */
    u8 rid_len;
    u8 pad[3];
    char rid[SMP_RID_LEN];
};
struct smp_ans_q {
    u32 head;
    u32 tail;
    u32 tgid;  /* so user space can drop a detached process's threads */
    u32 pad;
};
BPF_TABLE("lru_hash", u32, struct smp_ans_q, smp_ans_queue, SMP_MAX_THREADS);
BPF_TABLE("lru_hash", struct smp_ans_key, struct smp_ans, smp_ans_entries, SMP_MAX_STREAMS);
BPF_PERCPU_ARRAY(smp_ans_init, struct smp_ans, 1);
BPF_PERCPU_ARRAY(smp_ans_out, struct smp_ans, 1);

/* An upstream response starts: queue the upstream leg held in s (a US connection's or US
 * stream's own span) for the thread's next downstream response. */
static inline __attribute__((always_inline)) void smp_ans_push(u32 tid, u32 tgid, struct smp_span *s, u64 ts)
{
    struct smp_ans_q *q = smp_ans_queue.lookup(&tid);
    if (!q) {
        struct smp_ans_q fresh = {};
        fresh.tgid = tgid;
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
    a->us_fd = s->us_fd;
    a->us_sid = s->us_sid;
    a->ds_fd = s->ds_fd;
    a->rid_hash = s->rid_hash;
    a->rid_len = s->rid_len;
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

/* A downstream response starts at now on connection ds_fd: the thread's oldest upstream
 * answer whose request thread order gave to that connection, else its oldest answer (in a
 * per-CPU buffer), or 0. Envoy writes each downstream connection's responses in the order it
 * read their upstream answers, but flushes connections one after another: answers for two
 * downstream connections interleave in the queue while their writes do not. */
static inline __attribute__((always_inline)) struct smp_ans *smp_ans_pop(u32 tid, u64 now, s32 ds_fd,
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
    u32 pick = tail, first = tail;
    for (u32 i = 0; i < SMP_ANS_SCAN; i++) {
        u32 h = head + i;
        if (h == tail)
            break;
        struct smp_ans_key k = {tid, h};
        struct smp_ans *a = smp_ans_entries.lookup(&k);
        if (!a) {
            if (h == q->head)
                q->head = h + 1;  /* a hole left by an earlier pick */
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

/* The upstream leg of an answer, onto a downstream span. */
static inline __attribute__((always_inline)) void smp_ans_apply(struct smp_span *d, struct smp_ans *a)
{
    d->us_tx_beg = a->us_tx_beg;
    d->us_tx_end = a->us_tx_end;
    d->us_rx_beg = a->us_rx_beg;
    d->us_fd = a->us_fd;
    d->us_sid = a->us_sid;
    d->flags = (d->flags & ~(SMP_F_MATCH_THREAD | SMP_F_US_H2)) | SMP_F_MATCH_RESP |
               (a->us_sid ? SMP_F_US_H2 : 0);
    if (!d->rid_len && a->rid_len) {
        d->rid_len = a->rid_len;
        d->rid_hash = a->rid_hash;
        __builtin_memcpy(d->rid, a->rid, SMP_RID_LEN);
    }
}

/* ---------------------------------------------------------------------------------------
 * HTTP/2 streams. The frame walk (smp_h2_step) calls smp_h2_frame for each frame header;
 * each downstream stream becomes a span with the same legs as HTTP/1.1:
 *   downstream HEADERS read      -> ds_rx_beg; pushed on the thread's request FIFO
 *   upstream HEADERS write       -> the upstream stream's us_tx_beg, us_tx_end (and a FIFO pop,
 *                                   which keeps the FIFO in step for HTTP/1.1 neighbours)
 *   upstream DATA write          -> us_tx_end (the last write of the request)
 *   upstream frame read (first)  -> us_rx_beg: the answer is queued (smp_ans_push)
 *   downstream response starts   -> the thread's oldest queued answer: the upstream leg
 *   downstream DATA write        -> ds_tx_data (the first: a gRPC reply's first message)
 *   downstream END_STREAM write  -> ds_tx_end, the span is emitted
 * An HTTP/1.1 leg on either side uses the HTTP/1.1 code, which queues and takes answers the
 * same way. A downstream stream's ds_handle field: 0 before its response, 1 answered, 2 a
 * local reply (no upstream answer: not a span). An upstream stream's span holds its own leg.
 */
#define H2_DS_ANSWERED 1
#define H2_DS_LOCAL 2

static inline __attribute__((always_inline)) void smp_h2_frame(struct smp_h2_ctx *x,
                                                               struct smp_proc_stats *ps, u8 type,
                                                               u8 flags, u32 sid, u32 flen)
{
    if (!sid || type > H2_CONTINUATION)
        return;  /* connection-level (SETTINGS, PING, GOAWAY, WINDOW_UPDATE) or extension */
    struct smp_h2_skey sk = {};
    sk.conn = x->key;
    sk.sid = sid;
    sk.gen = x->gen;
    u8 end = (flags & H2_END_STREAM) && (type == H2_HEADERS || type == H2_DATA);
    struct smp_h2_stream *st = smp_h2_streams.lookup(&sk);
    if (x->role == ROLE_DS && x->is_read) {
        if (type == H2_HEADERS && !st) {
            int zero = 0;
            struct smp_h2_stream *init = smp_h2_stream_init.lookup(&zero);
            if (!init)
                return;
            struct smp_span *s = &init->span;
            s->kind = x->mode == MODE_APP ? SMP_SPAN_SERVER : SMP_SPAN_PROXY;
            s->tgid = x->tgid;
            s->tid = x->tid;
            s->ds_fd = x->fd;
            s->us_fd = -1;
            s->ds_sid = sid;
            s->ds_rx_beg = x->ts;
            s->flags = SMP_F_DS_H2;
            smp_h2_streams.update(&sk, init);
            __builtin_memset(init, 0, sizeof(*init));
            if (x->mode == MODE_PROXY)
                smp_fifo_push(x->tid, x->tgid, SMP_H2_HANDLE | ((u64)(x->fd & 0x7fffffff) << 32) | sid);
        } else if (st && type == H2_DATA) {
            st->span.req_bytes += flen;
        } else if (st && type == H2_RST_STREAM) {
            smp_h2_streams.delete(&sk);
            if (ps)
                __sync_fetch_and_add(&ps->h2_resets, 1);
        }
        return;
    }
    if (x->role == ROLE_DS) {
        /* the response, written downstream */
        if (!st)
            return;
        if (type == H2_RST_STREAM) {
            smp_h2_streams.delete(&sk);
            if (ps)
                __sync_fetch_and_add(&ps->h2_resets, 1);
            return;
        }
        if (!st->ds_handle) {
            /* the response starts: the upstream answer it carries */
            st->ds_handle = H2_DS_ANSWERED;
            if (x->mode == MODE_PROXY) {
                struct smp_ans *a = smp_ans_pop(x->tid, x->wts, x->fd, ps);
                if (a)
                    smp_ans_apply(&st->span, a);
                else
                    st->ds_handle = H2_DS_LOCAL;
            }
        }
        if (st->ds_handle == H2_DS_LOCAL) {
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
                st->span.ds_tx_data = x->wts;
        }
        if (end) {
            st->span.ds_tx_end = x->wts;
            if (!smp_emit_span(&st->span) && ps)
                __sync_fetch_and_add(&ps->spans, 1);
            smp_h2_streams.delete(&sk);
        }
        return;
    }
    /* ROLE_US: the proxy's own HTTP/2 client connection */
    if (!x->is_read) {
        if (type == H2_HEADERS && !st) {
            u64 h = 0;
            struct smp_span *d = smp_fifo_pop(x->tid, x->tgid, &h);
            if (d) {
                /* thread order: kept for HTTP/1.1 downstreams; answers correct it */
                d->us_fd = x->fd;
                d->us_sid = sid;
                d->us_tx_beg = x->wts;
                d->us_tx_end = x->wts;
                d->flags |= SMP_F_MATCH_THREAD | SMP_F_US_H2;
            }
            int zero = 0;
            struct smp_h2_stream *init = smp_h2_stream_init.lookup(&zero);
            if (!init)
                return;
            init->ds_handle = h;
            init->span.ds_fd = h & SMP_H2_HANDLE ? (s32)((h >> 32) & 0x7fffffff) : (s32)(u32)h;
            init->span.us_fd = x->fd;
            init->span.us_sid = sid;
            init->span.us_tx_beg = x->wts;
            init->span.us_tx_end = x->wts;
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
            st->span.us_tx_end = x->wts;  /* a later frame of the request (its body) */
        return;
    }
    /* upstream frames read: the first one starts the answer */
    if (!st)
        return;
    if (type != H2_RST_STREAM)
        smp_ans_push(x->tid, x->tgid, &st->span, x->ts);
    smp_h2_streams.delete(&sk);
}

/* The call's bytes from the cursor on are lost to the walk: count them, resynchronise
 * later. */
static inline __attribute__((always_inline)) void smp_h2_lost(struct smp_h2_call *k, struct smp_h2_dir *d,
                                                              struct smp_proc_stats *ps)
{
    struct smp_conn *c = smp_conns.lookup(&k->x.key);
    d->synced = 0;
    d->skip = 0;
    d->have = 0;
    if (ps)
        __sync_fetch_and_add(&ps->h2_desyncs, 1);
    if (c)
        smp_unparsed(c, ps, k->x.is_read, k->ret > k->done ? k->ret - k->done : 0);
}

/* One frame header of the call in smp_h2_scratch, then on to the next (a tail call). */
int smp_h2_step(void *ctx)
{
    int zero = 0;
    struct smp_h2_call *k = smp_h2_scratch.lookup(&zero);
    if (!k)
        return 0;
    u64 key = k->x.key;
    u32 tgid = k->x.tgid;
    struct smp_h2_conn *hc = smp_h2_conns.lookup(&key);
    if (!hc)
        return 0;
    struct smp_h2_dir *d = k->x.is_read ? &hc->rx : &hc->tx;
    struct smp_proc_stats *ps = smp_proc.lookup(&tgid);
    u8 f[16] = {};
    int r = smp_h2_next(k, d, f);
    if (r < 0) {
        smp_h2_lost(k, d, ps);
        return 0;
    }
    if (r == 0) {
        if (k->total < k->ret) {
            /* more iovecs than followed: the rest, and the place, are lost */
            smp_h2_lost(k, d, ps);
        }
        return 0;
    }
    u32 flen = smp_h2_len(f);
    d->skip = flen;
    k->frames++;
    struct smp_h2_ctx x = k->x;
    smp_h2_frame(&x, ps, f[3], f[4], smp_h2_sid(f), flen);
    smp_h2_progs.call(ctx, 0);
    /* the chain's length limit: fine if what is left is this frame's payload */
    if (k->ret - k->done <= d->skip) {
        d->skip -= k->ret - k->done;
        return 0;
    }
    smp_h2_lost(k, d, ps);
    return 0;
}

/* A read or write on a connection that is (or may be) HTTP/2: set the walk up and start it
 * (a tail call: nothing after it runs). -1 when the bytes are not HTTP/2. */
static inline __attribute__((always_inline)) int smp_h2_begin(void *ctx, struct smp_conn *c, u64 key,
                                                              struct smp_args *a, s64 ret, int is_read,
                                                              u8 cls, u32 tgid, u32 tid, u8 mode,
                                                              u64 ts, u64 wts,
                                                              struct smp_proc_stats *ps)
{
    int zero = 0;
    struct smp_h2_call *k = smp_h2_scratch.lookup(&zero);
    if (!k)
        return 0;
    if (smp_h2_gather(k, a->ptr, a->io, ret)) {
        if (c->proto != PROTO_H2)
            return -1;
        smp_unparsed(c, ps, is_read, ret);
        return 0;
    }
    u64 pos = cls == CLS_H2PRI ? H2_PREFACE_LEN : 0;
    struct smp_h2_conn *hc = smp_h2_conns.lookup(&key);
    if (!hc || c->proto != PROTO_H2) {
        if (cls != CLS_H2PRI && !smp_h2_plausible(k, 0))
            return -1;
        struct smp_h2_conn fresh = {};
        fresh.gen = (u32)bpf_ktime_get_ns() | 1;
        smp_h2_conns.update(&key, &fresh);
        hc = smp_h2_conns.lookup(&key);
        if (!hc)
            return 0;
        c->proto = PROTO_H2;
    }
    struct smp_h2_dir *d = is_read ? &hc->rx : &hc->tx;
    if (cls == CLS_H2PRI || !d->synced) {
        if (cls != CLS_H2PRI && !smp_h2_plausible(k, 0)) {
            smp_unparsed(c, ps, is_read, ret);
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
    k->x.key = key;
    k->x.ts = ts;
    k->x.wts = wts;
    k->x.tgid = tgid;
    k->x.tid = tid;
    k->x.gen = hc->gen;
    k->x.fd = (s32)(key & 0xffffffff);
    k->x.role = c->role;
    k->x.mode = mode;
    k->x.is_read = is_read;
    smp_h2_progs.call(ctx, 0);
    /* no walk program (user space has not set it yet): the bytes are not followed */
    smp_unparsed(c, ps, is_read, ret);
    d->synced = 0;
    return 0;
}

static inline __attribute__((always_inline)) void smp_ds_start(struct smp_conn *c, u64 key, u32 id_tid,
                                                               u32 tgid, s32 fd, u64 ts, u8 mode,
                                                               struct smp_scan *rid, u32 ret)
{
    if (c->phase == 2)
        smp_emit(c, tgid);
    __builtin_memset(&c->span, 0, sizeof(c->span));
    c->phase = 1;
    c->span.kind = mode == MODE_APP ? SMP_SPAN_SERVER : SMP_SPAN_PROXY;
    c->span.tgid = tgid;
    c->span.tid = id_tid;
    c->span.ds_fd = fd;
    c->span.us_fd = -1;
    c->span.ds_rx_beg = ts;
    c->span.req_bytes = ret;
    if (c->tls)
        c->span.flags |= SMP_F_DS_TLS;
    if (rid && rid->rid_len) {
        u8 n = rid->rid_len;
        c->span.rid_len = n;
        c->span.rid_hash = rid->rid_hash;
        __builtin_memcpy(c->span.rid, rid->rid, SMP_RID_LEN);
        /* zero what the scratch holds past this id (an earlier, longer id) */
        for (u32 k = 0; k < SMP_RID_LEN; k++)
            if (k >= n)
                c->span.rid[k] = 0;
    }
    if (mode == MODE_PROXY) {
        if (c->span.rid_hash)
            smp_rid_index.update(&c->span.rid_hash, &key);
        smp_fifo_push(id_tid, tgid, key);
    }
}

static inline __attribute__((always_inline)) int smp_exit(void *ctx, s64 ret, int is_read)
{
    u64 id = bpf_get_current_pid_tgid();
    struct smp_args *a = smp_args_map.lookup(&id);
    if (!a)
        return 0;
    struct smp_args args = *a;
    smp_args_map.delete(&id);
    if (ret <= 0 || args.skip)
        return 0;
    u32 tgid = id >> 32, tid = (u32)id;
    u8 mode = smp_mode(tgid);
    if (!mode)
        return 0;
    u64 ts = bpf_ktime_get_ns();
    /* A write's time is when the process hands the bytes to the kernel (its entry), as in
     * Envoy's own US_TX_END/DS_TX_END; a read's is when the bytes reached the process. */
    u64 wts = SMP_WRITE_TS_AT_EXIT ? ts : args.ts;
    u64 key = ((u64)tgid << 32) | args.fd;
    u32 len = 0;
    u64 buf = smp_first_buf(&args, ret, &len);
    u8 cls = buf ? smp_classify(buf, len) : CLS_OTHER;
    struct smp_scan *rid = cls == CLS_REQ ? smp_find_rid(buf, len) : 0;

    struct smp_conn *c = smp_conns.lookup(&key);
    if (!c) {
        /* A connection we did not see open: its role follows from HTTP content. */
        u8 role = 0;
        if (cls == CLS_REQ)
            role = is_read ? ROLE_DS : ROLE_US;
        else if (cls == CLS_RESP)
            role = is_read ? ROLE_US : ROLE_DS;
        else if (cls == CLS_H2PRI)
            role = is_read ? ROLE_DS : ROLE_US;
        if (!role || (mode == MODE_APP && role != ROLE_DS))
            return 0;
        c = smp_conn_new(key, role);
        if (!c)
            return 0;
        if (cls == CLS_RESP) {
            c->proto = PROTO_H1;
            c->phase = 2;  /* joined mid-exchange: wait for the next request */
            if (role == ROLE_DS)
                c->phase = 0;
            return 0;
        }
    }
    struct smp_proc_stats *ps = smp_proc.lookup(&tgid);
    if (ps) {
        if (is_read)
            __sync_fetch_and_add(&ps->rx_bytes, ret);
        else
            __sync_fetch_and_add(&ps->tx_bytes, ret);
    }
    if (c->proto == PROTO_H2 || cls == CLS_H2PRI || (c->proto == PROTO_NONE && cls == CLS_OTHER)) {
        if (!smp_h2_begin(ctx, c, key, &args, ret, is_read, cls, tgid, tid, mode, ts, wts, ps))
            return 0;
    }
    if (cls == CLS_REQ || cls == CLS_RESP)
        c->proto = PROTO_H1;
    else if (cls == CLS_TLS && c->proto == PROTO_NONE)
        c->proto = PROTO_TLS;
    if (c->proto == PROTO_NONE) {
        smp_unparsed(c, ps, is_read, ret);
        return 0;
    }

    if (c->role == ROLE_DS) {
        if (is_read) {
            if (c->phase == 1) {
                c->span.req_bytes += ret;
                return 0;
            }
            if (cls == CLS_TLS)
                c->tls = 1;
            if (c->tls || cls == CLS_REQ)
                smp_ds_start(c, key, tid, tgid, args.fd, ts, mode, rid, ret);
            return 0;
        }
        /* a write to downstream */
        if (c->phase == 1) {
            if (mode == MODE_PROXY && (c->span.us_rx_beg || (c->span.flags & SMP_F_US_H2))) {
                /* the response starts: take the thread's oldest upstream answer (keeping the
                 * queue in step); it decides the upstream leg when HTTP/2 is on the upstream
                 * side (thread order is not reliable there) and no request id matched */
                struct smp_ans *a = smp_ans_pop(tid, wts, (s32)args.fd, ps);
                if (a && !(c->span.flags & SMP_F_MATCH_RID) &&
                    (a->us_sid || (c->span.flags & SMP_F_US_H2)))
                    smp_ans_apply(&c->span, a);
                else if (!a && (c->span.flags & SMP_F_US_H2))
                    c->span.us_rx_beg = 0;  /* no answer: a local reply */
            }
            if (mode == MODE_PROXY && !c->span.us_rx_beg) {
                /* no upstream answer yet: a local reply or TLS handshake, not a span */
                c->phase = 0;
                if (ps)
                    __sync_fetch_and_add(&ps->local_replies, 1);
                return 0;
            }
            c->phase = 2;
        }
        if (c->phase == 2) {
            c->span.ds_tx_end = wts;
            c->span.resp_bytes += ret;
        }
        return 0;
    }

    /* ROLE_US: the proxy talking to its upstream */
    if (!is_read) {
        if (c->phase == 1) {
            struct smp_span *d = smp_pending_span(c->ds_key, tgid);
            if (d && d->us_fd == (s32)args.fd)
                d->us_tx_end = wts;
            c->span.us_tx_end = wts;
            return 0;
        }
        u64 dkey = 0;
        u16 how = 0;
        if (rid && rid->rid_hash) {
            u64 h = rid->rid_hash;
            u64 *k = smp_rid_index.lookup(&h);
            if (k) {
                dkey = *k;
                how = SMP_F_MATCH_RID;
                smp_rid_index.delete(&h);
            }
        }
        struct smp_span *d = 0;
        if (dkey) {
            d = smp_pending_span(dkey, tgid);
            if (d && d->us_tx_end)
                d = 0;  /* an id seen twice: fall back to the thread's order */
        }
        if (!d) {
            /* the oldest request this thread read and has not sent on yet */
            how = SMP_F_MATCH_THREAD;
            d = smp_fifo_pop(tid, tgid, &dkey);
            if (!d)
                return 0;
        }
        if (rid && rid->rid_len && !d->rid_len && !(dkey & SMP_H2_HANDLE)) {
            /* the proxy made the id (none came from downstream): adopt it, so the app's
             * span of this request can be joined to this one */
            d->rid_len = rid->rid_len;
            d->rid_hash = rid->rid_hash;
            __builtin_memcpy(d->rid, rid->rid, SMP_RID_LEN);
            for (u32 k = 0; k < SMP_RID_LEN; k++)
                if (k >= d->rid_len)
                    d->rid[k] = 0;
        }
        d->us_fd = args.fd;
        d->us_tx_beg = args.ts;
        d->us_tx_end = wts;
        d->flags |= how;
        /* the connection's own record of this request, for the answer queue */
        c->span.us_fd = args.fd;
        c->span.us_sid = 0;
        c->span.ds_fd = dkey & SMP_H2_HANDLE ? (s32)((dkey >> 32) & 0x7fffffff) : (s32)(u32)dkey;
        c->span.us_tx_beg = args.ts;
        c->span.us_tx_end = wts;
        c->span.rid_len = 0;
        c->span.rid_hash = 0;
        if (rid && rid->rid_len) {
            c->span.rid_len = rid->rid_len;
            c->span.rid_hash = rid->rid_hash;
            __builtin_memcpy(c->span.rid, rid->rid, SMP_RID_LEN);
            for (u32 k = 0; k < SMP_RID_LEN; k++)
                if (k >= rid->rid_len)
                    c->span.rid[k] = 0;
        }
        c->ds_key = dkey;
        c->phase = 1;
        return 0;
    }
    if (c->phase == 1) {
        struct smp_span *d = smp_pending_span(c->ds_key, tgid);
        if (d && d->us_fd == (s32)args.fd && !d->us_rx_beg)
            d->us_rx_beg = ts;
        c->phase = 2;
        smp_ans_push(tid, tgid, &c->span, ts);
    }
    return 0;
}

/* reads */
TRACEPOINT_PROBE(syscalls, sys_enter_read) { return smp_enter(args->fd, (u64)args->buf, IO_PTR, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_read) { return smp_exit(args, args->ret, 1); }
TRACEPOINT_PROBE(syscalls, sys_enter_readv) { return smp_enter(args->fd, (u64)args->vec, IO_IOV, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_readv) { return smp_exit(args, args->ret, 1); }
TRACEPOINT_PROBE(syscalls, sys_enter_recvfrom)
{
    return smp_enter(args->fd, (u64)args->ubuf, IO_PTR, (args->flags & MSG_PEEK) != 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_recvfrom) { return smp_exit(args, args->ret, 1); }
TRACEPOINT_PROBE(syscalls, sys_enter_recvmsg)
{
    return smp_enter(args->fd, (u64)args->msg, IO_MSG, (args->flags & MSG_PEEK) != 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_recvmsg) { return smp_exit(args, args->ret, 1); }
TRACEPOINT_PROBE(syscalls, sys_enter_recvmmsg)
{
    return smp_enter(args->fd, (u64)args->mmsg, IO_MMSG, (args->flags & MSG_PEEK) != 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_recvmmsg) { return smp_exit(args, args->ret, 1); }

/* writes */
TRACEPOINT_PROBE(syscalls, sys_enter_write) { return smp_enter(args->fd, (u64)args->buf, IO_PTR, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_write) { return smp_exit(args, args->ret, 0); }
TRACEPOINT_PROBE(syscalls, sys_enter_writev) { return smp_enter(args->fd, (u64)args->vec, IO_IOV, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_writev) { return smp_exit(args, args->ret, 0); }
TRACEPOINT_PROBE(syscalls, sys_enter_sendto) { return smp_enter(args->fd, (u64)args->buff, IO_PTR, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_sendto) { return smp_exit(args, args->ret, 0); }
TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg) { return smp_enter(args->fd, (u64)args->msg, IO_MSG, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_sendmsg) { return smp_exit(args, args->ret, 0); }
TRACEPOINT_PROBE(syscalls, sys_enter_sendmmsg) { return smp_enter(args->fd, (u64)args->mmsg, IO_MMSG, 0); }
TRACEPOINT_PROBE(syscalls, sys_exit_sendmmsg) { return smp_exit(args, args->ret, 0); }

/* connection roles: accepted sockets are downstream, connected ones upstream */
static inline __attribute__((always_inline)) int smp_conn_role(s64 fd, u8 role)
{
    u64 id = bpf_get_current_pid_tgid();
    if (fd < 0 || smp_mode(id >> 32) != MODE_PROXY)
        return 0;
    smp_conn_new((id & 0xffffffff00000000ULL) | (u32)fd, role);
    return 0;
}
TRACEPOINT_PROBE(syscalls, sys_exit_accept4) { return smp_conn_role(args->ret, ROLE_DS); }
TRACEPOINT_PROBE(syscalls, sys_exit_accept) { return smp_conn_role(args->ret, ROLE_DS); }
TRACEPOINT_PROBE(syscalls, sys_enter_connect) { return smp_conn_role(args->fd, ROLE_US); }
TRACEPOINT_PROBE(syscalls, sys_enter_close)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    if (!smp_mode(tgid))
        return 0;
    u64 key = ((u64)tgid << 32) | args->fd;
    struct smp_conn *c = smp_conns.lookup(&key);
    if (!c)
        return 0;
    if (c->role == ROLE_DS && c->phase == 2)
        smp_emit(c, tgid);
    smp_emit_unparsed(c, tgid, args->fd);
    if (c->proto == PROTO_H2)
        smp_h2_conns.delete(&key);
    smp_conns.delete(&key);
    return 0;
}
