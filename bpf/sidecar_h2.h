/* HTTP/2 framing for bpf/sidecar.c (RFC 9113 section 4.1): where the 9-byte frame headers
 * are in a read's or a write's buffers. Types and helpers without map calls only (BCC
 * rewrites map calls in the main source file, never in an included header); the per-stream
 * state machine that uses them is in sidecar.c.
 *
 * A frame header: length (24 bits), type (8), flags (8), R + stream id (31). The walk keeps,
 * per connection and direction, how many payload bytes of the current frame are still to
 * come and any frame-header bytes a read or write ended in the middle of, so frames split
 * across calls are followed. A direction whose place is lost (more frames in one call than
 * the walk follows, buffers beyond SMP_H2_SEGS, an impossible header) counts its bytes as
 * unparsed and resynchronises on a later call that starts with a plausible chain of frame
 * headers (also how connections opened before the capture, without a preface, are picked up).
 */
#ifndef SMP_SIDECAR_H2_H
#define SMP_SIDECAR_H2_H

#define H2_DATA 0x0
#define H2_HEADERS 0x1
#define H2_PRIORITY 0x2
#define H2_RST_STREAM 0x3
#define H2_SETTINGS 0x4
#define H2_PUSH_PROMISE 0x5
#define H2_PING 0x6
#define H2_GOAWAY 0x7
#define H2_WINDOW_UPDATE 0x8
#define H2_CONTINUATION 0x9
#define H2_END_STREAM 0x1
#define H2_PREFACE_LEN 24          /* "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" */
#define H2_RESYNC_MAX_FRAME 16384  /* SETTINGS_MAX_FRAME_SIZE's default: Envoy's and gRPC's */

#ifndef SMP_H2_FRAMES
#define SMP_H2_FRAMES 32           /* frame headers followed in one read or write */
#endif
#define SMP_H2_SEGS 8              /* iovec entries followed in one readv/writev */
#define SMP_H2_RESYNC_FRAMES 8     /* frame headers a resynchronisation checks */

struct smp_h2_dir {
    u32 skip;     /* payload bytes of the current frame still to come */
    u8 synced;    /* the next byte is a frame header's (or the skip's end is) */
    u8 have;      /* bytes of a split frame header kept in hdr */
    u8 hdr[10];
};

struct smp_h2_conn {
    struct smp_h2_dir rx;
    struct smp_h2_dir tx;
    u32 gen;      /* this connection's generation: streams of an earlier connection with
                   * the same key (fd or socket reused) are never found (their stream keys
                   * carry the old generation) */
    u32 pad;
};

/* What the frame handler needs to know about the call a frame came in. */
struct smp_h2_ctx {
    u64 key;                   /* the connection (struct smp_io.key) */
    u64 ts;                    /* the event's instant (struct smp_io.ts) */
    u64 ts_call;               /* when the call started (struct smp_io.ts_call) */
    u64 arr;                   /* a read's arrival stamp (struct smp_io.arr), else 0 */
    u32 upid;
    u32 tid;
    u32 gen;
    s32 fd;
    u8 role;
    u8 mode;
    u8 is_read;
    u8 pad[5];
};

/* One read's or write's walk, in a per-CPU map: the first SMP_H2_SEGS iovecs cut to the
 * bytes moved, and a cursor. The walk is a chain of tail calls of one program, one frame
 * header each (each program small enough for the verifier; at most 33 in a chain). */
struct smp_h2_call {
    u64 base[SMP_H2_SEGS];
    u64 len[SMP_H2_SEGS];
    u64 total;     /* bytes in those iovecs */
    u64 ret;       /* bytes the call moved */
    u64 done;      /* bytes walked so far */
    u64 off;       /* cursor: offset in segment seg */
    u32 seg;
    u32 frames;
    struct smp_h2_ctx x;
};

/* Gather the call's buffers. 0, or -1 when user memory could not be read. */
static inline __attribute__((always_inline)) int smp_h2_gather(struct smp_h2_call *k, u64 ptr, u8 kind,
                                                               s64 ret)
{
    u64 left = (u64)ret;
    k->total = 0;
    k->ret = (u64)ret;
    k->done = 0;
    k->off = 0;
    k->seg = 0;
    k->frames = 0;
    for (int j = 0; j < SMP_H2_SEGS; j++)
        k->len[j] = 0;
    if (kind == IO_PTR) {
        k->base[0] = ptr;
        k->len[0] = left;
        k->total = left;
        return 0;
    }
    u64 iov = ptr;
    if (kind == IO_MSG || kind == IO_MMSG) {
        struct smp_msghdr m = {};
        if (bpf_probe_read_user(&m, sizeof(m), (void *)ptr))
            return -1;
        iov = m.iov;
        if (kind == IO_MMSG) {
            u32 first = 0;  /* ret counts messages: the first one's msg_len */
            if (bpf_probe_read_user(&first, sizeof(first), (void *)(ptr + 56)))
                return -1;
            left = first;
            k->ret = first;
        }
    }
    for (int j = 0; j < SMP_H2_SEGS; j++) {
        if (!left)
            break;
        struct smp_iovec v = {};
        if (bpf_probe_read_user(&v, sizeof(v), (void *)(iov + j * sizeof(v))))
            return -1;
        u64 n = v.len < left ? v.len : left;
        k->base[j] = v.base;
        k->len[j] = n;
        k->total += n;
        left -= n;
    }
    return 0;
}

static inline __attribute__((always_inline)) u32 smp_h2_len(const u8 *f)
{
    return ((u32)f[0] << 16) | ((u32)f[1] << 8) | f[2];
}

static inline __attribute__((always_inline)) u32 smp_h2_sid(const u8 *f)
{
    return ((u32)(f[5] & 0x7f) << 24) | ((u32)f[6] << 16) | ((u32)f[7] << 8) | f[8];
}

/* A frame header that an HTTP/2 peer could have sent: a known type with its own length,
 * flags and stream-id rules. Used only to (re)synchronise, so it errs on refusing. */
static inline __attribute__((always_inline)) int smp_h2_header_ok(const u8 *f)
{
    u32 len = smp_h2_len(f), sid = smp_h2_sid(f);
    u8 type = f[3], flags = f[4];
    if ((f[5] & 0x80) || len > H2_RESYNC_MAX_FRAME)
        return 0;
    switch (type) {
    case H2_DATA:
        return sid && !(flags & ~0x09);
    case H2_HEADERS:
        return sid && !(flags & ~0x2d) && len;
    case H2_PRIORITY:
        return sid && len == 5 && !flags;
    case H2_RST_STREAM:
        return sid && len == 4 && !flags;
    case H2_SETTINGS:
        return !sid && len % 6 == 0 && !(flags & ~0x01) && !(flags && len);
    case H2_PUSH_PROMISE:
        return sid && !(flags & ~0x0c);
    case H2_PING:
        return !sid && len == 8 && !(flags & ~0x01);
    case H2_GOAWAY:
        return !sid && len >= 8 && !flags;
    case H2_WINDOW_UPDATE:
        return len == 4 && !flags;
    case H2_CONTINUATION:
        return sid && !(flags & ~0x04);
    }
    return 0;
}

/* Does the call's first buffer, from pos on, look like whole HTTP/2 frames? Every frame
 * header met is plausible and the chain ends exactly at the end of that buffer, or it has
 * at least two frames and the last runs past it (split across calls or iovecs). */
static inline __attribute__((always_inline)) int smp_h2_plausible(struct smp_h2_call *k, u64 pos)
{
    u64 len = k->len[0];
    u64 base = k->base[0];
    u8 f[16] = {};
    for (int i = 0; i < SMP_H2_RESYNC_FRAMES; i++) {
        if (pos == len)
            return i > 0;
        if (pos + 9 > len)
            return i >= 2;
        if (bpf_probe_read_user(f, 9, (void *)(base + pos)) || !smp_h2_header_ok(f))
            return 0;
        pos += 9 + smp_h2_len(f);
        if (pos > len)
            return i >= 1;
    }
    return 1;
}

/* Move the cursor to the next frame header and copy it into f (9 bytes): 1; 0 when the
 * call's data is all walked (a split header's first bytes kept in d); -1 when lost. */
static inline __attribute__((always_inline)) int smp_h2_next(struct smp_h2_call *k, struct smp_h2_dir *d,
                                                             u8 *f)
{
    u8 tmp[16] = {};
    for (int i = 0; i < 2 * SMP_H2_SEGS + 2; i++) {
        u32 j = k->seg;
        if (j >= SMP_H2_SEGS)
            return 0;
        u64 l = k->len[j & (SMP_H2_SEGS - 1)];
        u64 off = k->off;
        if (off >= l) {
            k->seg = j + 1;
            k->off = 0;
            continue;
        }
        u64 avail = l - off;
        u64 at = k->base[j & (SMP_H2_SEGS - 1)] + off;
        if (d->skip) {
            u64 adv = avail < d->skip ? avail : d->skip;
            k->off = off + adv;
            k->done += adv;
            d->skip -= adv;
            continue;
        }
        u32 have = d->have;
        if (have > 8)
            return -1;
        u32 need = 9 - have;
        if (avail < need) {
            /* the buffer ends inside a frame header: keep its first bytes */
            u32 n = avail;
            if (n > 8 || bpf_probe_read_user(tmp, n, (void *)at))
                return -1;
            for (u32 q = 0; q < 8; q++)
                if (q < n)
                    d->hdr[(have + q) & 7] = tmp[q];
            d->have = have + n;
            k->off = l;
            k->done += n;
            continue;
        }
        if (need > 9 || bpf_probe_read_user(tmp, need, (void *)at))
            return -1;
        for (u32 q = 0; q < 9; q++) {
            u64 t = q - have;
            asm volatile("%0 &= 15" : "+r"(t));  /* a bound the verifier sees */
            f[q] = q < have ? d->hdr[q & 7] : tmp[t];
        }
        d->have = 0;
        k->off = off + need;
        k->done += need;
        return 1;
    }
    return k->done >= k->total ? 0 : -1;
}

#endif
