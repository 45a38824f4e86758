#!/usr/bin/env bash
# Privilege separation benchmark (docs/PERFORMANCE.md, "Privilege separation"): what a new
# upstream connection to a process-sandboxed model costs when made inline through the
# sandbox's socket factory (the single-process `custos up` before the split) and when taken
# from a pool of unconnected sockets the supervisor passed over SCM_RIGHTS (the split), side
# by side in one run. Run as root. CONNS and ROUNDS change the sample.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
REL=${1:-build/rel}
case "$REL" in /*) ;; *) REL=$top/$REL ;; esac
OUT=${OUT:-$top/build/bench-privsep}
mkdir -p "$OUT"
cmake -S . -B "$REL" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$REL" -j2 --target custos_sandbox custos_core >/dev/null
cc -O2 -D_GNU_SOURCE -I include -o "$OUT/connect_bench" bench/privsep/connect_bench.c \
	"$REL/sandbox/libcustos_sandbox.a" "$REL/core/libcustos_core.a" \
	-lseccomp -lcap -lyaml -lcrypto -lpthread
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
"$OUT/connect_bench" "${CONNS:-2000}" "${ROUNDS:-5}"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
