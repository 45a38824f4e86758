#!/usr/bin/env bash
# Content-inspection benchmark (docs/PERFORMANCE.md, "Content inspection"): Hyperscan (the
# engine's database and the full inspect_scan) against PCRE2 with JIT over two 1 MiB corpora,
# the CPU cost per SSE event and the JSON pass. Builds the policy library in release mode and
# the bench binary against it; no peer to install (PCRE2 is a Debian package in deps.sh).
# Usage: bench/inspect/run.sh [build-dir]; REPS=N changes the runs per figure (median).
# About half a minute.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
BUILD=${1:-build/release}
REPS=${REPS:-10}
OUT=${OUT:-$top/bench/out}
mkdir -p "$OUT"

bash scripts/deps.sh >/dev/null
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j2 --target custos_policy >/dev/null
# shellcheck disable=SC2046
${CC:-cc} -std=gnu17 -O2 -Wall -Wextra -Iinclude -Ipolicy -I"$BUILD/generated" \
	bench/inspect/bench_inspect.c -o "$BUILD/bench_inspect" \
	"$BUILD/policy/libcustos_policy.a" "$BUILD/dl/libcustos_dl.a" "$BUILD/core/libcustos_core.a" \
	$(pkg-config --libs libpcre2-8 yaml-0.1 openssl) -lpthread
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) vCPU, load $(cut -d' ' -f1-3 /proc/loadavg)"
"$BUILD/bench_inspect" "$REPS" "$OUT/inspect.jsonl" | tee "$OUT/inspect.txt"
