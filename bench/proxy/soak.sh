#!/usr/bin/env bash
# bench/proxy/soak.sh: custos' memory under sustained mixed load. Sets custos up as
# bench/proxy/run.sh does (one worker, API-key authentication, policy on every request, audit in
# batch mode with signed checkpoints, nginx `return 200` upstream), then runs ROUNDS rounds of
# wrk: plain keep-alive and TLS keep-alive at 200 connections, TLS with a new connection per
# request and unauthenticated requests (401) at 50, and prints the RSS of every process of the
# tree after each round. A leak per request shows as growth in proportion to the requests; a
# plateau is the allocator's and the caches' high-water mark. A measurement, not a test.
# Usage: bench/proxy/soak.sh [BUILD_DIR]   (default build/release)
# Env: ROUNDS (default 6), DURATION (s per keep-alive case, default 20).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-build/release}
case "$build" in /*) ;; *) build="$top/$build" ;; esac
BIN=$build/cli/custos
[ -x "$BIN" ] || { echo "soak: $BIN not built" >&2; exit 1; }
ROUNDS=${ROUNDS:-6} DURATION=${DURATION:-20}
for t in wrk nginx openssl; do command -v $t >/dev/null || { echo "soak: $t missing" >&2; exit 1; }; done

. "$top/bench/proxy/lib.bash"
bench_workdir custos-soak
bench_ca_certs
P_UP=$(port)
bench_upstream "$P_UP"
KEY=sk-bench
bench_policy "$KEY" up
p=$(port) ps_=$(port)
bench_custos "$BIN" "$w/c" "$p" "$ps_" "$P_UP"

rss() {
	local q out=""
	for q in "$CUSTOS_PID" $(descendants "$CUSTOS_PID"); do
		out+="$(cat "/proc/$q/comm")=$(awk '/^VmRSS/ {print $2}' "/proc/$q/status")KiB "
	done
	echo "$out"
}
requests() { awk '/requests in/ {print $1}'; }
echo "soak: $BIN, $ROUNDS rounds; start: $(rss)"
total=0
for i in $(seq "$ROUNDS"); do
	a=$(wrk -t1 -c200 -d"${DURATION}s" -H "Authorization: Bearer $KEY" "http://127.0.0.1:$p/" | requests)
	b=$(wrk -t1 -c200 -d"${DURATION}s" -H "Authorization: Bearer $KEY" "https://127.0.0.1:$ps_/" | requests)
	c=$(wrk -t1 -c50 -d5s -H "Connection: close" -H "Authorization: Bearer $KEY" \
		"https://127.0.0.1:$ps_/" | requests)
	d=$(wrk -t1 -c50 -d5s "http://127.0.0.1:$p/" | requests)
	total=$((total + a + b + c + d))
	echo "round $i: plain $a, tls $b, handshakes $c, unauthenticated $d (total $total): $(rss)"
done
