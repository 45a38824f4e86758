#!/usr/bin/env bash
# Metrics registry cost: ns per request update (one series; 200 rotating principals) on 1 and
# 2 threads, and the time of one scrape with the request series table full.
# usage: bench/admin/run.sh [BUILD_DIR]     (make bench-admin)   ~20 seconds
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$top/build/release}
out=$top/bench/out/admin
mkdir -p "$out"
cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j2 --target custos_core >/dev/null
cc -O2 -std=gnu17 -Wall -Wextra -Werror -I"$top/include" -I"$top" \
	"$top/bench/admin/bench_metrics.c" "$top/proxy/metrics.c" \
	"$build/core/libcustos_core.a" -lyaml -lcrypto -lpthread -o "$out/bench_metrics"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
"$out/bench_metrics" "${THREADS:-2}" | tee "$out/result.jsonl"
