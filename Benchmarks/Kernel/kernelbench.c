/*
 * kernelbench: single-core throughput of the candidate backends for each job
 * of CStargzKernel, on realistic layer data read from this machine at run time
 * (shared libraries + documentation, i.e. what container layers hold).
 *
 * Built and run by run.sh. Compiles the kernel's own C sources in, so
 * "kernel" rows measure exactly the code the package ships.
 */
#define _GNU_SOURCE
#include "CStargzKernel.h"
#include "sgk_internal.h"

#include <dirent.h>
#include <isa-l/igzip_lib.h>
#include <libdeflate.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zlib.h>

#define CHUNK ((size_t)4 << 20)

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---------------------------------------------------------- input data */

static uint8_t *data;
static size_t data_len, data_cap;

/* Append regular files under dir (depth-first) until `limit` bytes. */
static void slurp(const char *dir, size_t limit) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) && data_len < limit) {
        if (e->d_name[0] == '.') continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(path, &st)) continue;
        if (S_ISDIR(st.st_mode)) { slurp(path, limit); continue; }
        if (!S_ISREG(st.st_mode) || st.st_size == 0) continue;
        size_t take = (size_t)st.st_size;
        if (take > limit - data_len) take = limit - data_len;
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        if (data_len + take > data_cap) {
            data_cap = (data_len + take) * 2;
            data = realloc(data, data_cap);
        }
        data_len += fread(data + data_len, 1, take, f);
        fclose(f);
    }
    closedir(d);
}

/* ------------------------------------------------------------- helpers */

static double mbps(size_t bytes, double secs) { return bytes / secs / 1e6; }

/* Compressed 4 MiB chunks (gzip members) of the data, made with zlib -9. */
static uint8_t **gz;
static size_t *gz_len;
static size_t nchunks;

static size_t zlib_gzip(const uint8_t *src, size_t n, int level, uint8_t *dst, size_t cap) {
    z_stream zs = {0};
    deflateInit2(&zs, level, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY);
    zs.next_in = (Bytef *)src; zs.avail_in = (uInt)n;
    zs.next_out = dst; zs.avail_out = (uInt)cap;
    deflate(&zs, Z_FINISH);
    size_t out = zs.total_out;
    deflateEnd(&zs);
    return out;
}

static size_t isal_gzip(const uint8_t *src, size_t n, int level, uint8_t *dst, size_t cap) {
    static uint8_t *lvlbuf;
    static const uint32_t lvlsize[4] = {0, ISAL_DEF_LVL1_DEFAULT, ISAL_DEF_LVL2_DEFAULT, ISAL_DEF_LVL3_DEFAULT};
    if (!lvlbuf) lvlbuf = malloc(ISAL_DEF_LVL3_DEFAULT);
    struct isal_zstream s;
    isal_deflate_init(&s);
    s.gzip_flag = IGZIP_GZIP;
    s.level = level;
    s.level_buf = level ? lvlbuf : NULL;
    s.level_buf_size = lvlsize[level];
    s.end_of_stream = 1;
    s.flush = NO_FLUSH;
    s.next_in = (uint8_t *)src; s.avail_in = (uint32_t)n;
    s.next_out = dst; s.avail_out = (uint32_t)cap;
    if (isal_deflate(&s) != COMP_OK || s.internal_state.state != ZSTATE_END) return 0;
    return s.total_out;
}

typedef size_t (*compress_fn)(const uint8_t *, size_t, int, uint8_t *, size_t);

static size_t ld_gzip(const uint8_t *src, size_t n, int level, uint8_t *dst, size_t cap) {
    static struct libdeflate_compressor *c[13];
    if (!c[level]) c[level] = libdeflate_alloc_compressor(level);
    return libdeflate_gzip_compress(c[level], src, n, dst, cap);
}

static size_t zlib9_total;

static void bench_deflate(const char *name, compress_fn fn, int level, size_t nbytes) {
    uint8_t *out = malloc(CHUNK * 2);
    size_t total_out = 0;
    double t0 = now();
    for (size_t off = 0; off < nbytes; off += CHUNK) {
        size_t n = nbytes - off < CHUNK ? nbytes - off : CHUNK;
        size_t o = fn(data + off, n, level, out, CHUNK * 2);
        if (!o) { printf("  %s %d FAILED\n", name, level); free(out); return; }
        total_out += o;
    }
    double t = now() - t0;
    if (fn == zlib_gzip && level == 9) zlib9_total = total_out;
    printf("| deflate | %-10s | %2d | %8.1f | %10zu | %.3f | %.4f |\n", name, level, mbps(nbytes, t), total_out,
           (double)total_out / nbytes, zlib9_total ? (double)total_out / zlib9_total : 0.0);
    free(out);
}

/* ------------------------------------------------------------- inflate */

static int inflate_zlib(const uint8_t *src, size_t n, uint8_t *dst, size_t dn) {
    static z_stream zs;
    static int init;
    if (!init) { inflateInit2(&zs, 16 + 15); init = 1; } else inflateReset(&zs);
    zs.next_in = (Bytef *)src; zs.avail_in = (uInt)n;
    zs.next_out = dst; zs.avail_out = (uInt)dn;
    return inflate(&zs, Z_FINISH) == Z_STREAM_END ? 0 : -1;
}

static int inflate_ld(const uint8_t *src, size_t n, uint8_t *dst, size_t dn) {
    static struct libdeflate_decompressor *d;
    if (!d) d = libdeflate_alloc_decompressor();
    size_t out;
    return libdeflate_gzip_decompress(d, src, n, dst, dn, &out) == LIBDEFLATE_SUCCESS ? 0 : -1;
}

static int inflate_isal(const uint8_t *src, size_t n, uint8_t *dst, size_t dn) {
    static struct inflate_state s;
    isal_inflate_init(&s);
    s.crc_flag = ISAL_GZIP;
    s.next_in = (uint8_t *)src; s.avail_in = (uint32_t)n;
    s.next_out = dst; s.avail_out = (uint32_t)dn;
    int r = isal_inflate(&s);
    return (r == ISAL_DECOMP_OK && s.block_state == ISAL_BLOCK_FINISH) ? 0 : -1;
}

static int inflate_kernel(const uint8_t *src, size_t n, uint8_t *dst, size_t dn) {
    return sgk_chunk_inflate(src, n, dst, dn, NULL, NULL);
}

static int inflate_kernel_sha(const uint8_t *src, size_t n, uint8_t *dst, size_t dn) {
    uint8_t d[32];
    return sgk_chunk_inflate(src, n, dst, dn, NULL, d);
}

typedef int (*inflate_fn)(const uint8_t *, size_t, uint8_t *, size_t);

static void bench_inflate(const char *name, inflate_fn fn, int reps) {
    uint8_t *out = malloc(CHUNK);
    size_t total = 0;
    double t0 = now();
    for (int r = 0; r < reps; r++)
        for (size_t i = 0; i < nchunks; i++) {
            size_t n = (i + 1) * CHUNK <= data_len ? CHUNK : data_len - i * CHUNK;
            if (fn(gz[i], gz_len[i], out, n)) { printf("  %s FAILED chunk %zu\n", name, i); free(out); return; }
            if (memcmp(out, data + i * CHUNK, n)) { printf("  %s WRONG OUTPUT\n", name); free(out); return; }
            total += n;
        }
    double t = now() - t0;
    printf("| inflate 4 MiB | %-34s | %8.1f |\n", name, mbps(total, t));
    free(out);
}

/* Chunk whose member holds more than the chunk: chunk + 1536 bytes of tar-ish
 * trailer, the shape of a Go-written file's last chunk. */
static void bench_overhang(int exact_span, int reps) {
    size_t n = CHUNK - 4096;
    uint8_t *member = malloc(CHUNK * 2), *out = malloc(CHUNK);
    size_t mlen = zlib_gzip(data, n + 1536, 9, member, CHUNK * 2);
    size_t span = exact_span ? mlen : mlen + 65536; /* not ending at the member's end */
    uint8_t *src = calloc(1, span);
    memcpy(src, member, mlen);
    uint8_t d[32];
    double t0 = now();
    for (int r = 0; r < reps; r++)
        if (sgk_chunk_inflate(src, span, out, n, NULL, d) || memcmp(out, data, n)) { printf("overhang FAILED\n"); return; }
    double t = now() - t0;
    printf("| inflate+sha256 (member longer than chunk, %s) | kernel | %8.1f |\n",
           exact_span ? "src = member: ISIZE hint, libdeflate to scratch" : "src runs on: libdeflate fails, zlib redo", mbps(n * reps, t));
    free(member); free(out); free(src);
}

/* --------------------------------------------------------------- sha256 */

static void bench_sha(const char *name, int which, size_t nbytes, int reps) {
    uint8_t d[32];
    sgk_sha256_blocks_fn shani = sgk__sha256_blocks_shani();
    double t0 = now();
    for (int r = 0; r < reps; r++) {
        switch (which) {
        case 0: if (!shani) { printf("| sha256 | %-20s | n/a |\n", name); return; }
                sgk__sha256_with(shani, data, nbytes, d); break;
        case 1: sgk__sha256_with(sgk__sha256_blocks_portable, data, nbytes, d); break;
        case 2: SHA256(data, nbytes, d); break;
        case 3: { unsigned int l; EVP_Digest(data, nbytes, d, &l, EVP_sha256(), NULL); break; }
        case 4: sgk_sha256(data, nbytes, d); break;
        }
    }
    double t = now() - t0;
    printf("| sha256 | %-26s | %8.1f |\n", name, mbps(nbytes * reps, t));
}

/* Many small digests (4 KiB), where per-call overhead shows. */
static void bench_sha_small(const char *name, int which) {
    uint8_t d[32];
    size_t n = 4096, count = 50000;
    sgk_sha256_blocks_fn shani = sgk__sha256_blocks_shani();
    double t0 = now();
    for (size_t i = 0; i < count; i++) {
        const uint8_t *p = data + (i % 1000) * n;
        switch (which) {
        case 0: sgk__sha256_with(shani, p, n, d); break;
        case 2: SHA256(p, n, d); break;
        case 3: { unsigned int l; EVP_Digest(p, n, d, &l, EVP_sha256(), NULL); break; }
        }
    }
    double t = now() - t0;
    printf("| sha256 4 KiB calls | %-20s | %8.1f |\n", name, mbps(n * count, t));
}

int main(int argc, char **argv) {
    size_t limit = argc > 1 ? strtoull(argv[1], NULL, 0) : (size_t)24 << 20;
    /* Realistic mix: two thirds binaries/libraries, one third text. */
    slurp("/usr/lib/x86_64-linux-gnu", limit * 2 / 3);
    slurp("/usr/share/doc", limit);
    slurp("/usr/share", limit);
    printf("input: %zu bytes (/usr/lib/x86_64-linux-gnu + /usr/share/doc), 4 MiB chunks\n\n", data_len);

    printf("| job | backend | level | MB/s | output bytes | ratio | vs zlib -9 |\n|---|---|---|---|---|---|---|\n");
    size_t dn = data_len;
    bench_deflate("zlib", zlib_gzip, 9, dn); /* first: the size reference */
    for (int l = 8; l >= 1; l--) bench_deflate("zlib", zlib_gzip, l, dn);
    int ldl[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    for (size_t i = 0; i < sizeof ldl / sizeof *ldl; i++) bench_deflate("libdeflate", ld_gzip, ldl[i], dn);
    for (int l = 0; l <= 3; l++) bench_deflate("isa-l", isal_gzip, l, dn);

    /* Prepare zlib -9 members for the inflate runs. */
    nchunks = (data_len + CHUNK - 1) / CHUNK;
    gz = calloc(nchunks, sizeof *gz);
    gz_len = calloc(nchunks, sizeof *gz_len);
    for (size_t i = 0; i < nchunks; i++) {
        size_t n = (i + 1) * CHUNK <= data_len ? CHUNK : data_len - i * CHUNK;
        gz[i] = malloc(CHUNK * 2);
        gz_len[i] = zlib_gzip(data + i * CHUNK, n, 9, gz[i], CHUNK * 2);
    }
    printf("\n| job | backend | MB/s (uncompressed) |\n|---|---|---|\n");
    bench_inflate("zlib", inflate_zlib, 3);
    bench_inflate("libdeflate", inflate_ld, 3);
    bench_inflate("isa-l", inflate_isal, 3);
    bench_inflate("kernel sgk_chunk_inflate", inflate_kernel, 3);
    bench_inflate("kernel sgk_chunk_inflate + sha256", inflate_kernel_sha, 3);
    bench_overhang(1, 10);
    bench_overhang(0, 10);

    printf("\n| job | backend | MB/s |\n|---|---|---|\n");
    size_t sn = data_len < ((size_t)16 << 20) ? data_len : ((size_t)16 << 20);
    bench_sha("own SHA-NI", 0, sn, 5);
    bench_sha("OpenSSL SHA256()", 2, sn, 5);
    bench_sha("OpenSSL EVP_Digest", 3, sn, 5);
    bench_sha("portable C", 1, sn, 1);
    bench_sha("kernel sgk_sha256 (dispatch)", 4, sn, 5);
    bench_sha_small("own SHA-NI", 0);
    bench_sha_small("OpenSSL SHA256()", 2);
    bench_sha_small("OpenSSL EVP_Digest", 3);
    printf("\nkernel: sha256=%s inflate=%s deflate=%s\n", sgk_sha256_implementation(), sgk_inflate_implementation(),
           sgk_deflate_implementation());
    return 0;
}
