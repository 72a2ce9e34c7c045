/* sidecar: one record per HTTP/1.1 request or HTTP/2 stream through a traced proxy or app.
 *
 * Shared by bpf/sidecar.c and profiler/probes/sidecar.py, which reads the enums, the flags
 * and struct smp_span from this file (profiler/probes/cheader.py: no second copy, no BCC
 * needed to decode). Keep to what that small parser reads: `#define NAME <int>`, `enum name
 * { A = <int>, ... };` and structs of u8/u16/u32/u64/s32/s64/char fields and arrays.
 * Timestamps are CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns()).
 *
 * For a proxy (kind SMP_SPAN_PROXY), in Envoy's terms:
 *   ds_rx_beg  first request bytes read from the downstream connection   (DS_RX_BEG)
 *   us_tx_beg  the first upstream write of the request
 *   us_tx_end  the last upstream write of the request                    (US_TX_END)
 *   us_rx_beg  first response bytes read from the upstream connection     (US_RX_BEG)
 *   ds_tx_end  the last downstream write of the response                  (DS_TX_END)
 * A write's instant depends on the path (enum smp_path): on the sock path it is when the
 * socket's sendmsg returned (the bytes are in the kernel, on loopback delivered); on the
 * syscalls path when the write syscall started. A read's instant is when the socket read
 * returned, on both.
 * Arrival stamps (enum smp_arrival: which hook gives them, chosen by feature probe):
 *   ds_rx_arr  the request's first bytes reached the downstream socket    (<= ds_rx_beg)
 *   us_rx_arr  the response's first bytes reached the upstream socket     (<= us_rx_beg)
 * 0 when unknown (the first request of a connection the probe had not seen yet). With TLS
 * downstream, ds_rx_arr is the first arrival of the TLS read burst that starts the request.
 * For an app (kind SMP_SPAN_SERVER) only ds_rx_beg (request read) and ds_tx_end (last
 * response write) are set.
 *
 * The only payload that leaves the kernel is the x-request-id value (at most
 * SMP_RID_LEN bytes, characters [A-Za-z0-9._:-] only), which identifies the request.
 */
#ifndef SMP_SIDECAR_H
#define SMP_SIDECAR_H

#define SMP_RID_LEN 48

/* The PID gate's slots (smp_pid_gate in sidecar.c): tgid modulo this, a power of two. */
#define SMP_PID_GATE_SLOTS 4096

/* Which hooks the probe is built with: -DSMP_PATH=<one of these> (macros, not an enum: the
 * C preprocessor chooses the programs). */
#define SMP_PATH_SOCK 1         /* raw tracepoints sock_{recv,send}_length (Linux >= 6.3) */
#define SMP_PATH_SYSCALLS 2     /* syscalls:sys_{enter,exit}_* tracepoints (any kernel) */

/* Where arrival stamps come from: -DSMP_ARRIVAL=<one of these> (macros: the preprocessor
 * chooses the programs). */
#define SMP_ARRIVAL_NONE 0
#define SMP_ARRIVAL_SK_DATA_READY 1  /* raw tracepoint sock:sk_data_ready (keyed by sk) */
#define SMP_ARRIVAL_TCP_PROBE 2      /* tcp:tcp_probe data segments; on the syscalls path
                                      * joined to fds by tcp:tcp_rcv_space_adjust */

/* What a traced process is (the value of smp_filter_pids). */
enum smp_mode {
    SMP_MODE_NONE = 0,
    SMP_MODE_PROXY = 1,     /* a sidecar: downstream requests matched to upstream writes */
    SMP_MODE_APP = 2,       /* an app: requests it serves */
    SMP_MODE_SELF = 3,      /* the profiler itself, during its start-up self-test: bytes only */
};

/* A connection's side, from the traced process's point of view. */
enum smp_role {
    SMP_ROLE_NONE = 0,
    SMP_ROLE_DS = 1,        /* we serve this connection (accepted) */
    SMP_ROLE_US = 2,        /* we are the client (connected) */
};

/* Where a connection is in its request/response exchange. */
enum smp_phase {
    SMP_PHASE_IDLE = 0,     /* DS: no request open. US: nothing sent */
    SMP_PHASE_REQUEST = 1,  /* DS: a request is being read and sent on. US: request sent */
    SMP_PHASE_RESPONSE = 2, /* DS: the response is being written. US: response read */
};

enum smp_span_kind {
    SMP_SPAN_PROXY = 1,
    SMP_SPAN_SERVER = 2,
    SMP_SPAN_UNPARSED = 3,  /* not a request: a connection's bytes no protocol explained */
};

/* What a connection's bytes were recognised as (struct smp_conn.proto). */
enum smp_proto {
    SMP_PROTO_NONE = 0,     /* not (yet) recognised: its bytes count as unparsed */
    SMP_PROTO_H1 = 1,
    SMP_PROTO_H2 = 2,
    SMP_PROTO_TLS = 3,
};

/* flags */
#define SMP_F_DS_TLS 0x1        /* downstream bytes were not plaintext HTTP (e.g. mTLS) */
#define SMP_F_MATCH_RID 0x2     /* upstream write matched to the request by x-request-id */
#define SMP_F_MATCH_THREAD 0x4  /* matched by worker thread (no readable request id) */
#define SMP_F_DRAINED 0x8       /* read from the connection table at the end, not emitted */
#define SMP_F_RID_ADOPTED 0x10  /* the id is the one the proxy added upstream (none came in) */
#define SMP_F_REPAIRED 0x20     /* thread match corrected at the response (pool reordering) */
#define SMP_F_DS_H2 0x40        /* downstream leg is an HTTP/2 stream (ds_sid) */
#define SMP_F_US_H2 0x80        /* upstream leg is an HTTP/2 stream (us_sid) */
#define SMP_F_MATCH_RESP 0x100  /* upstream leg paired by response order (see sidecar.c) */
#define SMP_F_US_TLS 0x200      /* upstream leg is TLS (mTLS): its instants are the worker
                                 * thread's TLS read/write bursts, not this request's own */
#define SMP_F_US_TX_CALL 0x400  /* HTTP/1.1: us_tx_end is the write call's own instant, not its
                                 * first packet's (none was stamped: TCP held the bytes back,
                                 * the thread changed CPU, or no write-stamp hook) */
#define SMP_F_DS_TX_CALL 0x800  /* HTTP/1.1: ds_tx_end likewise */
#define SMP_F_DS_BURST 0x8000   /* downstream is HTTP/2 inside TLS (mTLS): one span per upstream
                                 * stream; ds_rx_beg/ds_tx_end are the worker thread's TLS
                                 * read/write bursts on the downstream, not this stream's own */

struct smp_span {
    u64 ds_rx_beg;
    u64 us_tx_beg;
    u64 us_tx_end;
    u64 us_rx_beg;
    u64 ds_tx_end;
    u64 ds_rx_arr;
    u64 us_rx_arr;
    u64 rid_hash;
    u32 tgid;               /* the process as the profiler sees it (its PID namespace) */
    u32 tid;                /* the kernel's (init namespace) thread id */
    s32 ds_fd;
    s32 us_fd;
    u32 req_bytes;
    u32 resp_bytes;
    u16 kind;
    u16 flags;
    u8 rid_len;
    u8 pad;
    u16 status;             /* HTTP/1.1: the response's status code, from the first bytes of
                             * the response written downstream (a proxy: what it wrote to the
                             * client; an app: what the app wrote); 0 unknown (TLS, HTTP/2,
                             * a head not seen) */
    char rid[SMP_RID_LEN];
    /* HTTP/2 (zero for HTTP/1.1). A SMP_SPAN_UNPARSED record uses ds_rx_beg (when it was
     * written), ds_fd or us_fd (the connection, by role) and req_bytes/resp_bytes (bytes read
     * and written on it that no span explains). */
    u64 ds_tx_data;         /* first DATA frame of the response written downstream */
    u32 ds_sid;             /* downstream stream id */
    u32 us_sid;             /* upstream stream id */
};

/* One connection of a traced process. The key of smp_conns is the kernel's socket pointer
 * (`sk`, the key sock:* tracepoints give) on the sock path, tgid << 32 | fd on the syscalls
 * path; `sk` is that key on both. */
struct smp_conn {
    u64 sk;
    u64 ds_key;             /* US: the downstream connection whose request this one carries */
    u64 us_key;             /* DS: the upstream connection its request went out on */
    u32 upid;               /* the owning process as the profiler sees it */
    u8 role;                /* enum smp_role */
    u8 phase;               /* enum smp_phase */
    u8 tls;
    u8 proto;               /* enum smp_proto */
    u64 arr;                /* first arrival of bytes not read yet (0: none seen) */
    struct smp_span span;   /* DS: the request in progress. US: its own request's leg */
    u64 unparsed_rx;        /* bytes on this connection no span explains */
    u64 unparsed_tx;
    s32 fd;                 /* its fd, once it has unparsed bytes */
    u32 pad2;
};

/* The value of smp_filter_pids (key: the kernel's init-namespace tgid). */
struct smp_target {
    u32 upid;               /* the PID the profiler was given (its own namespace) */
    u8 mode;                /* enum smp_mode */
    u8 pad[3];
};

/* Per-process byte and request counters (key: upid). */
struct smp_proc_stats {
    u64 rx_bytes;
    u64 tx_bytes;
    u64 spans;
    u64 local_replies;      /* downstream writes before any upstream response: no span */
    u64 unparsed_bytes;     /* socket bytes that belong to no span (never silent) */
    u64 unattributed;       /* socket I/O by a call the probe does not decode (sendfile,
                             * splice, io_uring): counted, not parsed */
    u64 pipelined;          /* request heads read while the connection's previous request
                             * was still open: no span of their own */
    u64 aborted;            /* downstream connections closed with a request open */
    u64 unparsed_conns;     /* connections with unparsed bytes */
    u64 h2_resets;          /* HTTP/2 streams reset (RST_STREAM) before they ended: no span */
    u64 h2_desyncs;         /* times the HTTP/2 frame walk lost its place (bytes: unparsed) */
    u64 stale_answers;      /* upstream answers no downstream response took within 50 ms */
    u64 h2_blocks_lost;     /* HTTP/2 header blocks not followed to their end (tail calls or
                             * queue ran out, cut twice, too long): their statuses may be
                             * unknown, and the HPACK shadow's earlier entries are */
    u64 statuses_lost;      /* responses whose status found smp_h2_status full: not counted */
};

#endif
