// libfuse3's low-level API as Swift sees it. The version must be chosen before the
// include; 35 gives the 3.5 ops table and the `fuse_loop_config` loop entry point.
#ifndef CFUSE3_SHIM_H
#define CFUSE3_SHIM_H

#define FUSE_USE_VERSION 35
#include <fuse3/fuse_lowlevel.h>
#include <sys/sysmacros.h>

// `fuse_session_loop_mt` is a function-like macro, which Swift cannot call.
static inline int cfuse3_session_loop_mt(struct fuse_session *se, unsigned int max_idle_threads) {
    struct fuse_loop_config config = { .clone_fd = 0, .max_idle_threads = max_idle_threads };
    return fuse_session_loop_mt(se, &config);
}

// `makedev`/`minor` are macros too.
static inline dev_t cfuse3_makedev(unsigned int major, unsigned int minor) { return makedev(major, minor); }
static inline unsigned int cfuse3_minor(dev_t dev) { return minor(dev); }

#endif
