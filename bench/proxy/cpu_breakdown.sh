#!/usr/bin/env bash
# bench/proxy/cpu_breakdown.sh: CPU per request of a running proxy, by thread, and of its child
# processes (custos' audit writer), from utime+stime in /proc while wrk drives it.
# Usage: bench/proxy/cpu_breakdown.sh PID URL [SECONDS] [extra wrk args...]
#   e.g. bench/proxy/cpu_breakdown.sh "$(pgrep -o -x haproxy)" http://127.0.0.1:8080/
# Prints one line: requests, then name-tid:µs per request for each thread that used CPU,
# child-pid:µs for each child process, and the total. Figures are tick-based (1/CLK_TCK):
# use runs of at least a few seconds and tens of thousands of requests.
set -euo pipefail
pid=$1 url=$2 secs=${3:-6}
shift $(($# < 3 ? $# : 3))
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "$1"; }
declare -A before
for t in /proc/"$pid"/task/*; do before[$t]=$(ticks "$t/stat"); done
children=$(ps -o pid= --ppid "$pid" | tr -d ' ' || true)
for c in $children; do before[/proc/$c]=$(ticks "/proc/$c/stat"); done
n=$(wrk -t1 -c"${CONNS:-50}" -d"${secs}s" "$@" "$url" | awk '/requests in/ {print $1}')
[ "${n:-0}" -gt 0 ] || { echo "cpu_breakdown: no requests completed" >&2; exit 1; }
out="requests=$n" total=0
us() { awk -v d="$1" -v n="$n" -v hz="$hz" 'BEGIN {printf "%.2f", d / hz * 1e6 / n}'; }
for t in /proc/"$pid"/task/*; do
	d=$(($(ticks "$t/stat") - ${before[$t]:-0}))
	total=$((total + d))
	[ "$d" -gt 0 ] && out="$out $(cat "$t/comm")-${t##*/}:$(us "$d")"
done
for c in $children; do
	[ -r "/proc/$c/stat" ] || continue
	d=$(($(ticks "/proc/$c/stat") - ${before[/proc/$c]}))
	total=$((total + d))
	out="$out child-$c:$(us "$d")"
done
echo "$out total_us_per_request:$(us "$total") load:$(cut -d' ' -f1 /proc/loadavg)"
