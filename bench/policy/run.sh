#!/usr/bin/env bash
# custos policy engine vs Cedar's evaluator (npm @cedar-policy/cedar-wasm), side by side in one
# run: equivalent generated policies of 10, 100, 1,000 and 10,000 rules, the same requests,
# decisions checked equal, then decisions/s on one core, p50/p99, compile time, memory.
# usage: bench/policy/run.sh [BUILD_DIR]     (make bench-policy)   ~2-3 minutes
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$top/build/release}
peers=$top/bench/.peers
out=$top/bench/out/policy
sizes=${SIZES:-"10 100 1000 10000"}
our_secs=${OUR_SECONDS:-1.5}
cedar_secs=${CEDAR_SECONDS:-4}
cedar_version=${CEDAR_VERSION:-4.13.0}
mkdir -p "$out" "$peers"

# --- peers: Cedar's wasm evaluator, installed by npm into an ignored folder
if [ ! -f "$peers/node_modules/@cedar-policy/cedar-wasm/nodejs/cedar_wasm.js" ]; then
	echo "bench-policy: installing @cedar-policy/cedar-wasm@$cedar_version into bench/.peers" >&2
	(cd "$peers" && npm install --no-audit --no-fund --silent \
		"@cedar-policy/cedar-wasm@$cedar_version" >/dev/null)
fi

# --- our side: release build of the policy library, then the bench program
cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j2 --target custos_policy >/dev/null
cc -O2 -std=gnu17 -Wall -Wextra -Werror -I"$top/include" "$top/bench/policy/bench_policy.c" \
	"$build/policy/libcustos_policy.a" "$build/core/libcustos_core.a" \
	-lyaml -lcrypto -lpthread -o "$out/bench_policy"

# one core for both sides, when taskset is there
pin=()
if command -v taskset >/dev/null && [ "$(nproc)" -gt 1 ]; then
	pin=(taskset -c 1)
fi
field() { # json key
	python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"
}

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
{
	echo "# custos policy vs cedar-wasm $(date -u +%Y-%m-%dT%H:%MZ)"
	echo "# machine: $cpu, $(nproc) vCPU, $(uname -r); node $(node --version); one core (${pin[*]:-unpinned})"
	echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
	printf '%-6s | %12s %9s %9s | %10s %9s %9s | %8s | %18s %9s | %s\n' rules "custos/s" "p50 us" \
		"p99 us" "cedar/s" "p50 us" "p99 us" ratio "compile med/min ms" "B/rule" "decisions equal"
} | tee "$out/results.txt"
for n in $sizes; do
	dir=$out/n$n
	eqn=2000
	[ "$n" -ge 10000 ] && eqn=400
	python3 "$top/bench/policy/gen.py" "$dir" "$n" 2000
	ours=$("${pin[@]}" "$out/bench_policy" "$dir" "$our_secs" "$eqn")
	theirs=$(CEDAR_PEERS=$peers "${pin[@]}" node "$top/bench/policy/cedar_bench.mjs" "$dir" \
		"$cedar_secs" "$eqn")
	echo "$ours" >"$dir/custos.json"
	echo "$theirs" >"$dir/cedar.json"
	ours_dps=$(field "$ours" decisions_per_s)
	cedar_dps=$(field "$theirs" decisions_per_s)
	same="yes ($(field "$ours" allows)/$eqn allow)"
	if [ "$(field "$ours" digest)" != "$(field "$theirs" digest)" ]; then
		same="NO: custos $(field "$ours" allows) allows, cedar $(field "$theirs" allows)"
	fi
	printf '%-6s | %12.0f %9.3f %9.3f | %10.0f %9.1f %9.1f | %7.0fx | %8.2f / %7.2f %9s | %s\n' "$n" \
		"$ours_dps" "$(field "$ours" p50_us)" "$(field "$ours" p99_us)" "$cedar_dps" \
		"$(field "$theirs" p50_us)" "$(field "$theirs" p99_us)" \
		"$(python3 -c "print($ours_dps/$cedar_dps)")" "$(field "$ours" compile_ms_median)" \
		"$(field "$ours" compile_ms_min)" \
		"$(field "$ours" bytes_per_rule)" "$same" | tee -a "$out/results.txt"
done
echo "raw JSON per size: $out/n*/custos.json, cedar.json" | tee -a "$out/results.txt"
