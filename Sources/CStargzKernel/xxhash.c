/* xxHash via libxxhash: XXH64 (the seed-compatible classic) and XXH3-64. */
#include "CStargzKernel.h"
#include <xxhash.h>

uint64_t sgk_xxh64(const void *data, size_t len, uint64_t seed) {
    /* libxxhash accepts NULL only with len 0; pass a valid pointer regardless. */
    static const uint8_t empty[1];
    return XXH64(data ? data : empty, len, seed);
}

uint64_t sgk_xxh3_64(const void *data, size_t len) {
    static const uint8_t empty[1];
    return XXH3_64bits(data ? data : empty, len);
}
