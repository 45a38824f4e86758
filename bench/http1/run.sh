#!/usr/bin/env bash
# Builds and runs the parsing-layer micro-benchmark (bench_http1.c) with -O2, on one core.
# usage: bench/http1/run.sh [BUILD_DIR] [ITERATIONS]   (`make bench-http1`; BUILD_DIR is
# ignored: the sources are compiled directly; ITERATIONS defaults to 1000000, ~10 s in all)
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
iters=1000000
for a in "$@"; do
	case "$a" in *[!0-9]*) ;; *) iters=$a ;; esac
done
cc=${CC:-cc}
"$cc" -std=gnu17 -O2 -D_GNU_SOURCE -DNDEBUG -I"$top/include" -I"$top" -o "$out/bench_http1" \
	"$top/bench/http1/bench_http1.c" "$top/proxy/http1.c" "$top/proxy/json.c" \
	"$top/proxy/openai.c" "$top/proxy/sse.c" "$top/core/buf.c" "$top/core/err.c" \
	"$top/core/json.c" "$top/core/num.c" -lcrypto -lm
echo "custos parsing layer, $("$cc" --version | head -1), $(uname -m), 1 core;" \
	"best of 5 runs (the machine is shared: the minimum is the least disturbed)"
pin=""
command -v taskset >/dev/null && taskset -c 0 true 2>/dev/null && pin="taskset -c 0"
for _ in 1 2 3 4 5; do $pin "$out/bench_http1" "$iters"; done |
	awk '{ name = substr($0, 1, 34); ns = substr($0, 35) + 0;
	       if (!(name in best) || ns < best[name]) { best[name] = ns; line[name] = $0 }
	       if (!(name in seen)) { seen[name] = 1; order[++n] = name } }
	     END { for (i = 1; i <= n; i++) print line[order[i]] }'
