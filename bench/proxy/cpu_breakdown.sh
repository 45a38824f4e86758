#!/usr/bin/env bash
# bench/proxy/cpu_breakdown.sh: CPU per request of a running proxy, by thread, over the process
# and all its descendants (custos up: the supervisor, the proxy process with its worker and
# audit client threads, the audit writer), from utime+stime in /proc while wrk drives it.
# Usage: bench/proxy/cpu_breakdown.sh PID URL [SECONDS] [extra wrk args...]
#   e.g. bench/proxy/cpu_breakdown.sh "$HAPROXY_PID" http://127.0.0.1:8080/
# Prints one line: requests, then pid/comm-tid:µs per request for each thread that used CPU, and
# the total. Tick-based (1/CLK_TCK): use runs of a few seconds and tens of thousands of requests.
set -euo pipefail
pid=$1 url=$2 secs=${3:-6}
shift $(($# < 3 ? $# : 3))
hz=$(getconf CLK_TCK)
. "$(dirname "$0")/lib.bash" # descendants
procs="$pid $(descendants "$pid" | tr '\n' ' ')"
ticks() { awk '{print $14 + $15}' "$1"; }
declare -A before
for p in $procs; do
	for t in /proc/"$p"/task/*; do before[$t]=$(ticks "$t/stat"); done
done
n=$(wrk -t1 -c"${CONNS:-50}" -d"${secs}s" "$@" "$url" | awk '/requests in/ {print $1}')
[ "${n:-0}" -gt 0 ] || { echo "cpu_breakdown: no requests completed" >&2; exit 1; }
us() { awk -v d="$1" -v n="$n" -v hz="$hz" 'BEGIN {printf "%.2f", d / hz * 1e6 / n}'; }
out="requests=$n" total=0
for p in $procs; do
	for t in /proc/"$p"/task/*; do
		[ -r "$t/stat" ] || continue
		d=$(($(ticks "$t/stat") - ${before[$t]:-0}))
		total=$((total + d))
		[ "$d" -gt 0 ] && out="$out $p/$(cat "$t/comm")-${t##*/}:$(us "$d")"
	done
done
echo "$out total_us_per_request:$(us "$total") load:$(cut -d' ' -f1 /proc/loadavg)"
