#!/usr/bin/env bash
# CPU cost of content inspection in the ingress proxy (docs/PERFORMANCE.md, "Content inspection
# in the proxy"): per SSE event (parse, feed the delta to its stream, re-emit the event) and
# per ~2.6 KiB chat prompt redacted as JSON. Builds the libraries in RelWithDebInfo and the bench
# binary against them. Usage: bench/ingress_inspect/run.sh [build-dir]; REPS=N (median).
# About ten seconds.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
BUILD=${1:-build/release}
REPS=${REPS:-5}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD" -j2 --target custos_proxy >/dev/null
# shellcheck disable=SC2046
${CC:-cc} -std=gnu17 -O2 -Wall -Wextra -Iinclude -I. -I"$BUILD/generated" \
	bench/ingress_inspect/bench_ingress_inspect.c -o "$BUILD/bench_ingress_inspect" \
	"$BUILD/proxy/libcustos_proxy.a" "$BUILD/policy/libcustos_policy.a" \
	"$BUILD/audit/libcustos_audit.a" "$BUILD/sandbox/libcustos_sandbox.a" \
	"$BUILD/dl/libcustos_dl.a" "$BUILD/core/libcustos_core.a" \
	$(pkg-config --libs yaml-0.1 openssl) -lpthread
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) vCPU, load $(cut -d' ' -f1-3 /proc/loadavg)"
"$BUILD/bench_ingress_inspect" "$REPS"
