#!/usr/bin/env bash
# bench/proxy/ab_keepalive.sh: CPU per keep-alive request of HAProxy and of two custos builds
# (before/after), run in turn in the same minute against one upstream nginx (`return 200`, one
# worker), plain HTTP and TLS 1.3, wrk -t1 -c50; custos with API-key auth, policy on every
# request and audit in `batch` mode with signed checkpoints, as bench/proxy/run.sh sets it up.
# CPU = utime+stime of the whole process tree (custos: supervisor, proxy, audit writer).
# Usage: bench/proxy/ab_keepalive.sh BUILD_BEFORE BUILD_AFTER
# Env: ROUNDS (default 3), DURATION (s per case, default 6), CONNS (default 50), CASES (default
# "plain tls"; "big" adds a 10 MiB response over 4 plain connections, per-response CPU; "hs" TLS
# handshakes, a new connection per request),
# AUDIT_WINDOW (custos' audit.batch_window on both sides, default 10ms, the configuration default).
# BREAKDOWN=1 also prints, per measurement, the CPU per request of each thread of the tree, and at
# the end the median per thread name (MEDIAN-THREAD lines).
# Every measurement also gives the raw rate, wrk's p50 and p99 latency, and the host's idle CPU
# time per request (/proc/stat idle + iowait over the run, in us per request: on a saturated
# two-core host, time a core sat idle while the client, upstream and proxy wait on each other).
# Prints one line per measurement, per round custos/HAProxy per-core ratios, and at the end the
# medians over the rounds (MEDIAN lines; MEDIAN-LAT: req/s, p99 and idle per request).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
abs() { case "$1" in /*) echo "$1" ;; *) echo "$top/$1" ;; esac; }
A=$(abs "${1:?before build dir}")/cli/custos
B=$(abs "${2:?after build dir}")/cli/custos
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-6} CONNS=${CONNS:-50} CASES=${CASES:-plain tls}
for x in "$A" "$B"; do [ -x "$x" ] || { echo "ab: $x not built" >&2; exit 1; }; done

. "$top/bench/proxy/lib.bash"
bench_workdir custos-ab

bench_ca_certs
case " $CASES " in *" big "*) head -c $((10 << 20)) /dev/urandom >"$w/big.bin" ;; esac

P_UP=$(port) P_HAP=$(port) P_HAPS=$(port)
bench_upstream "$P_UP"

bench_haproxy "$P_HAP" "$P_HAPS" "$P_UP"

KEY=sk-bench
bench_policy "$KEY" up
declare -A PID_OF=([haproxy]=$HAP) PLAIN=([haproxy]=$P_HAP) TLS=([haproxy]=$P_HAPS)
for side in before after; do
	bin=$A
	[ $side = after ] && bin=$B
	d="$w/$side"
	p=$(port) ps_=$(port)
	bench_custos "$bin" "$d" "$p" "$ps_" "$P_UP"
	PID_OF[$side]=$CUSTOS_PID
	PLAIN[$side]=$p TLS[$side]=$ps_
done

# threads PID: "pid/comm-tid ticks" for every thread of the tree (BREAKDOWN=1)
threads() {
	local p t
	for p in $(descendants "$1") "$1"; do
		for t in /proc/"$p"/task/*; do
			[ -r "$t/stat" ] && echo "$p/$(tr ' ' _ <"$t/comm")-${t##*/} $(awk '{print $14 + $15}' "$t/stat")"
		done
	done
}
# wrk's output to "req/s p50_ms p99_ms" (latencies in ms whatever unit wrk printed)
wrk_lat() {
	awk 'function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
		/^Requests\/sec/ {r = $2} /^ +50%/ {p50 = ms($2)} /^ +99%/ {p99 = ms($2)}
		END {printf "%.0f %.3f %.3f\n", r, p50, p99}' "$1"
}
# one NAME URL [CONNS]: prints "requests cpu_ticks"; with BREAKDOWN=1 also, on stderr, the CPU
# per request of each thread of the tree (pid/comm-tid: supervisor, worker, audit sender, writer...)
one() {
	local t0 t1 n th0 i0 i1
	t0=$(proc_ticks "${PID_OF[$1]}")
	i0=$(idle_ticks)
	[ -n "${BREAKDOWN:-}" ] && th0=$(threads "${PID_OF[$1]}")
	wrk -t1 -c"${3:-$CONNS}" -d"${DURATION}s" --latency -H "Authorization: Bearer $KEY" ${WRK_EXTRA:+-H "$WRK_EXTRA"} "$2" >"$w/wrk.out"
	n=$(awk '/requests in/ {print $1}' "$w/wrk.out")
	t1=$(proc_ticks "${PID_OF[$1]}")
	i1=$(idle_ticks)
	echo "$(wrk_lat "$w/wrk.out") $(awk -v t=$((i1 - i0)) -v n="${n:-0}" -v hz="$HZ" 'BEGIN {printf "%.2f", n ? t / hz * 1e6 / n : 0}')" >"$w/lat.now"
	if [ -n "${BREAKDOWN:-}" ]; then
		{ echo "$th0"; echo "--"; threads "${PID_OF[$1]}"; } | awk -v n="${n:-0}" -v hz="$HZ" -v who="$1" \
			-v cs="$CASE_NOW" -v roles="$w/threads" '
			$1 == "--" { after = 1; next }
			!after { b[$1] += $2; next }
			{ a[$1] += $2 }
			END { out = "  by thread " who ":"; for (c in a) if (a[c] - b[c] > 0 && n > 0) {
				us = (a[c] - b[c]) / hz * 1e6 / n
				out = out sprintf(" %s %.2f", c, us)
				r = c; sub(/^[0-9]+\//, "", r); sub(/-[0-9]+$/, "", r) # the thread name
				role[r] += us }
				print out " us/request"
				for (r in role) printf "%s %s %s %.3f\n", cs, who, r, role[r] >> roles }' >&2
	fi
	echo "${n:-0} $((t1 - t0))"
}
echo "ab_keepalive: $ROUNDS rounds, ${DURATION}s per case, $CONNS connections; load $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
	for case in $CASES; do
		declare -A us=()
		order="haproxy before after"
		[ $((r % 2)) -eq 0 ] && order="haproxy after before" # no side always runs last
		for n in $order; do
			c=$CONNS WRK_EXTRA=
			case $case in
			plain) url="http://127.0.0.1:${PLAIN[$n]}/v1/models" ;;
			tls) url="https://127.0.0.1:${TLS[$n]}/v1/models" ;;
			big) url="http://127.0.0.1:${PLAIN[$n]}/big" c=4 ;;
			hs) url="https://127.0.0.1:${TLS[$n]}/v1/models" WRK_EXTRA="Connection: close" ;;
			*) echo "ab: unknown case $case" >&2; exit 1 ;;
			esac
			CASE_NOW=$case
			read -r req tk < <(one "$n" "$url" "$c")
			us[$n]=$(awk -v t="$tk" -v n="$req" -v hz="$HZ" 'BEGIN {printf "%.2f", n ? t / hz * 1e6 / n : 0}')
			echo "$case $n ${us[$n]}" >>"$w/summary"
			read -r rps p50 p99 idle <"$w/lat.now"
			echo "$case $n $rps $p99 $idle" >>"$w/latency"
			printf 'round %d %-5s %-8s requests %8d  cpu %6.2f s  %6s us/request  %6s req/s p50 %s p99 %s ms idle %s us/request  load %s\n' "$r" "$case" "$n" "$req" \
				"$(awk -v t="$tk" -v hz="$HZ" 'BEGIN {print t / hz}')" "${us[$n]}" "$rps" "$p50" "$p99" "$idle" "$(cut -d' ' -f1 /proc/loadavg)"
		done
		awk -v r="$r" -v c="$case" -v h="${us[haproxy]}" -v b="${us[before]}" -v a="${us[after]}" \
			'BEGIN {printf "RATIO round %d %-5s custos/HAProxy per core: before %.2f after %.2f  (after vs before CPU/request %+.1f%%)\n", r, c, h / b, h / a, (a / b - 1) * 100}'
	done
done
# medians over the rounds: per side, the per-core ratios of the medians, and the median of the
# per-round after-vs-before changes
echo "medians of $ROUNDS rounds:"
for case in $CASES; do
	h=$(awk -v c="$case" '$1 == c && $2 == "haproxy" {print $3}' "$w/summary" | med)
	b=$(awk -v c="$case" '$1 == c && $2 == "before" {print $3}' "$w/summary" | med)
	a=$(awk -v c="$case" '$1 == c && $2 == "after" {print $3}' "$w/summary" | med)
	chg=$(awk -v c="$case" '$1 == c && $2 == "before" {b[++nb] = $3} $1 == c && $2 == "after" {a[++na] = $3}
		END {for (i = 1; i <= na && i <= nb; i++) print (a[i] / b[i] - 1) * 100}' "$w/summary" | med)
	awk -v c="$case" -v h="$h" -v b="$b" -v a="$a" -v chg="$chg" 'BEGIN {printf "MEDIAN %-5s us/request haproxy %.2f before %.2f after %.2f; per core vs HAProxy before %.3f after %.3f; after vs before CPU/request, median of rounds %+.1f%%\n", c, h, b, a, h / b, h / a, chg}'
done
for case in $CASES; do
	for n in haproxy before after; do
		printf 'MEDIAN-LAT %-5s %-8s %7.0f req/s  p99 %6.3f ms  idle %5.2f us/request\n' "$case" "$n" \
			"$(awk -v c="$case" -v s="$n" '$1 == c && $2 == s {print $3}' "$w/latency" | med)" \
			"$(awk -v c="$case" -v s="$n" '$1 == c && $2 == s {print $4}' "$w/latency" | med)" \
			"$(awk -v c="$case" -v s="$n" '$1 == c && $2 == s {print $5}' "$w/latency" | med)"
	done
done
# BREAKDOWN=1: per case, side and thread name (custos names its threads: custos-w0 for a worker,
# custos-audit for the writer, custos-asend/-aack for the audit client's threads...), the median
# over the rounds of the CPU per request
if [ -n "${BREAKDOWN:-}" ] && [ -s "$w/threads" ]; then
	sort -u -k1,3 "$w/threads" | awk '{print $1, $2, $3}' | while read -r cs who role; do
		m=$(awk -v c="$cs" -v s="$who" -v r="$role" '$1 == c && $2 == s && $3 == r {print $4}' "$w/threads" | med)
		printf 'MEDIAN-THREAD %-5s %-8s %-16s %6.2f us/request\n' "$cs" "$who" "$role" "$m"
	done
fi
# the trails must verify
for side in before after; do
	bin=$A
	[ $side = after ] && bin=$B
	if "$bin" audit verify --live --pubkey "$w/$side/keys/audit.pub" "$w/$side/audit" >"$w/verify.out" 2>&1; then
		echo "audit verify $side: ok ($(cat "$w/$side"/audit/*.jsonl | wc -l) lines)"
	else
		echo "audit verify $side: FAILED: $(tail -2 "$w/verify.out")"
	fi
done
