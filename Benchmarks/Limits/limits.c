/*
 * limits: what this machine can do for one layer, measured with the kernel's
 * own code (built from Sources/CStargzKernel, gcc -O3 -march=native).
 *
 * Reads a plain tar, cuts every regular file into chunks (4 MiB by default,
 * like the writers), compresses each chunk as its own gzip member at level 9
 * (the kernel maps it to libdeflate 6, what `estargz convert` writes), then
 * times, over all chunks held in memory (no I/O, no TOC, no tar headers):
 *   inflate     sgk_chunk_inflate without digest, one thread
 *   sha256      sgk_sha256 of the uncompressed chunks, one thread
 *   verify1     inflate and SHA-256 in one pass per chunk, one thread
 *   verifyN     the same on N threads (default: all online cores)
 * and prints one JSON object (MB/s of uncompressed bytes, seconds).
 * Each timing is the best of `reps` passes (default 3).
 *
 * Usage: limits LAYER.tar [chunk-bytes] [threads] [reps]
 */
#define _GNU_SOURCE
#include "CStargzKernel.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    const uint8_t *plain;
    size_t len;
    uint8_t *gz;
    size_t gz_len;
} chunk;

static chunk *chunks;
static size_t nchunks, cap_chunks, total_bytes;
static atomic_size_t next_index;
static uint8_t **scratch; /* per thread, max chunk size */
static size_t max_len;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t octal(const uint8_t *p, size_t n) {
    if (p[0] & 0x80) { /* base-256 */
        uint64_t v = p[0] & 0x7f;
        for (size_t i = 1; i < n; i++) v = v << 8 | p[i];
        return v;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < n && p[i]; i++) {
        if (p[i] == ' ') continue;
        if (p[i] < '0' || p[i] > '7') break;
        v = v * 8 + (p[i] - '0');
    }
    return v;
}

static void add_chunk(const uint8_t *p, size_t len) {
    if (nchunks == cap_chunks) {
        cap_chunks = cap_chunks ? cap_chunks * 2 : 1024;
        chunks = realloc(chunks, cap_chunks * sizeof *chunks);
    }
    chunks[nchunks++] = (chunk){p, len, NULL, 0};
    total_bytes += len;
    if (len > max_len) max_len = len;
}

static void parse_tar(const uint8_t *tar, size_t size, size_t chunk_size) {
    size_t pos = 0;
    while (pos + 512 <= size) {
        const uint8_t *h = tar + pos;
        int zero = 1;
        for (int i = 0; i < 512; i++) if (h[i]) { zero = 0; break; }
        if (zero) break;
        uint64_t len = octal(h + 124, 12);
        char type = (char)h[156];
        pos += 512;
        if (pos + len > size) break;
        if (type == '0' || type == '\0' || type == '7') {
            for (uint64_t off = 0; off < len; off += chunk_size) {
                size_t n = len - off < chunk_size ? (size_t)(len - off) : chunk_size;
                add_chunk(tar + pos + off, n);
            }
        }
        pos += (len + 511) & ~(uint64_t)511;
    }
}

enum { JOB_COMPRESS, JOB_INFLATE, JOB_SHA, JOB_VERIFY };
static int job;

static void *worker(void *arg) {
    uint8_t *out = scratch[(size_t)arg];
    for (;;) {
        size_t i = atomic_fetch_add_explicit(&next_index, 1, memory_order_relaxed);
        if (i >= nchunks) return NULL;
        chunk *c = &chunks[i];
        uint8_t d[32];
        int st = 0;
        switch (job) {
        case JOB_COMPRESS: {
            size_t bound = sgk_gzip_member_bound(c->len);
            c->gz = malloc(bound);
            st = sgk_gzip_member_compress(c->plain, c->len, 9, c->gz, bound, &c->gz_len);
            c->gz = realloc(c->gz, c->gz_len);
            break;
        }
        case JOB_INFLATE: st = sgk_chunk_inflate(c->gz, c->gz_len, out, c->len, NULL, NULL); break;
        case JOB_SHA: sgk_sha256(c->plain, c->len, d); break;
        case JOB_VERIFY: st = sgk_chunk_inflate(c->gz, c->gz_len, out, c->len, NULL, d); break;
        }
        if (st) { fprintf(stderr, "limits: kernel error %d on chunk %zu\n", st, i); exit(1); }
    }
}

static double run(int which, int threads, int reps) {
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        job = which;
        atomic_store(&next_index, 0);
        pthread_t t[64];
        double t0 = now();
        for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, worker, (void *)(size_t)i);
        for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
        double dt = now() - t0;
        if (dt < best) best = dt;
    }
    return best;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: limits LAYER.tar [chunk-bytes] [threads] [reps]\n"); return 2; }
    size_t chunk_size = argc > 2 ? strtoull(argv[2], NULL, 10) : (size_t)4 << 20;
    int threads = argc > 3 ? atoi(argv[3]) : (int)sysconf(_SC_NPROCESSORS_ONLN);
    int reps = argc > 4 ? atoi(argv[4]) : 3;
    if (threads < 1) threads = 1;
    if (threads > 64) threads = 64;
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) { perror(argv[1]); return 1; }
    struct stat st;
    fstat(fd, &st);
    const uint8_t *tar = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
    if (tar == MAP_FAILED) { perror("mmap"); return 1; }
    parse_tar(tar, st.st_size, chunk_size);
    scratch = calloc(threads, sizeof *scratch);
    for (int i = 0; i < threads; i++) scratch[i] = malloc(max_len ? max_len : 1);
    run(JOB_COMPRESS, threads, 1);
    size_t gz_total = 0;
    for (size_t i = 0; i < nchunks; i++) gz_total += chunks[i].gz_len;
    double mb = total_bytes / 1e6;
    double inflate1 = run(JOB_INFLATE, 1, reps);
    double sha1 = run(JOB_SHA, 1, reps);
    double verify1 = run(JOB_VERIFY, 1, reps);
    double verifyn = run(JOB_VERIFY, threads, reps);
    printf("{\"chunks\": %zu, \"bytes\": %zu, \"compressedBytes\": %zu, \"threads\": %d, "
           "\"inflateMBps\": %.1f, \"sha256MBps\": %.1f, \"verify1MBps\": %.1f, \"verifyNMBps\": %.1f, "
           "\"verify1Seconds\": %.4f, \"verifyNSeconds\": %.4f, \"sha256\": \"%s\"}\n",
           nchunks, total_bytes, gz_total, threads, mb / inflate1, mb / sha1, mb / verify1, mb / verifyn,
           verify1, verifyn, sgk_sha256_implementation());
    return 0;
}
