/*
 * CStargzKernel: the hot path of swift-estargz, in C.
 *
 * Whole-chunk inflate of gzip members, streaming inflate, deflate into gzip
 * members, SHA-256 (SHA-NI where the CPU has it), zstd frames and xxhash.
 * This header is the kernel's only public interface; it knows nothing of Swift,
 * TOCs or tar. Every function is thread-safe (per-thread scratch state only).
 */
#ifndef CSTARGZKERNEL_H
#define CSTARGZKERNEL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes returned by every fallible kernel function. */
typedef enum {
    SGK_OK = 0,
    SGK_ERR_FORMAT = -1,     /* not a gzip member / zstd frame, or corrupt compressed data */
    SGK_ERR_TRUNCATED = -2,  /* input ended before the requested output was produced */
    SGK_ERR_DIGEST = -3,     /* SHA-256 of the produced bytes differs from the expected one */
    SGK_ERR_NOMEM = -4,      /* allocation failed */
    SGK_ERR_ARGUMENT = -5,   /* invalid argument (NULL pointer, bad level, ...) */
    SGK_ERR_SPACE = -6,      /* output buffer too small */
} sgk_status;

/* Human-readable name of a status code (static string). */
const char *sgk_status_string(int status);

/* ---------------------------------------------------------------- SHA-256 */

/* Incremental SHA-256. Opaque storage big enough for any backend.
 * The typedef is named sgk_sha256_ctx because in C an ordinary identifier
 * (the typedef) cannot share the name of the one-shot function sgk_sha256;
 * the struct tag stays `struct sgk_sha256`, so the ABI is unchanged. */
typedef struct sgk_sha256 {
    uint64_t opaque[32];
} sgk_sha256_ctx;

void sgk_sha256_init(sgk_sha256_ctx *ctx);
void sgk_sha256_update(sgk_sha256_ctx *ctx, const void *data, size_t len);
void sgk_sha256_final(sgk_sha256_ctx *ctx, uint8_t digest[32]);
void sgk_sha256(const void *data, size_t len, uint8_t digest[32]);
/* Which implementation runs on this CPU, e.g. "sha-ni", "openssl", "portable". */
const char *sgk_sha256_implementation(void);
/* Cross-check: every available implementation (SHA-NI, portable) gives the
 * same digests for all lengths 0..1100 of a fixed pattern and the NIST "abc"
 * vector. SGK_OK or SGK_ERR_DIGEST. */
int sgk_sha256_selftest(void);

/* ------------------------------------------------------------- gzip/deflate */

/* Length of the gzip member header (RFC 1952, with FEXTRA/FNAME/FCOMMENT/FHCRC)
 * at src. SGK_ERR_TRUNCATED if src ends inside the header. */
int sgk_gzip_header_length(const uint8_t *src, size_t src_len, size_t *header_len);

/* Whole-chunk inflate: decode the gzip member starting at src (header included)
 * until exactly dst_len bytes are produced into dst. The member may hold more
 * uncompressed bytes than dst_len (tar padding and following headers); those
 * are not needed and not produced. src_len bounds how far the decoder may read.
 * If expected_sha256 is non-NULL, the SHA-256 of dst[0..dst_len) is compared
 * with it and SGK_ERR_DIGEST returned on mismatch (dst then holds unverified
 * bytes the caller must not use). If actual_sha256 is non-NULL it receives the
 * digest. Never writes beyond dst_len. */
int sgk_chunk_inflate(const uint8_t *src, size_t src_len,
                      uint8_t *dst, size_t dst_len,
                      const uint8_t *expected_sha256, uint8_t *actual_sha256);

/* Whole-member inflate with the trailer checked: decode the one gzip member
 * that spans exactly src[0..src_len) (header included) into dst, which must be
 * exactly its uncompressed size (callers take it from the trailer's ISIZE, after
 * bounding it). The trailer's CRC-32 and ISIZE are checked. SGK_ERR_SPACE if the
 * member holds more than dst_len bytes, SGK_ERR_TRUNCATED if fewer, SGK_ERR_FORMAT
 * if the data is corrupt, the CRC-32 or ISIZE does not match, or bytes follow the
 * member. dst holds unchecked bytes after an error. */
int sgk_gzip_member_inflate(const uint8_t *src, size_t src_len, uint8_t *dst, size_t dst_len);

/* Streaming inflate of one or more concatenated gzip members (a .tar.gz or a
 * whole eStargz blob). */
typedef struct sgk_inflater sgk_inflater;
sgk_inflater *sgk_inflater_new(void);
void sgk_inflater_free(sgk_inflater *inflater);
/* Feed up to in_len bytes and produce up to out_len bytes. *in_used and
 * *out_used receive what was consumed / produced. *stream_end is set to 1 when
 * a member ended exactly at the end of the consumed input and no partial member
 * is pending (the caller decides whether more members follow: call again with
 * more input to continue with the next member). Returns SGK_OK or an error;
 * an error met after this call already consumed or produced bytes is returned
 * by the next call instead, so the good bytes before the damage are delivered. */
int sgk_inflater_step(sgk_inflater *inflater,
                      const uint8_t *in, size_t in_len, size_t *in_used,
                      uint8_t *out, size_t out_len, size_t *out_used,
                      int *stream_end);
/* Total uncompressed bytes produced so far. */
uint64_t sgk_inflater_total_out(const sgk_inflater *inflater);

/* Upper bound of the compressed size of a gzip member holding len bytes. */
size_t sgk_gzip_member_bound(size_t len);
/* Compress src into one complete gzip member (10-byte header, no name, OS=255
 * like Go's compress/gzip) at level 1..12 (levels above 9 use the strongest
 * settings of the backend). */
int sgk_gzip_member_compress(const uint8_t *src, size_t src_len, int level,
                             uint8_t *dst, size_t dst_capacity, size_t *dst_len);
/* Which deflate backends are used, e.g. "libdeflate" / "zlib". */
const char *sgk_deflate_implementation(void);
const char *sgk_inflate_implementation(void);

/* -------------------------------------------------------------------- zstd */

/* Upper bound of the compressed size of a zstd frame holding len bytes. */
size_t sgk_zstd_bound(size_t len);
/* The compression levels this libzstd accepts (negative levels are faster). */
int sgk_zstd_level_range(int *min_level, int *max_level);
/* Compress src into one complete zstd frame (content size in the header, no
 * checksum) at level (see sgk_zstd_level_range; 3 is zstd's default). */
int sgk_zstd_compress(const uint8_t *src, size_t src_len, int level,
                      uint8_t *dst, size_t dst_capacity, size_t *dst_len);
/* Whole-chunk decode, the zstd twin of sgk_chunk_inflate: decode the zstd
 * frame starting at src until exactly dst_len bytes are produced into dst,
 * hashing them with SHA-256 block by block as they are decoded. The frame may
 * hold more bytes than dst_len (tar padding and the next headers); they are
 * neither produced nor buffered, so no frame can make this produce or allocate
 * more than dst_len bytes. SGK_ERR_TRUNCATED if the frame or src ends first,
 * SGK_ERR_FORMAT if src is not a zstd frame or is corrupt, SGK_ERR_DIGEST if
 * expected_sha256 is given and differs (dst then holds unverified bytes). The
 * digest goes to actual_sha256 when non-NULL. Never writes beyond dst_len. */
int sgk_zstd_chunk_decompress(const uint8_t *src, size_t src_len,
                              uint8_t *dst, size_t dst_len,
                              const uint8_t *expected_sha256, uint8_t *actual_sha256);
/* Whole-frame decode: src[0..src_len) is exactly one zstd frame holding
 * exactly dst_len bytes (its checksum, when it has one, is checked).
 * SGK_ERR_SPACE if it holds more (decoding stops at the first byte too many:
 * a bomb costs nothing), SGK_ERR_TRUNCATED if fewer or src ends inside it,
 * SGK_ERR_FORMAT if corrupt or bytes follow the frame. */
int sgk_zstd_decompress(const uint8_t *src, size_t src_len,
                        uint8_t *dst, size_t dst_len);
/* The content size a zstd frame header declares: *size = UINT64_MAX when the
 * header does not say. SGK_ERR_FORMAT if src does not start with a valid zstd
 * frame header, SGK_ERR_TRUNCATED if it ends inside it. */
int sgk_zstd_frame_content_size(const uint8_t *src, size_t src_len, uint64_t *size);
/* The libzstd version in use, e.g. "1.5.4". */
const char *sgk_zstd_implementation(void);

/* ------------------------------------------------------------------ memory */

/* Hints that the cache line at p will be read soon (a prefetch: no effect on
 * results, never faults). For hash-table inserts made a few entries later. */
void sgk_prefetch(const void *p);

/* ------------------------------------------------------------------ xxhash */

uint64_t sgk_xxh64(const void *data, size_t len, uint64_t seed);
uint64_t sgk_xxh3_64(const void *data, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* CSTARGZKERNEL_H */
