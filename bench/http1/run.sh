#!/usr/bin/env bash
# Builds and runs the parsing-layer micro-benchmark (bench_http1.c) with -O2, on one core.
# usage: bench/http1/run.sh [ITERATIONS]   (default 2000000; a run takes a few seconds)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cc=${CC:-cc}
"$cc" -std=gnu17 -O2 -D_GNU_SOURCE -DNDEBUG -I"$top/include" -I"$top" -o "$out/bench_http1" \
	"$top/bench/http1/bench_http1.c" "$top/proxy/http1.c" "$top/proxy/json.c" \
	"$top/proxy/openai.c" "$top/proxy/sse.c" "$top/core/buf.c" "$top/core/err.c" \
	"$top/core/json.c" "$top/core/num.c" -lcrypto -lm
echo "custos parsing layer, $("$cc" --version | head -1), $(uname -m), 1 core"
taskset -c 0 "$out/bench_http1" "${1:-2000000}" 2>/dev/null || "$out/bench_http1" "${1:-2000000}"
