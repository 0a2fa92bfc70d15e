/*
 * zstd frames via libzstd (eStargz's zstd:chunked variant).
 * Contexts are cached per thread: creating a ZSTD_CCtx costs more than
 * compressing a small chunk.
 */
#include "CStargzKernel.h"

#include <pthread.h>
#include <stdlib.h>
#include <zstd.h>
#include <zstd_errors.h>

typedef struct {
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
} zstd_tls;

static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;

static _Thread_local zstd_tls *tls_cached;

static void tls_destroy(void *p) {
    zstd_tls *t = p;
    if (!t) return;
    ZSTD_freeCCtx(t->cctx);
    ZSTD_freeDCtx(t->dctx);
    free(t);
    tls_cached = NULL; /* runs in the exiting thread: a later call there starts afresh */
}

static void tls_key_create(void) { (void)pthread_key_create(&tls_key, tls_destroy); }

static zstd_tls *tls_get(void) {
    if (tls_cached) return tls_cached;
    pthread_once(&tls_once, tls_key_create);
    zstd_tls *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    (void)pthread_setspecific(tls_key, t);
    tls_cached = t;
    return t;
}

static int zstd_error_status(size_t r) {
    switch (ZSTD_getErrorCode(r)) {
    case ZSTD_error_memory_allocation: return SGK_ERR_NOMEM;
    case ZSTD_error_dstSize_tooSmall: return SGK_ERR_SPACE;
    default: return SGK_ERR_FORMAT;
    }
}

size_t sgk_zstd_bound(size_t len) { return ZSTD_compressBound(len); }

int sgk_zstd_compress(const uint8_t *src, size_t src_len, int level,
                      uint8_t *dst, size_t dst_capacity, size_t *dst_len) {
    static const uint8_t empty[1];
    if ((!src && src_len) || !dst || !dst_len) return SGK_ERR_ARGUMENT;
    if (level < ZSTD_minCLevel() || level > ZSTD_maxCLevel()) return SGK_ERR_ARGUMENT;
    zstd_tls *t = tls_get();
    if (!t) return SGK_ERR_NOMEM;
    if (!t->cctx && !(t->cctx = ZSTD_createCCtx())) return SGK_ERR_NOMEM;
    size_t n = ZSTD_compressCCtx(t->cctx, dst, dst_capacity, src ? src : empty, src_len, level);
    if (ZSTD_isError(n)) return zstd_error_status(n);
    *dst_len = n;
    return SGK_OK;
}


int sgk_zstd_decompress(const uint8_t *src, size_t src_len, uint8_t *dst, size_t dst_len) {
    static uint8_t empty[1];
    if ((!src && src_len) || (!dst && dst_len)) return SGK_ERR_ARGUMENT;
    zstd_tls *t = tls_get();
    if (!t) return SGK_ERR_NOMEM;
    if (!t->dctx && !(t->dctx = ZSTD_createDCtx())) return SGK_ERR_NOMEM;
    ZSTD_DCtx_reset(t->dctx, ZSTD_reset_session_only);

    /* Streaming decode bounded by both buffers: a one-shot call would need the
     * frame's content size, which frames need not carry. The stream API stops
     * at the end of the first frame (returns 0). */
    ZSTD_inBuffer in = {src ? src : empty, src_len, 0};
    ZSTD_outBuffer out = {dst ? dst : empty, dst_len, 0};
    for (;;) {
        size_t before_in = in.pos, before_out = out.pos;
        size_t r = ZSTD_decompressStream(t->dctx, &out, &in);
        if (ZSTD_isError(r)) return zstd_error_status(r);
        if (r == 0) return out.pos == dst_len ? SGK_OK : SGK_ERR_TRUNCATED; /* frame complete */
        if (out.pos == out.size) break; /* dst full, frame not finished */
        if (in.pos == before_in && out.pos == before_out) return SGK_ERR_TRUNCATED; /* input ended */
    }
    /* dst is full but the frame has not ended: either it only lacks its
     * epilogue (checksum / last empty block) or it holds more bytes than dst.
     * Decode into a 1-byte probe to tell which. */
    uint8_t probe;
    for (;;) {
        ZSTD_outBuffer po = {&probe, 1, 0};
        size_t before_in = in.pos;
        size_t r = ZSTD_decompressStream(t->dctx, &po, &in);
        if (ZSTD_isError(r)) return zstd_error_status(r);
        if (po.pos) return SGK_ERR_SPACE;       /* the frame has more content than dst */
        if (r == 0) return SGK_OK;              /* frame ended exactly at dst_len */
        if (in.pos == before_in) return SGK_ERR_TRUNCATED; /* no progress: input ended */
    }
}
