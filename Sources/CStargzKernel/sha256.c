/*
 * SHA-256 (FIPS 180-4).
 *
 * Two block functions:
 *   - SHA-NI (x86 SHA extensions), compiled with a per-function target
 *     attribute so the file needs no global -msha, and selected at run time
 *     through CPUID;
 *   - a portable C fallback for every other CPU.
 * Measured on the development machine (see Benchmarks/README.md), this SHA-NI
 * code runs at the same speed as OpenSSL 3's libcrypto (which also uses SHA-NI),
 * so the kernel keeps its own implementation and does not link libcrypto:
 * one fewer dependency and no EVP allocation per digest.
 */
#include "CStargzKernel.h"
#include "sgk_internal.h"

#include <stdatomic.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#define SGK_HAVE_X86 1
#include <cpuid.h>
#include <immintrin.h>
#endif

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static const uint32_t H0[8] = {
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};

/* ------------------------------------------------------------ portable C */

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static inline uint32_t load_be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

void sgk__sha256_blocks_portable(uint32_t state[8], const uint8_t *data, size_t nblocks) {
    while (nblocks--) {
        uint32_t w[64];
        for (int i = 0; i < 16; i++) w[i] = load_be32(data + 4 * i);
        for (int i = 16; i < 64; i++) {
            uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
            uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
        uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
        for (int i = 0; i < 64; i++) {
            uint32_t t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
            uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
            h = g; g = f; f = e; e = d + t1;
            d = c; c = b; b = a; a = t1 + t2;
        }
        state[0] += a; state[1] += b; state[2] += c; state[3] += d;
        state[4] += e; state[5] += f; state[6] += g; state[7] += h;
        data += 64;
    }
}

/* ---------------------------------------------------------------- SHA-NI */

#ifdef SGK_HAVE_X86
/*
 * The SHA-NI instructions keep the state as two vectors, ABEF and CDGH, and
 * do two rounds per sha256rnds2 (the round constants already added to the
 * message words). Message schedule: sha256msg1 computes W[i]+s0(W[i+1]),
 * an alignr supplies W[i+9], sha256msg2 adds s1(W[i+14]).
 */
#define SHANI_TARGET __attribute__((target("sha,sse4.1,ssse3")))

/* Four rounds of group g (rounds 4g..4g+3) using message vector W. */
#define RNDS4(W, g)                                                                 \
    do {                                                                            \
        MSG = _mm_add_epi32((W), _mm_loadu_si128((const __m128i *)&K256[4 * (g)])); \
        STATE1 = _mm_sha256rnds2_epu32(STATE1, STATE0, MSG);                        \
        MSG = _mm_shuffle_epi32(MSG, 0x0E);                                         \
        STATE0 = _mm_sha256rnds2_epu32(STATE0, STATE1, MSG);                        \
    } while (0)
/* Finish the next group's words: Wn += W[i+9..] (from Wp:Wc), then s1 terms. */
#define SCHED(Wn, Wc, Wp)                                   \
    do {                                                    \
        TMP = _mm_alignr_epi8((Wc), (Wp), 4);               \
        Wn = _mm_add_epi32((Wn), TMP);                      \
        Wn = _mm_sha256msg2_epu32((Wn), (Wc));              \
    } while (0)
#define MSG1(Wp, Wc) (Wp) = _mm_sha256msg1_epu32((Wp), (Wc))

SHANI_TARGET
static void sha256_blocks_shani(uint32_t state[8], const uint8_t *data, size_t nblocks) {
    const __m128i MASK = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i STATE0, STATE1, MSG, TMP, W0, W1, W2, W3, ABEF_SAVE, CDGH_SAVE;

    TMP = _mm_loadu_si128((const __m128i *)&state[0]);
    STATE1 = _mm_loadu_si128((const __m128i *)&state[4]);
    TMP = _mm_shuffle_epi32(TMP, 0xB1);          /* CDAB */
    STATE1 = _mm_shuffle_epi32(STATE1, 0x1B);    /* EFGH */
    STATE0 = _mm_alignr_epi8(TMP, STATE1, 8);    /* ABEF */
    STATE1 = _mm_blend_epi16(STATE1, TMP, 0xF0); /* CDGH */

    while (nblocks--) {
        ABEF_SAVE = STATE0;
        CDGH_SAVE = STATE1;

        W0 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(data + 0)), MASK);
        RNDS4(W0, 0);
        W1 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(data + 16)), MASK);
        RNDS4(W1, 1); MSG1(W0, W1);
        W2 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(data + 32)), MASK);
        RNDS4(W2, 2); MSG1(W1, W2);
        W3 = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(data + 48)), MASK);
        RNDS4(W3, 3); SCHED(W0, W3, W2); MSG1(W2, W3);
        RNDS4(W0, 4); SCHED(W1, W0, W3); MSG1(W3, W0);
        RNDS4(W1, 5); SCHED(W2, W1, W0); MSG1(W0, W1);
        RNDS4(W2, 6); SCHED(W3, W2, W1); MSG1(W1, W2);
        RNDS4(W3, 7); SCHED(W0, W3, W2); MSG1(W2, W3);
        RNDS4(W0, 8); SCHED(W1, W0, W3); MSG1(W3, W0);
        RNDS4(W1, 9); SCHED(W2, W1, W0); MSG1(W0, W1);
        RNDS4(W2, 10); SCHED(W3, W2, W1); MSG1(W1, W2);
        RNDS4(W3, 11); SCHED(W0, W3, W2); MSG1(W2, W3);
        RNDS4(W0, 12); SCHED(W1, W0, W3); MSG1(W3, W0); /* last msg1: feeds group 15 */
        RNDS4(W1, 13); SCHED(W2, W1, W0);
        RNDS4(W2, 14); SCHED(W3, W2, W1);
        RNDS4(W3, 15);

        STATE0 = _mm_add_epi32(STATE0, ABEF_SAVE);
        STATE1 = _mm_add_epi32(STATE1, CDGH_SAVE);
        data += 64;
    }

    TMP = _mm_shuffle_epi32(STATE0, 0x1B);       /* FEBA */
    STATE1 = _mm_shuffle_epi32(STATE1, 0xB1);    /* DCHG */
    STATE0 = _mm_blend_epi16(TMP, STATE1, 0xF0); /* DCBA */
    STATE1 = _mm_alignr_epi8(STATE1, TMP, 8);    /* HGFE */
    _mm_storeu_si128((__m128i *)&state[0], STATE0);
    _mm_storeu_si128((__m128i *)&state[4], STATE1);
}

static int cpu_has_shani(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    int ssse3 = (c >> 9) & 1, sse41 = (c >> 19) & 1;
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    int sha = (b >> 29) & 1;
    return ssse3 && sse41 && sha;
}
#endif /* SGK_HAVE_X86 */

sgk_sha256_blocks_fn sgk__sha256_blocks_shani(void) {
#ifdef SGK_HAVE_X86
    return cpu_has_shani() ? sha256_blocks_shani : NULL;
#else
    return NULL;
#endif
}

/* Chosen once; a racing first use computes the same answer, hence relaxed atomics. */
static _Atomic(sgk_sha256_blocks_fn) chosen_blocks;

static sgk_sha256_blocks_fn blocks_fn(void) {
    sgk_sha256_blocks_fn fn = atomic_load_explicit(&chosen_blocks, memory_order_relaxed);
    if (fn) return fn;
    fn = sgk__sha256_blocks_shani();
    if (!fn) fn = sgk__sha256_blocks_portable;
    atomic_store_explicit(&chosen_blocks, fn, memory_order_relaxed);
    return fn;
}

const char *sgk_sha256_implementation(void) {
    return blocks_fn() == sgk__sha256_blocks_portable ? "portable" : "sha-ni";
}

/* ------------------------------------------------------- incremental API */

/* The layout inside sgk_sha256.opaque (256 bytes, we use 112). */
typedef struct {
    uint32_t state[8];
    uint64_t total;      /* bytes hashed so far */
    uint8_t buf[64];     /* pending partial block */
    uint32_t buflen;
    uint32_t pad_;
    sgk_sha256_blocks_fn fn;
} sha256_ctx;

_Static_assert(sizeof(sha256_ctx) <= sizeof(sgk_sha256_ctx), "sgk_sha256 opaque storage too small");

static void ctx_init(sha256_ctx *c, sgk_sha256_blocks_fn fn) {
    memcpy(c->state, H0, sizeof H0);
    c->total = 0;
    c->buflen = 0;
    c->fn = fn;
}

static void ctx_update(sha256_ctx *c, const uint8_t *p, size_t len) {
    c->total += len;
    if (c->buflen) {
        size_t take = 64 - c->buflen;
        if (take > len) take = len;
        memcpy(c->buf + c->buflen, p, take);
        c->buflen += (uint32_t)take;
        p += take;
        len -= take;
        if (c->buflen < 64) return;
        c->fn(c->state, c->buf, 1);
        c->buflen = 0;
    }
    if (len >= 64) {
        size_t n = len / 64;
        c->fn(c->state, p, n); /* whole blocks straight from the caller's memory */
        p += n * 64;
        len -= n * 64;
    }
    if (len) {
        memcpy(c->buf, p, len);
        c->buflen = (uint32_t)len;
    }
}

static void ctx_final(sha256_ctx *c, uint8_t digest[32]) {
    uint64_t bits = c->total * 8;
    uint8_t pad[72] = {0x80};
    /* Pad so that buflen + padlen == 56 mod 64, then the 64-bit length. */
    size_t padlen = (c->buflen < 56) ? 56 - c->buflen : 120 - c->buflen;
    ctx_update(c, pad, padlen);
    uint8_t lenbe[8];
    for (int i = 0; i < 8; i++) lenbe[i] = (uint8_t)(bits >> (56 - 8 * i));
    ctx_update(c, lenbe, 8);
    for (int i = 0; i < 8; i++) {
        digest[4 * i + 0] = (uint8_t)(c->state[i] >> 24);
        digest[4 * i + 1] = (uint8_t)(c->state[i] >> 16);
        digest[4 * i + 2] = (uint8_t)(c->state[i] >> 8);
        digest[4 * i + 3] = (uint8_t)(c->state[i]);
    }
    memset(c, 0, sizeof *c);
}

void sgk_sha256_init(sgk_sha256_ctx *ctx) { ctx_init((sha256_ctx *)ctx, blocks_fn()); }

void sgk_sha256_update(sgk_sha256_ctx *ctx, const void *data, size_t len) {
    if (len) ctx_update((sha256_ctx *)ctx, (const uint8_t *)data, len);
}

void sgk_sha256_final(sgk_sha256_ctx *ctx, uint8_t digest[32]) { ctx_final((sha256_ctx *)ctx, digest); }

void sgk__sha256_with(sgk_sha256_blocks_fn fn, const void *data, size_t len, uint8_t digest[32]) {
    sha256_ctx c;
    ctx_init(&c, fn);
    if (len) ctx_update(&c, (const uint8_t *)data, len);
    ctx_final(&c, digest);
}

void sgk_sha256(const void *data, size_t len, uint8_t digest[32]) {
    sgk__sha256_with(blocks_fn(), data, len, digest);
}

int sgk_sha256_selftest(void) {
    static const uint8_t abc[32] = {
        0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
        0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad,
    };
    uint8_t a[32], b[32];
    sgk_sha256_blocks_fn fns[2] = {sgk__sha256_blocks_portable, sgk__sha256_blocks_shani()};
    for (int i = 0; i < 2; i++) {
        if (!fns[i]) continue;
        sgk__sha256_with(fns[i], "abc", 3, a);
        if (memcmp(a, abc, 32)) return SGK_ERR_DIGEST;
    }
    if (!fns[1]) return SGK_OK;
    static uint8_t pattern[1100];
    for (size_t i = 0; i < sizeof pattern; i++) pattern[i] = (uint8_t)(i * 131 + (i >> 3));
    for (size_t n = 0; n <= sizeof pattern; n++) {
        sgk__sha256_with(fns[0], pattern, n, a);
        sgk__sha256_with(fns[1], pattern, n, b);
        if (memcmp(a, b, 32)) return SGK_ERR_DIGEST;
    }
    return SGK_OK;
}
