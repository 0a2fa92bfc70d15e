/*
 * gzip decoding: header parsing, whole-chunk inflate and the streaming
 * inflater.
 *
 * Whole-chunk inflate (the lazy-pull hot path) decodes one gzip member into a
 * buffer of exactly the chunk's size. libdeflate is the fast path: it decodes
 * a whole buffer ~2-3x faster than zlib (Benchmarks/README.md) but cannot stop
 * part-way, so when the member holds more than the chunk (blobs written by the
 * Go reference put tar padding and the following tar headers in the member of
 * a file's last chunk) we either decode into per-thread scratch sized by the
 * member's ISIZE trailer, or fall back to zlib, which can stop after exactly
 * dst_len bytes. zlib also classifies errors (truncated vs corrupt) better.
 *
 * The streaming inflater (whole .tar.gz scans) is plain zlib: its API is made
 * for incremental input/output, which libdeflate's is not.
 */
#include "CStargzKernel.h"

#include <libdeflate.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* Largest piece handed to zlib at once: its counters are 32-bit `uInt`. */
#define ZCHUNK ((size_t)1 << 30)
/* A member may exceed the chunk by at most this much for the ISIZE-scratch
 * path (padding + a few tar headers are far less); larger goes to zlib. */
#define SCRATCH_SLACK_MAX ((size_t)1 << 20)
/* Scratch buffers larger than this are released after use. */
#define SCRATCH_KEEP_MAX ((size_t)32 << 20)

/* ------------------------------------------------------ per-thread state */

typedef struct {
    struct libdeflate_decompressor *ld;
    z_stream zs;      /* raw inflate (windowBits -15) for the fallback */
    int zs_ready;
    uint8_t *scratch; /* libdeflate output when the member overhangs the chunk */
    size_t scratch_cap;
} inflate_tls;

static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;

static _Thread_local inflate_tls *tls_cached;

static void tls_destroy(void *p) {
    inflate_tls *t = p;
    if (!t) return;
    if (t->ld) libdeflate_free_decompressor(t->ld);
    if (t->zs_ready) inflateEnd(&t->zs);
    free(t->scratch);
    free(t);
    tls_cached = NULL; /* runs in the exiting thread: a later call there starts afresh */
}

static void tls_key_create(void) { (void)pthread_key_create(&tls_key, tls_destroy); }

/* The thread's state; the pthread key only exists to free it at thread exit. */
static inflate_tls *tls_get(void) {
    if (tls_cached) return tls_cached;
    pthread_once(&tls_once, tls_key_create);
    inflate_tls *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    (void)pthread_setspecific(tls_key, t);
    tls_cached = t;
    return t;
}

/* ------------------------------------------------------------ the header */

int sgk_gzip_header_length(const uint8_t *src, size_t src_len, size_t *header_len) {
    if ((!src && src_len) || !header_len) return SGK_ERR_ARGUMENT;
    /* Check what we have of the fixed part first, so garbage reads as FORMAT
     * even when it is short. */
    if (src_len >= 1 && src[0] != 0x1f) return SGK_ERR_FORMAT;
    if (src_len >= 2 && src[1] != 0x8b) return SGK_ERR_FORMAT;
    if (src_len >= 3 && src[2] != 8) return SGK_ERR_FORMAT; /* CM must be deflate */
    if (src_len >= 4 && (src[3] & 0xe0)) return SGK_ERR_FORMAT; /* reserved flag bits */
    if (src_len < 10) return SGK_ERR_TRUNCATED;
    uint8_t flg = src[3];
    size_t pos = 10;
    if (flg & 0x04) { /* FEXTRA: 2-byte little-endian length, then that many bytes */
        if (src_len - pos < 2) return SGK_ERR_TRUNCATED;
        size_t xlen = (size_t)src[pos] | ((size_t)src[pos + 1] << 8);
        pos += 2;
        if (src_len - pos < xlen) return SGK_ERR_TRUNCATED;
        pos += xlen;
    }
    for (int bit = 0x08; bit <= 0x10; bit <<= 1) { /* FNAME, then FCOMMENT: NUL-terminated */
        if (!(flg & bit)) continue;
        const uint8_t *nul = memchr(src + pos, 0, src_len - pos);
        if (!nul) return SGK_ERR_TRUNCATED;
        pos = (size_t)(nul - src) + 1;
    }
    if (flg & 0x02) { /* FHCRC: 2 bytes of header CRC (not verified, like Go) */
        if (src_len - pos < 2) return SGK_ERR_TRUNCATED;
        pos += 2;
    }
    *header_len = pos;
    return SGK_OK;
}

/* -------------------------------------------------------- chunk inflate */

/* zlib raw inflate of the deflate stream at in[0..in_len) until exactly
 * dst_len bytes are in dst. Stops as soon as they are: the rest of the member
 * (tar padding and headers) is never decoded. */
static int inflate_zlib_prefix(inflate_tls *t, const uint8_t *in, size_t in_len, uint8_t *dst, size_t dst_len) {
    z_stream *zs = &t->zs;
    if (!t->zs_ready) {
        memset(zs, 0, sizeof *zs);
        if (inflateInit2(zs, -15) != Z_OK) return SGK_ERR_NOMEM;
        t->zs_ready = 1;
    } else if (inflateReset(zs) != Z_OK) {
        return SGK_ERR_FORMAT;
    }
    size_t in_left = in_len, produced = 0;
    zs->next_in = (Bytef *)in;
    zs->avail_in = 0;
    while (produced < dst_len) {
        if (zs->avail_in == 0 && in_left) {
            size_t n = in_left < ZCHUNK ? in_left : ZCHUNK;
            zs->avail_in = (uInt)n;
            in_left -= n;
        }
        size_t want = dst_len - produced;
        if (want > ZCHUNK) want = ZCHUNK;
        zs->next_out = dst + produced;
        zs->avail_out = (uInt)want;
        int ret = inflate(zs, Z_SYNC_FLUSH);
        produced += want - zs->avail_out;
        switch (ret) {
        case Z_OK:
            if (zs->avail_in == 0 && in_left == 0 && produced < dst_len && zs->avail_out != 0)
                return SGK_ERR_TRUNCATED; /* all input used, output still missing */
            break;
        case Z_STREAM_END:
            return produced == dst_len ? SGK_OK : SGK_ERR_TRUNCATED;
        case Z_BUF_ERROR: /* no progress possible: input exhausted */
            return (zs->avail_in == 0 && in_left == 0) ? SGK_ERR_TRUNCATED : SGK_ERR_FORMAT;
        case Z_MEM_ERROR:
            return SGK_ERR_NOMEM;
        default: /* Z_DATA_ERROR, Z_NEED_DICT, Z_STREAM_ERROR */
            return SGK_ERR_FORMAT;
        }
    }
    return SGK_OK;
}

/* Read the 4-byte little-endian ISIZE that ends a member, if src happens to
 * end exactly at the member's end (the usual case: readers pass the span
 * between two TOC offsets). Only a hint: every use is checked. */
static uint32_t isize_hint(const uint8_t *src, size_t src_len) {
    const uint8_t *p = src + src_len - 4;
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static int decode_chunk(inflate_tls *t, const uint8_t *src, size_t src_len, uint8_t *dst, size_t dst_len) {
    size_t hl;
    int st = sgk_gzip_header_length(src, src_len, &hl);
    if (st != SGK_OK) return st;
    const uint8_t *in = src + hl;
    size_t in_len = src_len - hl;
    if (dst_len == 0) return SGK_OK; /* nothing to produce; the header was valid */

    if (!t->ld) {
        t->ld = libdeflate_alloc_decompressor();
        if (!t->ld) return SGK_ERR_NOMEM;
    }
    size_t in_used = 0, out = 0;

    /* Does the member (per its trailer) hold a little more than the chunk?
     * Then decode all of it into scratch with libdeflate and copy the prefix:
     * one fast pass instead of a failed libdeflate pass plus a zlib pass. */
    if (in_len >= 8 + 2) {
        size_t isize = isize_hint(src, src_len);
        if (isize > dst_len && isize - dst_len <= SCRATCH_SLACK_MAX) {
            if (t->scratch_cap < isize) {
                uint8_t *p = realloc(t->scratch, isize);
                if (!p) return SGK_ERR_NOMEM;
                t->scratch = p;
                t->scratch_cap = isize;
            }
            enum libdeflate_result r =
                libdeflate_deflate_decompress_ex(t->ld, in, in_len, t->scratch, isize, &in_used, &out);
            int done = (r == LIBDEFLATE_SUCCESS && out >= dst_len);
            if (done) memcpy(dst, t->scratch, dst_len);
            if (t->scratch_cap > SCRATCH_KEEP_MAX) {
                free(t->scratch);
                t->scratch = NULL;
                t->scratch_cap = 0;
            }
            if (done) return SGK_OK;
            if (r == LIBDEFLATE_SUCCESS) return SGK_ERR_TRUNCATED; /* stream ended early */
            /* Wrong hint or bad data: zlib decides below. */
            return inflate_zlib_prefix(t, in, in_len, dst, dst_len);
        }
    }

    /* Straight into dst: succeeds when the member holds exactly the chunk. */
    enum libdeflate_result r = libdeflate_deflate_decompress_ex(t->ld, in, in_len, dst, dst_len, &in_used, &out);
    if (r == LIBDEFLATE_SUCCESS) return out == dst_len ? SGK_OK : SGK_ERR_TRUNCATED;
    /* INSUFFICIENT_SPACE: the member is longer than the chunk (normal).
     * BAD_DATA: corrupt or truncated input; zlib tells which. Either way zlib
     * re-decodes from the start and stops at dst_len. */
    return inflate_zlib_prefix(t, in, in_len, dst, dst_len);
}

int sgk_chunk_inflate(const uint8_t *src, size_t src_len,
                      uint8_t *dst, size_t dst_len,
                      const uint8_t *expected_sha256, uint8_t *actual_sha256) {
    if ((!src && src_len) || (!dst && dst_len)) return SGK_ERR_ARGUMENT;
    inflate_tls *t = tls_get();
    if (!t) return SGK_ERR_NOMEM;
    int st = decode_chunk(t, src, src_len, dst, dst_len);
    if (st != SGK_OK) return st;
    if (!expected_sha256 && !actual_sha256) return SGK_OK;
    uint8_t digest[32];
    sgk_sha256(dst, dst_len, digest);
    if (actual_sha256) memcpy(actual_sha256, digest, 32);
    if (expected_sha256 && memcmp(expected_sha256, digest, 32) != 0) return SGK_ERR_DIGEST;
    return SGK_OK;
}

int sgk_gzip_member_inflate(const uint8_t *src, size_t src_len, uint8_t *dst, size_t dst_len) {
    if ((!src && src_len) || (!dst && dst_len)) return SGK_ERR_ARGUMENT;
    inflate_tls *t = tls_get();
    if (!t) return SGK_ERR_NOMEM;
    if (!t->ld) {
        t->ld = libdeflate_alloc_decompressor();
        if (!t->ld) return SGK_ERR_NOMEM;
    }
    size_t in_used = 0, out = 0;
    /* libdeflate parses the header (optional fields included) and checks the
     * trailer's CRC-32 and ISIZE against what it produced. */
    enum libdeflate_result r = libdeflate_gzip_decompress_ex(t->ld, src, src_len, dst, dst_len, &in_used, &out);
    switch (r) {
    case LIBDEFLATE_SUCCESS:
        if (out != dst_len) return SGK_ERR_TRUNCATED;
        return in_used == src_len ? SGK_OK : SGK_ERR_FORMAT; /* bytes after the member */
    case LIBDEFLATE_INSUFFICIENT_SPACE: return SGK_ERR_SPACE;
    case LIBDEFLATE_SHORT_OUTPUT: return SGK_ERR_TRUNCATED;
    default: return SGK_ERR_FORMAT;
    }
}

const char *sgk_inflate_implementation(void) { return "libdeflate (chunks), zlib (streaming, partial members)"; }

/* ---------------------------------------------------- streaming inflater */

struct sgk_inflater {
    z_stream zs;       /* windowBits 16+15: gzip wrapper, checks CRC32 and ISIZE */
    uint64_t total_out;
    int at_boundary;   /* a member ended and nothing of the next was consumed yet */
};

sgk_inflater *sgk_inflater_new(void) {
    sgk_inflater *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    if (inflateInit2(&f->zs, 16 + 15) != Z_OK) {
        free(f);
        return NULL;
    }
    return f;
}

void sgk_inflater_free(sgk_inflater *f) {
    if (!f) return;
    inflateEnd(&f->zs);
    free(f);
}

uint64_t sgk_inflater_total_out(const sgk_inflater *f) { return f ? f->total_out : 0; }

int sgk_inflater_step(sgk_inflater *f,
                      const uint8_t *in, size_t in_len, size_t *in_used,
                      uint8_t *out, size_t out_len, size_t *out_used,
                      int *stream_end) {
    if (!f || (!in && in_len) || (!out && out_len) || !in_used || !out_used || !stream_end) return SGK_ERR_ARGUMENT;
    static uint8_t dummy; /* zlib rejects NULL next_out even with avail_out 0 */
    size_t ic = 0, oc = 0;
    int status = SGK_OK;
    for (;;) {
        size_t ia = in_len - ic, oa = out_len - oc;
        if (ia > ZCHUNK) ia = ZCHUNK;
        if (oa > ZCHUNK) oa = ZCHUNK;
        f->zs.next_in = (Bytef *)(in ? in + ic : &dummy);
        f->zs.avail_in = (uInt)ia;
        f->zs.next_out = out ? out + oc : &dummy;
        f->zs.avail_out = (uInt)oa;
        int ret = inflate(&f->zs, Z_NO_FLUSH);
        size_t di = ia - f->zs.avail_in, dout = oa - f->zs.avail_out;
        ic += di;
        oc += dout;
        f->total_out += dout;
        if (ret == Z_STREAM_END) {
            /* Member complete (CRC and ISIZE checked). Get ready for the next
             * concatenated member; continue now if input remains. */
            f->at_boundary = 1;
            if (inflateReset(&f->zs) != Z_OK) { status = SGK_ERR_FORMAT; break; }
            if (ic == in_len) break;
            continue;
        }
        if (di) f->at_boundary = 0; /* bytes of the next member were consumed */
        if (ret == Z_OK) {
            /* Input used up, output full, or stuck: done. Otherwise only a
             * >1 GiB piece was handed over; feed the next one. */
            if (ic == in_len || oc == out_len || !(di || dout)) break;
            continue;
        }
        if (ret == Z_BUF_ERROR) break; /* no progress possible with this input/output */
        status = (ret == Z_MEM_ERROR) ? SGK_ERR_NOMEM : SGK_ERR_FORMAT;
        break;
    }
    /* An error after this call already produced or consumed bytes is reported
     * by the next call (zlib's error state is sticky), so the caller first
     * gets the good bytes that precede the damage. */
    if (status != SGK_OK && (ic || oc)) status = SGK_OK;
    *in_used = ic;
    *out_used = oc;
    *stream_end = (status == SGK_OK && f->at_boundary) ? 1 : 0;
    return status;
}
