/* Text of the kernel's status codes (static strings, safe from any thread). */
#include "CStargzKernel.h"

const char *sgk_status_string(int status) {
    switch (status) {
    case SGK_OK: return "ok";
    case SGK_ERR_FORMAT: return "invalid or corrupt compressed data";
    case SGK_ERR_TRUNCATED: return "input ended before the requested output was produced";
    case SGK_ERR_DIGEST: return "SHA-256 digest mismatch";
    case SGK_ERR_NOMEM: return "out of memory";
    case SGK_ERR_ARGUMENT: return "invalid argument";
    case SGK_ERR_SPACE: return "output buffer too small";
    default: return "unknown kernel status";
    }
}

void sgk_prefetch(const void *p) { __builtin_prefetch(p, 1, 3); }
