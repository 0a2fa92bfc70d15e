#!/bin/sh
# Build and run the kernel benchmark (single core). Usage: Benchmarks/Kernel/run.sh [input-bytes]
# Input data is read at run time from /usr/lib/x86_64-linux-gnu and /usr/share.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
k="$here/../../Sources/CStargzKernel"
out="${TMPDIR:-/tmp}/kernelbench"
gcc -O3 -march=native -std=gnu11 -Wall -I "$k/include" -I "$k" \
    "$here/kernelbench.c" "$k"/sha256.c "$k"/gzip_inflate.c "$k"/gzip_deflate.c "$k"/zstd.c "$k"/xxhash.c "$k"/status.c \
    -o "$out" -lz -ldeflate -lisal -lzstd -lxxhash -lcrypto -lpthread
exec taskset -c 0 "$out" "$@"
