/*
 * zstd frames via libzstd (zstd:chunked layers).
 *
 * Compression is libzstd's one-shot ZSTD_compressCCtx (content size in the
 * frame header, no checksum: every chunk carries a SHA-256 in the TOC).
 *
 * Decoding uses libzstd's buffer-less API (ZSTD_decompressContinue): blocks
 * are decoded straight into the caller's buffer, so there is no window buffer
 * to allocate (a frame that declares a huge window costs nothing) and no copy
 * out of one, and each block is hashed while it is still in cache. Only the
 * block that crosses the end of the buffer goes to per-thread scratch, of which
 * the needed prefix is copied. Decoding stops once the buffer is full: a zstd
 * bomb can never make us produce, allocate or hash more than the caller asked.
 *
 * Contexts are cached per thread: creating a ZSTD_CCtx costs more than
 * compressing a small chunk.
 */
#include "CStargzKernel.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* The buffer-less decoding API (ZSTD_decompressBegin/Continue,
 * ZSTD_nextSrcSizeToDecompress) is exported by the shared libzstd (>= 1.4) but
 * declared only in the "static linking" section of zstd.h. */
#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>
#include <zstd_errors.h>

/* Largest decoded size of one zstd block (ZSTD_BLOCKSIZE_MAX). */
#define BLOCK_MAX ((size_t)128 << 10)
/* Scratch: a block that does not fit in what is left of dst, appended after
 * earlier such blocks so the decoder's history stays contiguous. */
#define SCRATCH_SIZE (2 * BLOCK_MAX)

typedef struct {
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
    uint8_t *scratch;
} zstd_tls;

static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;

static _Thread_local zstd_tls *tls_cached;

static void tls_destroy(void *p) {
    zstd_tls *t = p;
    if (!t) return;
    ZSTD_freeCCtx(t->cctx);
    ZSTD_freeDCtx(t->dctx);
    free(t->scratch);
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
    case ZSTD_error_srcSize_wrong: return SGK_ERR_TRUNCATED;
    default: return SGK_ERR_FORMAT;
    }
}

size_t sgk_zstd_bound(size_t len) { return ZSTD_compressBound(len); }

int sgk_zstd_level_range(int *min_level, int *max_level) {
    if (!min_level || !max_level) return SGK_ERR_ARGUMENT;
    *min_level = ZSTD_minCLevel();
    *max_level = ZSTD_maxCLevel();
    return SGK_OK;
}

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

/* Decode the zstd frame at src[0..src_len) into dst[0..dst_len) block by
 * block, hashing each block's bytes into sha (when non-NULL) as they appear.
 * exact == 0: stop as soon as dst is full (the frame may hold more: tar
 *             padding and the next headers after a chunk); SGK_ERR_TRUNCATED
 *             if the frame or the input ends first.
 * exact == 1: the frame must hold exactly dst_len bytes: after dst is full the
 *             rest of the frame is decoded into scratch (its checksum checked
 *             when it has one) and any further byte is SGK_ERR_SPACE. */
static int decode_frame(zstd_tls *t, const uint8_t *src, size_t src_len, uint8_t *dst, size_t dst_len,
                        sgk_sha256_ctx *sha, int exact, size_t *consumed) {
    static const uint8_t zstd_magic[4] = {0x28, 0xb5, 0x2f, 0xfd};
    if (src_len < 4) return src_len && memcmp(src, zstd_magic, src_len) ? SGK_ERR_FORMAT : SGK_ERR_TRUNCATED;
    if (memcmp(src, zstd_magic, 4) != 0) return SGK_ERR_FORMAT; /* skippable frames are not chunks */
    if (!t->dctx && !(t->dctx = ZSTD_createDCtx())) return SGK_ERR_NOMEM;
    if (!t->scratch && !(t->scratch = malloc(SCRATCH_SIZE))) return SGK_ERR_NOMEM;
    size_t r = ZSTD_decompressBegin(t->dctx);
    if (ZSTD_isError(r)) return zstd_error_status(r);

    size_t pos = 0, produced = 0, scratch_used = 0;
    int in_scratch = 0;
    for (;;) {
        size_t need = ZSTD_nextSrcSizeToDecompress(t->dctx);
        if (need == 0) { /* the frame ended */
            if (consumed) *consumed = pos;
            return produced == dst_len ? SGK_OK : SGK_ERR_TRUNCATED;
        }
        if (!exact && produced == dst_len) return SGK_OK;
        if (src_len - pos < need) return SGK_ERR_TRUNCATED;
        /* Straight into dst while a whole block fits; then scratch, appended
         * so the history the next block may refer to stays where it was. */
        size_t room = dst_len - produced;
        if (!in_scratch && room < BLOCK_MAX) in_scratch = 1;
        if (in_scratch && SCRATCH_SIZE - scratch_used < BLOCK_MAX) {
            /* Only in exact mode, once dst is full: history is no longer
             * needed for output we keep, but decoding must go on to find the
             * frame's end; anything produced is already too much. */
            return SGK_ERR_SPACE;
        }
        uint8_t *out = in_scratch ? t->scratch + scratch_used : dst + produced;
        size_t cap = in_scratch ? SCRATCH_SIZE - scratch_used : room;
        size_t n = ZSTD_decompressContinue(t->dctx, out, cap, src + pos, need);
        if (ZSTD_isError(n)) return zstd_error_status(n);
        pos += need;
        if (n == 0) continue;
        size_t keep = n;
        if (in_scratch) {
            keep = n < room ? n : room;
            if (keep) memcpy(dst + produced, out, keep);
            scratch_used += n;
            if (exact && n > keep) return SGK_ERR_SPACE; /* more content than dst holds */
        }
        if (sha && keep) sgk_sha256_update(sha, dst + produced, keep);
        produced += keep;
    }
}

int sgk_zstd_chunk_decompress(const uint8_t *src, size_t src_len,
                              uint8_t *dst, size_t dst_len,
                              const uint8_t *expected_sha256, uint8_t *actual_sha256) {
    if ((!src && src_len) || (!dst && dst_len)) return SGK_ERR_ARGUMENT;
    zstd_tls *t = tls_get();
    if (!t) return SGK_ERR_NOMEM;
    sgk_sha256_ctx sha;
    int want_hash = expected_sha256 || actual_sha256;
    if (want_hash) sgk_sha256_init(&sha);
    int st = decode_frame(t, src, src_len, dst, dst_len, want_hash ? &sha : NULL, 0, NULL);
    if (st != SGK_OK) return st;
    if (!want_hash) return SGK_OK;
    uint8_t digest[32];
    sgk_sha256_final(&sha, digest);
    if (actual_sha256) memcpy(actual_sha256, digest, 32);
    if (expected_sha256 && memcmp(expected_sha256, digest, 32) != 0) return SGK_ERR_DIGEST;
    return SGK_OK;
}

int sgk_zstd_decompress(const uint8_t *src, size_t src_len, uint8_t *dst, size_t dst_len) {
    if ((!src && src_len) || (!dst && dst_len)) return SGK_ERR_ARGUMENT;
    zstd_tls *t = tls_get();
    if (!t) return SGK_ERR_NOMEM;
    size_t consumed = 0;
    int st = decode_frame(t, src, src_len, dst, dst_len, NULL, 1, &consumed);
    if (st != SGK_OK) return st;
    return consumed == src_len ? SGK_OK : SGK_ERR_FORMAT; /* bytes after the frame */
}

int sgk_zstd_frame_content_size(const uint8_t *src, size_t src_len, uint64_t *size) {
    static const uint8_t zstd_magic[4] = {0x28, 0xb5, 0x2f, 0xfd};
    if ((!src && src_len) || !size) return SGK_ERR_ARGUMENT;
    if (src_len == 0) return SGK_ERR_TRUNCATED;
    if (memcmp(src, zstd_magic, src_len < 4 ? src_len : 4) != 0) return SGK_ERR_FORMAT;
    if (src_len < 4) return SGK_ERR_TRUNCATED;
    unsigned long long n = ZSTD_getFrameContentSize(src, src_len);
    if (n == ZSTD_CONTENTSIZE_ERROR) return src_len < ZSTD_FRAMEHEADERSIZE_MAX ? SGK_ERR_TRUNCATED : SGK_ERR_FORMAT;
    *size = n == ZSTD_CONTENTSIZE_UNKNOWN ? UINT64_MAX : (uint64_t)n;
    return SGK_OK;
}

const char *sgk_zstd_implementation(void) { return ZSTD_versionString(); }
