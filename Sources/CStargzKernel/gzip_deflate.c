/*
 * Compress a buffer into one complete gzip member.
 *
 * Backend per level (measured, see Benchmarks/README.md "Kernel backends"):
 * libdeflate for every level. Its whole-buffer compressor beats zlib at every
 * level on both speed and size; isa-l is far faster but even its strongest
 * level is ~6% larger than zlib -9, a cost every lazy pull of an eStargz blob
 * would pay. Mapping (caller level -> libdeflate level), chosen so that each
 * caller level is at least as small as zlib at that level, and faster:
 *     1..6 -> 1..6     (libdeflate N is smaller and faster than zlib N)
 *     7, 8, 9 -> 6     (libdeflate 6 is already ~0.6% smaller than zlib -9
 *                       and ~10x faster; libdeflate 7..9 only gain ~0.3% at
 *                       up to 3.6x the time; libdeflate 4/5 sit right at the
 *                       1.01x-of-zlib-9 limit, too close to promise)
 *     10..12 -> 10..12 (libdeflate's strongest settings, ~2.5% smaller than
 *                       zlib -9, slower)
 * zlib stays only as a fallback should libdeflate fail to allocate.
 *
 * The member has the standard 10-byte header libdeflate writes (no name,
 * MTIME 0, OS 255 "unknown", as Go's compress/gzip also writes).
 */
#include "CStargzKernel.h"

#include <libdeflate.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* Caller level (index) -> libdeflate level; see the table above. */
static const int backend_levels[13] = {0, 1, 2, 3, 4, 5, 6, 6, 6, 6, 10, 11, 12};

static int backend_level(int level) { return backend_levels[level]; }

/* ------------------------------------------------------ per-thread state */

typedef struct {
    struct libdeflate_compressor *ld[13]; /* by backend level 1..12, made on first use */
} deflate_tls;

static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;

static _Thread_local deflate_tls *tls_cached;

static void tls_destroy(void *p) {
    deflate_tls *t = p;
    if (!t) return;
    for (int i = 0; i < 13; i++)
        if (t->ld[i]) libdeflate_free_compressor(t->ld[i]);
    free(t);
    tls_cached = NULL; /* runs in the exiting thread: a later call there starts afresh */
}

static void tls_key_create(void) { (void)pthread_key_create(&tls_key, tls_destroy); }

static deflate_tls *tls_get(void) {
    if (tls_cached) return tls_cached;
    pthread_once(&tls_once, tls_key_create);
    deflate_tls *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    (void)pthread_setspecific(tls_key, t);
    tls_cached = t;
    return t;
}

static struct libdeflate_compressor *compressor(int blevel) {
    deflate_tls *t = tls_get();
    if (!t) return NULL;
    if (!t->ld[blevel]) t->ld[blevel] = libdeflate_alloc_compressor(blevel);
    return t->ld[blevel];
}

/* --------------------------------------------------------------- the API */

size_t sgk_gzip_member_bound(size_t len) {
    /* Worst case of both backends: stored blocks plus framing. libdeflate's
     * own bound (independent of level) when available; zlib's otherwise. */
    size_t zbound = len + (len >> 12) + (len >> 14) + (len >> 25) + 13 + 18;
    struct libdeflate_compressor *c = compressor(1);
    size_t lbound = c ? libdeflate_gzip_compress_bound(c, len) : 0;
    /* Pure stored blocks: 5 bytes per 65535, as a floor for either backend. */
    size_t stored = len + 5 * (len / 65535 + 1) + 18 + 64;
    size_t b = zbound > lbound ? zbound : lbound;
    return b > stored ? b : stored;
}

/* zlib fallback: gzip wrapper (windowBits 31) with OS byte 255 like Go. */
static int compress_zlib(const uint8_t *src, size_t src_len, int level, uint8_t *dst, size_t cap, size_t *dst_len) {
    if (level > 9) level = 9;
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (deflateInit2(&zs, level, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK) return SGK_ERR_NOMEM;
    gz_header h;
    memset(&h, 0, sizeof h);
    h.os = 255;
    deflateSetHeader(&zs, &h);
    const size_t step = (size_t)1 << 30;
    size_t in_left = src_len, out_left = cap;
    zs.next_in = (Bytef *)src;
    zs.next_out = dst;
    int ret;
    do {
        size_t ni = in_left < step ? in_left : step, no = out_left < step ? out_left : step;
        zs.avail_in = (uInt)ni;
        zs.avail_out = (uInt)no;
        ret = deflate(&zs, ni == in_left ? Z_FINISH : Z_NO_FLUSH);
        in_left -= ni - zs.avail_in;
        out_left -= no - zs.avail_out;
        if (ret == Z_BUF_ERROR && out_left == 0) break;
    } while (ret == Z_OK || (ret == Z_BUF_ERROR && in_left));
    deflateEnd(&zs);
    if (ret != Z_STREAM_END) return out_left == 0 ? SGK_ERR_SPACE : SGK_ERR_FORMAT;
    *dst_len = cap - out_left;
    return SGK_OK;
}

int sgk_gzip_member_compress(const uint8_t *src, size_t src_len, int level,
                             uint8_t *dst, size_t dst_capacity, size_t *dst_len) {
    if ((!src && src_len) || !dst || !dst_len) return SGK_ERR_ARGUMENT;
    if (level < 1 || level > 12) return SGK_ERR_ARGUMENT;
    static const uint8_t empty[1];
    if (!src) src = empty;
    struct libdeflate_compressor *c = compressor(backend_level(level));
    if (!c) return compress_zlib(src, src_len, level, dst, dst_capacity, dst_len);
    size_t n = libdeflate_gzip_compress(c, src, src_len, dst, dst_capacity);
    if (n == 0) return SGK_ERR_SPACE; /* libdeflate's only failure: no room */
    *dst_len = n;
    return SGK_OK;
}

const char *sgk_deflate_implementation(void) { return "libdeflate"; }
