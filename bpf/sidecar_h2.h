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

/* Statuses in header blocks (RFC 7541): a shadow of the encoder's dynamic table that keeps
 * only what statuses need. Every insertion is counted (ins); the entries that were a
 * :status or grpc-status (or whose name could not be told) are kept with their insertion
 * number in SMP_HP_SLOTS slots. Dynamic index 62 + j is insertion number ins - 1 - j
 * (evictions drop the oldest, which the encoder then never refers to): a status slot, else
 * a header that is no status, unless it was inserted before the shadow began (a connection
 * open before the capture) or before floor: a reused slot's entry, or a header block it could
 * not follow to its end (X insertions not counted). Then unknown, never guessed. After such
 * a block both counts differ by X for every later insertion, so index 62 + j still names
 * insertion ins - 1 - j of ours when that is >= floor (later entries resolve again); older
 * ones land below floor. */
#define SMP_HP_SLOTS 4
#define SMP_HP_BUF 256             /* bytes of a header block decoded */
#define SMP_HP_FIELDS 12           /* header fields decoded per block */
#define HP_K_OTHER 0
#define HP_K_STATUS 1              /* :status */
#define HP_K_GRPC 2                /* grpc-status */
#define HP_K_UNKNOWN 3             /* a name that could not be resolved */
#define HP_NOCODE 0xfff            /* a status whose value was not decoded */
#define HP_NOSLOT 0xff             /* no shadow slot */
#define HP_NONE 0xffff

struct smp_hpack {
    u32 ins;      /* insertions seen since the shadow began */
    u32 floor;    /* insertions numbered below this are unknown */
    u32 seq[SMP_HP_SLOTS];
    u16 kc[SMP_HP_SLOTS];  /* kind << 12 | code; 0: an empty slot */
    u8 on;        /* this direction's header blocks are decoded */
    u8 pend;      /* a block cut off by the last call's end waits in smp_hp_parts */
    u8 missed;    /* header blocks went by while off: turned on later, the shadow lacks
                   * their insertions (counted then) */
    u8 pad;
};

struct smp_h2_dir {
    u32 skip;     /* payload bytes of the current frame still to come */
    u8 synced;    /* the next byte is a frame header's (or the skip's end is) */
    u8 have;      /* bytes of a split frame header kept in hdr */
    u8 hdr[10];
    struct smp_hpack hp;
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

/* The decoder's working state, in the per-CPU scratch (not in registers: the verifier then
 * sees alike states at each field and prunes): the cursor, and where the :status [0] and
 * grpc-status [1] literal values are, decoded once after the walk over the fields. */
struct smp_hp_work {
    u32 at;
    u32 vpos[2];
    u32 vlen[2];
    u8 vhuff[2];
    u8 vseen[2];
    u8 vslot[2];   /* the shadow slot the value was inserted in, or HP_NOSLOT (BCC's Python
                    * side has no ctype for a signed char: no s8 in a map's value) */
    u16 status;    /* from an indexed field */
    u16 grpc;
    u8 unresolved;
    u8 bad;
    u8 pad[2];
};

#define SMP_HQ 32                  /* header blocks queued for decoding per call */
struct smp_hq {
    u64 at;        /* the block's first byte in the user buffer */
    u32 n;         /* its bytes there (the rest is in a later buffer or call) */
    u32 flen;      /* the frame's payload length */
    u32 sid;
    u8 fl;         /* the frame's flags */
    u8 how;        /* HQ_WHOLE, HQ_CUT (the call ends inside it: the rest comes in the
                    * connection's next call) or HQ_REST (that rest, for the block kept) */
    u8 pad[2];
};
#define HQ_WHOLE 0
#define HQ_CUT 1
#define HQ_REST 2

/* A header block the end of a read or write cut off (HQ_CUT): its first bytes, kept until
 * the connection's next call in that direction brings the rest (smp_hp_parts; removed then,
 * or when the connection closes). */
struct smp_hp_part {
    u8 b[SMP_HP_BUF];
    u32 have;      /* bytes in b */
    u32 flen;
    u32 sid;
    u8 fl;
    u8 counts;     /* its statuses are counted (decided when it was cut: the stream may
                    * be gone by the time the rest comes) */
    u8 pad[2];
};
struct smp_hp_pkey {
    u64 conn;
    u32 gen;
    u32 dir;       /* 1: read */
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
    /* the HEADERS frames whose blocks are decoded once the walk is done (smp_h2_hpack_step) */
    u32 hq_n;
    u32 hq_i;
    u32 hq_over;   /* HEADERS frames the queue had no room for */
    u32 hq_pad;
    struct smp_hq hq[SMP_HQ];
    struct smp_hp_work hp_w;
    u8 hp[2 * SMP_HP_BUF];   /* a header block's first bytes, being decoded (twice the
                              * decoded bytes: a kept part and its rest are bounded apart) */
    struct smp_hp_part part; /* a cut-off block, on its way to smp_hp_parts */
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

/* -- HPACK, as far as statuses go ------------------------------------------------------------ */
struct smp_hp_out {
    u16 status;      /* :status, 0 when none was seen */
    u16 grpc;        /* grpc-status, HP_NONE when none was seen */
    u8 unresolved;   /* a field could not be told (unknown dynamic entry, cut-off block) */
    u8 cut;          /* not followed to its end: the shadow lost count of its insertions */
    u8 pad[2];
};

#define HP_B(b, i) ((b)[(i) & (SMP_HP_BUF - 1)])

/* An HPACK integer with an N-bit prefix (max = 2^N - 1) at *pos, at most 2 continuation
 * bytes (values up to 2^14 + max): 0, or -1 (cut off, or larger). */
static inline __attribute__((always_inline)) int smp_hp_int(const u8 *b, u32 *pos, u32 n, u32 max,
                                                            u32 *out)
{
    u32 p = *pos;
    u32 v = HP_B(b, p) & max;
    p++;
    if (v == max) {
        u8 c = HP_B(b, p);
        p++;
        v += c & 0x7f;
        if (c & 0x80) {
            c = HP_B(b, p);
            p++;
            v += (u32)(c & 0x7f) << 7;
            if (c & 0x80)
                return -1;
        }
    }
    if (p > n)
        return -1;
    *pos = p;
    *out = v;
    return 0;
}

/* A status value of 1 to 3 decimal digits, raw or Huffman coded (the digits' Huffman codes
 * are '0'-'2' 5 bits 00000-00010, '3'-'9' 6 bits 011001-011111; the rest is EOS padding,
 * fewer than 8 one bits): the number, or HP_NOCODE. */
static inline __attribute__((always_inline)) u32 smp_hp_digits(const u8 *b, u32 pos, u32 len, u8 huff)
{
    if (!len || len > 3)
        return HP_NOCODE;
    u32 code = 0;
    if (!huff) {
        for (u32 i = 0; i < 3; i++) {
            if (i >= len)
                break;
            u8 c = HP_B(b, pos + i);
            if (c < '0' || c > '9')
                return HP_NOCODE;
            code = code * 10 + (c - '0');
        }
        return code;
    }
    u32 bits = 0, nb = 0, nd = 0;
    for (u32 i = 0; i < 3; i++) {
        if (i >= len)
            break;
        bits = bits << 8 | HP_B(b, pos + i);
        nb += 8;
    }
    for (int i = 0; i < 4; i++) {
        if (nb < 5 || nb > 24)
            break;
        u32 v5 = (bits >> (nb - 5)) & 0x1f;
        if (v5 <= 2) {
            code = code * 10 + v5;
            nb -= 5;
            nd++;
            continue;
        }
        if (nb < 6)
            break;
        u32 v6 = (bits >> (nb - 6)) & 0x3f;
        if (v6 < 0x19 || v6 > 0x1f)
            break;
        code = code * 10 + (v6 - 0x16);
        nb -= 6;
        nd++;
    }
    if (!nd || nb >= 8)
        return HP_NOCODE;
    u32 mask = (1u << nb) - 1;
    return (bits & mask) == mask ? code : HP_NOCODE;
}

/* A literal name: :status or grpc-status (raw or Huffman), else another header. */
static inline __attribute__((always_inline)) u8 smp_hp_name(const u8 *b, u32 pos, u32 len, u8 huff)
{
    if (huff && len == 8) {  /* Huffman "grpc-status": 9a ca c8 b2 12 34 da 8f */
        return HP_B(b, pos) == 0x9a && HP_B(b, pos + 1) == 0xca && HP_B(b, pos + 2) == 0xc8 &&
                       HP_B(b, pos + 3) == 0xb2 && HP_B(b, pos + 4) == 0x12 &&
                       HP_B(b, pos + 5) == 0x34 && HP_B(b, pos + 6) == 0xda &&
                       HP_B(b, pos + 7) == 0x8f
                   ? HP_K_GRPC
                   : HP_K_OTHER;
    }
    if (!huff && len == 11) {
        return HP_B(b, pos) == 'g' && HP_B(b, pos + 1) == 'r' && HP_B(b, pos + 2) == 'p' &&
                       HP_B(b, pos + 3) == 'c' && HP_B(b, pos + 4) == '-' &&
                       HP_B(b, pos + 5) == 's' && HP_B(b, pos + 6) == 't' &&
                       HP_B(b, pos + 7) == 'a' && HP_B(b, pos + 8) == 't' &&
                       HP_B(b, pos + 9) == 'u' && HP_B(b, pos + 10) == 's'
                   ? HP_K_GRPC
                   : HP_K_OTHER;
    }
    if (huff && len == 5) {  /* Huffman ":status": b8 84 8d 36 a3 */
        return HP_B(b, pos) == 0xb8 && HP_B(b, pos + 1) == 0x84 && HP_B(b, pos + 2) == 0x8d &&
                       HP_B(b, pos + 3) == 0x36 && HP_B(b, pos + 4) == 0xa3
                   ? HP_K_STATUS
                   : HP_K_OTHER;
    }
    if (!huff && len == 7) {
        return HP_B(b, pos) == ':' && HP_B(b, pos + 1) == 's' && HP_B(b, pos + 2) == 't' &&
                       HP_B(b, pos + 6) == 's'
                   ? HP_K_STATUS
                   : HP_K_OTHER;
    }
    return HP_K_OTHER;
}

/* Dynamic index 62 + j: kind << 12 | code of a status entry, HP_K_OTHER << 12 for a known
 * other header, HP_K_UNKNOWN << 12 when it cannot be told. */
static inline __attribute__((always_inline)) u32 smp_hp_dyn(struct smp_hpack *h, u32 j)
{
    if (j >= h->ins)
        return HP_K_UNKNOWN << 12;
    u32 t = h->ins - 1 - j;
    if (t < h->floor)
        return HP_K_UNKNOWN << 12;
    for (int i = 0; i < SMP_HP_SLOTS; i++)
        if (h->kc[i] && h->seq[i] == t)
            return h->kc[i];
    return HP_K_OTHER << 12;
}

static inline __attribute__((always_inline)) int smp_hp_insert_slot(struct smp_hpack *h, u32 kc)
{
    u32 t = h->ins++;
    if (!(kc >> 12))
        return -1;  /* no status: the count is all it needs */
    int pick = -1, oi = 0;
    u32 oldest = 0xffffffff;
    for (int i = 0; i < SMP_HP_SLOTS; i++) {
        if (!h->kc[i]) {
            if (pick < 0)
                pick = i;
        } else if (h->seq[i] < oldest) {
            oldest = h->seq[i];
            oi = i;
        }
    }
    if (pick < 0) {
        pick = oi;  /* a status entry forgotten: indexes as old as it become unknown */
        if (oldest + 1 > h->floor)
            h->floor = oldest + 1;
    }
    pick &= SMP_HP_SLOTS - 1;
    h->seq[pick] = t;
    h->kc[pick] = kc;
    return pick;
}

/* One header field at w->at: the shadow follows it, statuses go to w. */
static inline __attribute__((always_inline)) void smp_hp_field(struct smp_hpack *h, const u8 *b, u32 end,
                                                               struct smp_hp_work *w)
{
    u32 pos = w->at, idx = 0;
    u8 c = HP_B(b, pos);
    if (c & 0x80) {                     /* indexed field */
        if (smp_hp_int(b, &pos, end, 0x7f, &idx)) {
            w->bad = 1;
            return;
        }
        w->at = pos;
        u32 kc = 0;
        if (idx >= 8 && idx <= 14) {
            u32 q = idx - 8;
            w->status = q == 0 ? 200 : q == 1 ? 204 : q == 2 ? 206 : q == 3 ? 304 :
                        q == 4 ? 400 : q == 5 ? 404 : 500;
            return;
        }
        if (idx < 62)
            return;
        kc = smp_hp_dyn(h, idx - 62);
        u32 kind = kc >> 12, code = kc & 0xfff;
        if (kind == HP_K_UNKNOWN || code == HP_NOCODE)
            w->unresolved = 1;
        else if (kind == HP_K_STATUS)
            w->status = code;
        else if (kind == HP_K_GRPC)
            w->grpc = code;
        return;
    }
    if ((c & 0xe0) == 0x20) {           /* dynamic table size update */
        if (smp_hp_int(b, &pos, end, 0x1f, &idx)) {
            w->bad = 1;
            return;
        }
        w->at = pos;
        if (!idx) {                     /* emptied: the shadow is exact again */
            h->floor = h->ins;
        }
        return;
    }
    u8 insert = (c & 0xc0) == 0x40;    /* a literal, with or without indexing */
    if (smp_hp_int(b, &pos, end, insert ? 0x3f : 0x0f, &idx)) {
        w->bad = 1;
        return;
    }
    u32 kind = HP_K_OTHER, len = 0;
    if (!idx) {
        u8 huff = HP_B(b, pos) & 0x80;
        if (smp_hp_int(b, &pos, end, 0x7f, &len) || pos + len > end) {
            w->bad = 1;
            return;
        }
        kind = smp_hp_name(b, pos, len, huff);
        pos += len;
    } else if (idx >= 8 && idx <= 14) {
        kind = HP_K_STATUS;
    } else if (idx >= 62) {
        kind = smp_hp_dyn(h, idx - 62) >> 12;
    }
    u8 vh = HP_B(b, pos) & 0x80;
    u32 vpos = pos;
    if (smp_hp_int(b, &vpos, end, 0x7f, &len) || vpos + len > end) {
        w->bad = 1;
        return;
    }
    w->at = vpos + len;
    int slot = -1;
    if (insert)
        slot = smp_hp_insert_slot(h, kind << 12 | HP_NOCODE);
    if (kind == HP_K_UNKNOWN) {
        w->unresolved = 1;
    } else if (kind == HP_K_STATUS || kind == HP_K_GRPC) {
        u32 v = kind - 1;
        v &= 1;
        w->vpos[v] = vpos;
        w->vlen[v] = len;
        w->vhuff[v] = vh;
        w->vseen[v] = 1;
        w->vslot[v] = slot < 0 ? HP_NOSLOT : (u8)slot;
    }
}

/* Decode a header block's first n bytes (b), the frame's flags, and whether those n bytes
 * are its whole payload: the statuses in it (o); the shadow follows its insertions. */
static inline __attribute__((always_inline)) void smp_hp_parse(struct smp_hpack *h, const u8 *b, u32 n,
                                                               u8 flags, int whole,
                                                               struct smp_hp_out *o,
                                                               struct smp_hp_work *w)
{
    u32 pos = 0, end = n;
    if (flags & 0x08) {  /* PADDED */
        u32 padlen = HP_B(b, 0);
        pos = 1;
        if (whole)
            end = padlen < n ? n - padlen : 0;
    }
    if (flags & 0x20)    /* PRIORITY */
        pos += 5;
    __builtin_memset(w, 0, sizeof(*w));
    w->at = pos;
    w->grpc = HP_NONE;
    w->vslot[0] = HP_NOSLOT;
    w->vslot[1] = HP_NOSLOT;
    for (int i = 0; i < SMP_HP_FIELDS; i++) {
        asm volatile("" ::: "memory");
        if (w->bad || w->at >= end)
            break;
        smp_hp_field(h, b, end, w);
    }
    asm volatile("" ::: "memory");
    o->status = w->status;
    o->grpc = w->grpc;
    o->unresolved = w->unresolved;
    for (int v = 0; v < 2; v++) {
        if (!w->vseen[v])
            continue;
        u32 code = smp_hp_digits(b, w->vpos[v], w->vlen[v], w->vhuff[v]);
        u8 slot = w->vslot[v];
        if (slot != HP_NOSLOT)
            h->kc[slot & (SMP_HP_SLOTS - 1)] = (u16)((v + 1) << 12 | code);
        if (code == HP_NOCODE)
            o->unresolved = 1;
        else if (v == 0)
            o->status = code;
        else
            o->grpc = code;
    }
    if (w->bad || w->at < end || !whole || !(flags & 0x04)) {
        /* not followed to its end (cut off, more fields, CONTINUATION frames): its
         * insertions are not all counted */
        o->unresolved = 1;
        o->cut = 1;
        h->floor = h->ins;
    }
}

#endif
