#!/usr/bin/env bash
# Builds the libFuzzer target (eStargz and zstd:chunked footers + TOCs, tar parsing) and runs it for $1 seconds
# (default 60) from the committed seed corpus. New inputs go to a temporary directory,
# so the committed corpus stays small; crashes are kept in .build-fuzz/crashes.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
ESTARGZ_FUZZ=1 swift build --scratch-path .build-fuzz --product EStargzFuzz \
  -Xswiftc -sanitize=fuzzer,address -Xcc -fsanitize=fuzzer-no-link,address >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p .build-fuzz/crashes
cp Tests/Fuzz/corpus/* "$work/" 2>/dev/null || true
.build-fuzz/debug/EStargzFuzz "$work" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
  -artifact_prefix=.build-fuzz/crashes/ -print_final_stats=1 2>&1 | tail -n 15
