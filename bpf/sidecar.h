/* sidecar: one record per HTTP/1.1 request through a traced proxy or app process.
 *
 * Shared by bpf/sidecar.c and profiler/probes/sidecar.py (which decodes it with BCC from
 * this one definition). Timestamps are CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns()).
 *
 * For a proxy (kind SMP_SPAN_PROXY), in Envoy's terms:
 *   ds_rx_beg  first request bytes read from the downstream connection   (DS_RX_BEG)
 *   us_tx_beg  the first upstream write of the request starts
 *   us_tx_end  the last upstream write of the request starts             (US_TX_END)
 *   us_rx_beg  first response bytes read from the upstream connection     (US_RX_BEG)
 *   ds_tx_end  the last downstream write of the response starts          (DS_TX_END)
 * For an app (kind SMP_SPAN_SERVER) only ds_rx_beg (request read) and ds_tx_end (last
 * response write) are set.
 *
 * The only payload that leaves the kernel is the x-request-id value (at most
 * SMP_RID_LEN bytes, characters [A-Za-z0-9._:-] only), which identifies the request.
 */
#ifndef SMP_SIDECAR_H
#define SMP_SIDECAR_H

#define SMP_RID_LEN 48

#define SMP_SPAN_PROXY 1
#define SMP_SPAN_SERVER 2
#define SMP_SPAN_UNPARSED 3     /* not a request: a connection's bytes no protocol explained */

/* flags */
#define SMP_F_DS_TLS 0x1        /* downstream bytes were not plaintext HTTP (e.g. mTLS) */
#define SMP_F_MATCH_RID 0x2     /* upstream write matched to the request by x-request-id */
#define SMP_F_MATCH_THREAD 0x4  /* matched by worker thread (no readable request id) */
#define SMP_F_DRAINED 0x8       /* read from the connection table at the end, not emitted */
#define SMP_F_DS_H2 0x10        /* downstream leg is an HTTP/2 stream (ds_sid) */
#define SMP_F_US_H2 0x20        /* upstream leg is an HTTP/2 stream (us_sid) */
#define SMP_F_MATCH_RESP 0x40   /* upstream leg paired by response order (see sidecar.c) */

struct smp_span {
    u64 ds_rx_beg;
    u64 us_tx_beg;
    u64 us_tx_end;
    u64 us_rx_beg;
    u64 ds_tx_end;
    u64 rid_hash;
    u32 tgid;
    u32 tid;
    s32 ds_fd;
    s32 us_fd;
    u32 req_bytes;
    u32 resp_bytes;
    u16 kind;
    u16 flags;
    u8 rid_len;
    u8 pad[3];
    char rid[SMP_RID_LEN];
    /* HTTP/2 (zero for HTTP/1.1). A SMP_SPAN_UNPARSED record uses ds_rx_beg (when it was
     * written), ds_fd or us_fd (the connection, by role) and req_bytes/resp_bytes (bytes read
     * and written that no span explains). */
    u64 ds_tx_data;  /* first DATA frame of the response written downstream (first message) */
    u32 ds_sid;      /* downstream stream id */
    u32 us_sid;      /* upstream stream id */
    u16 status;      /* HTTP :status when the probe could read it, else 0 */
    u8 grpc_status;  /* grpc-status + 1 when read (0: none seen or unreadable) */
    u8 pad2[5];
};

/* Per-process byte and request counters. */
struct smp_proc_stats {
    u64 rx_bytes;
    u64 tx_bytes;
    u64 spans;
    u64 local_replies;  /* downstream writes before any upstream response: no span */
    u64 unparsed_rx;    /* bytes read on connections no protocol explained (never silent) */
    u64 unparsed_tx;    /* ... and written */
    u64 unparsed_conns; /* connections with such bytes */
    u64 h2_resets;      /* HTTP/2 streams reset (RST_STREAM) before they completed: no span */
    u64 h2_desyncs;     /* times the HTTP/2 frame walk lost its place (bytes counted unparsed) */
    u64 stale_answers;  /* upstream answers no downstream response took within 20 ms */
};

#endif
