/*
 * Internal (non-public) declarations shared between the kernel's C files and
 * the standalone benchmark in Benchmarks/Kernel. Not part of the module's API:
 * it lives outside include/ so Swift never sees it.
 */
#ifndef SGK_INTERNAL_H
#define SGK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* SHA-256 block functions: process nblocks 64-byte blocks into state[8]. */
typedef void (*sgk_sha256_blocks_fn)(uint32_t state[8], const uint8_t *data, size_t nblocks);
void sgk__sha256_blocks_portable(uint32_t state[8], const uint8_t *data, size_t nblocks);
/* NULL when the CPU (or compiler) lacks SHA-NI. */
sgk_sha256_blocks_fn sgk__sha256_blocks_shani(void);
/* One-shot SHA-256 with an explicit block function (benchmark / self-test). */
void sgk__sha256_with(sgk_sha256_blocks_fn fn, const void *data, size_t len, uint8_t digest[32]);

#endif
