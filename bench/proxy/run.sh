#!/usr/bin/env bash
# bench/proxy: custos beside nginx and HAProxy, one run, same machine, same upstream (nginx
# `return 200`, one worker), same client (wrk), one worker each. Cases: plain HTTP keep-alive,
# TLS keep-alive, TLS handshakes (a new connection per request), a 10 MiB response, SSE time to
# first event, memory per idle keep-alive TLS connection. custos runs with policy and audit
# (batch) on. Throughput is reported raw and per proxy-core-second (requests divided by the
# proxy's CPU seconds from /proc/PID/stat, all its descendants included: custos' proxy process
# and audit writer), with wrk's p99 and the host's idle CPU time per request (/proc/stat idle +
# iowait over the run, divided by the requests: on two saturated cores, time a core sat idle
# while client, upstream and proxy waited on each other, rate lost that per-core hides).
# Usage: bench/proxy/run.sh [BUILD_DIR]   (make bench-proxy builds build/release first)
# Env: DURATION (s, default 8), CONNS (default 50), SKIP_INSTALL=1.
set -euo pipefail
[ -n "${BENCH_DEBUG:-}" ] && set -x
top=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$top/build/release}
case "$build" in /*) ;; *) build="$top/$build" ;; esac
custos="$build/cli/custos"
fixture="$build/tests/fixtures/model-server/model-server"
DURATION=${DURATION:-8}
CONNS=${CONNS:-50}
[ -x "$custos" ] || { echo "bench: $custos not built (make bench-proxy)" >&2; exit 1; }

if [ -z "${SKIP_INSTALL:-}" ]; then
	need=()
	for p in wrk haproxy nginx-light; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
	done
	if [ ${#need[@]} -gt 0 ]; then
		[ "$(id -u)" -eq 0 ] || { echo "bench: run as root to install ${need[*]}" >&2; exit 1; }
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >/dev/null
	fi
fi

. "$top/bench/proxy/lib.bash"
bench_workdir custos-bench

# ---- certificates, and the 10 MiB response
bench_ca_certs
head -c $((10 << 20)) /dev/urandom >"$w/big.bin"

P_UP=$(port) P_NGX=$(port) P_NGXS=$(port) P_HAP=$(port) P_HAPS=$(port) P_CU=$(port) P_CUS=$(port)

# ---- upstream: nginx, one worker, `return 200`, and a 10 MiB file
bench_upstream "$P_UP"

# ---- the SSE upstream: the model-server fixture
"$fixture" --listen 127.0.0.1:0 --port-file "$w/sse.port" --tokens 4 --threads 4 >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -s "$w/sse.port" ] && break; sleep 0.05; done
P_SSE=$(cat "$w/sse.port")

# ---- nginx as reverse proxy
bench_nginx ngx "$P_NGX" <<EOF
http {
  access_log off;
  keepalive_requests 1000000;
  upstream up { server 127.0.0.1:$P_UP; keepalive 64; }
  upstream sse { server 127.0.0.1:$P_SSE; keepalive 16; }
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_session_tickets on;
  server {
    listen 127.0.0.1:$P_NGX reuseport backlog=4096;
    listen 127.0.0.1:$P_NGXS ssl reuseport backlog=4096;
    ssl_certificate $w/srv.crt;
    ssl_certificate_key $w/srv.key;
    location /v1/chat/ { proxy_pass http://sse; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; }
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
EOF

NGX_MASTER=$NGINX_PID

# ---- HAProxy, one thread
bench_haproxy "$P_HAP" "$P_HAPS" "$P_UP" "$P_SSE"

# ---- custos: one worker, policy + audit (batch)
KEY=sk-bench
bench_policy "$KEY" up sse
bench_custos "$custos" "$w" "$P_CU" "$P_CUS" "$P_UP" "$P_SSE"
CU=$CUSTOS_PID

# ---- measurement: CPU of each proxy's process tree (proc_ticks), the host's idle time
declare -A PID_OF=([direct]=0 [nginx]=$NGX_MASTER [haproxy]=$HAP [custos]=$CU)
declare -A PLAIN=([direct]=$P_UP [nginx]=$P_NGX [haproxy]=$P_HAP [custos]=$P_CU)
declare -A TLS=([direct]="" [nginx]=$P_NGXS [haproxy]=$P_HAPS [custos]=$P_CUS)
order=(direct nginx haproxy custos)
results="$w/results"
: >"$results"

# run_wrk NAME CASE URL [wrk args...]: one wrk run; appends
# "case name rps p99_ms cpu_s transfer/s idle_us_per_request".
run_wrk() {
	local name=$1 case=$2 url=$3
	shift 3
	local pid=${PID_OF[$name]} t0 t1 i0 i1 out rps p99 cpu idle req
	t0=$([ "$pid" -gt 0 ] && proc_ticks "$pid" || echo 0)
	i0=$(idle_ticks)
	out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -H "Authorization: Bearer $KEY" "$@" "$url" 2>&1)
	i1=$(idle_ticks)
	t1=$([ "$pid" -gt 0 ] && proc_ticks "$pid" || echo 0)
	rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
	p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}' <<<"$out")
	local xfer
	xfer=$(awk '/^Transfer\/sec/ {print $2}' <<<"$out")
	cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$HZ" 'BEGIN {printf "%.2f", (b - a) / hz}')
	req=$(awk '/requests in/ {print $1}' <<<"$out")
	idle=$(awk -v a="$i0" -v b="$i1" -v hz="$HZ" -v n="${req:-0}" 'BEGIN {printf "%.2f", (n > 0) ? (b - a) / hz * 1e6 / n : 0}')
	echo "$case $name ${rps:-0} ${p99:-0} $cpu ${xfer:-0} $idle" >>"$results"
	printf '  %-22s %-8s %10s req/s  p99 %8s ms  proxy cpu %6s s  idle %6s us/request  %s/s\n' "$case" "$name" "${rps:-0}" "${p99:-0}" "$cpu" "$idle" "${xfer:-0}"
}

echo "bench/proxy: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $CONNS connections, ${DURATION}s per case, 1 worker each"
# ---- memory per idle keep-alive TLS connection (RSS delta / connections), after one request;
# measured first, on fresh processes (later cases leave freed memory that hides the growth)
idle_mem() {
	local pid=$1 port=$2 n=400 before after
	before=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
	python3 "$top/bench/proxy/idle_tls.py" "$port" "$n" "$KEY" 4 >"$w/idle.out" 2>&1 &
	local holder=$!
	for _ in $(seq 200); do grep -q ready "$w/idle.out" 2>/dev/null && break; sleep 0.05; done
	sleep 0.5
	after=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
	wait $holder 2>/dev/null || true
	awk -v a="$before" -v b="$after" -v n="$n" 'BEGIN {printf "%.1f", (b - a) / n}'
}
if command -v python3 >/dev/null; then
	# nginx's worker holds the connections; HAProxy is one process; custos' connections are
	# held by the process that listens (the proxy, a child of the supervisor).
	ngx_worker=$(ps -o pid= --ppid "$NGX_MASTER" | head -1 | tr -d ' ')
	cu_proxy=$(ss -Hltnp "sport = :$P_CUS" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | awk 'NR == 1')
	for n in nginx haproxy custos; do
		case $n in
		nginx) pid=$ngx_worker ;;
		custos) pid=${cu_proxy:-$CU} ;;
		*) pid=${PID_OF[$n]} ;;
		esac
		v=$(idle_mem "$pid" "${TLS[$n]}")
		echo "idle-conn-kib $n $v 0 0 0" >>"$results"
		printf '  %-22s %-8s %8s KiB RSS per idle keep-alive TLS connection\n' idle-tls "$n" "$v"
	done
fi

for n in "${order[@]}"; do
	run_wrk "$n" plain-keepalive "http://127.0.0.1:${PLAIN[$n]}/v1/models"
done
for n in nginx haproxy custos; do
	run_wrk "$n" tls-keepalive "https://127.0.0.1:${TLS[$n]}/v1/models"
done
for n in nginx haproxy custos; do
	run_wrk "$n" tls-handshakes "https://127.0.0.1:${TLS[$n]}/v1/models" -H 'Connection: close'
done
CONNS_SAVE=$CONNS
CONNS=4
for n in "${order[@]}"; do
	run_wrk "$n" 10MiB-response "http://127.0.0.1:${PLAIN[$n]}/big"
done
CONNS=$CONNS_SAVE

# ---- SSE time to first event (median of 30, ms), each proxy minus direct
sse_body='{"model":"sse","stream":true,"messages":[{"role":"user","content":"a b c d"}]}'
ttfe() {
	local port=$1 i
	for i in $(seq 30); do
		curl -sS -N -o /dev/null -w '%{time_starttransfer}\n' -H "Authorization: Bearer $KEY" \
			-H 'Content-Type: application/json' -d "$sse_body" "http://127.0.0.1:$port/v1/chat/completions"
	done | sort -n | awk '{a[NR]=$1} END {printf "%.3f", a[int((NR+1)/2)] * 1000}'
}
declare -A SSE_PORT=([direct]=$P_SSE [nginx]=$P_NGX [haproxy]=$P_HAP [custos]=$P_CU)
for n in "${order[@]}"; do
	v=$(ttfe "${SSE_PORT[$n]}")
	echo "sse-first-event $n $v 0 0 0" >>"$results"
	printf '  %-22s %-8s %8s ms (median of 30)\n' sse-first-event "$n" "$v"
done

# ---- the table
echo
echo "| case | proxy | req/s | req per proxy-core-s | p99 ms | host idle us/req | vs nginx (per core) | vs HAProxy (per core) |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
awk '
$1 ~ /keepalive|handshakes|10MiB/ {
	c=$1; n=$2; rps[c,n]=$3; p99[c,n]=$4; cpu[c,n]=$5; x[c,n]=$6; idle[c,n]=$7; cases[c]=1; names[c,n]=1
}
END {
	split("plain-keepalive tls-keepalive tls-handshakes 10MiB-response", order, " ")
	split("direct nginx haproxy custos", pn, " ")
	for (i = 1; i <= 4; i++) { c = order[i]
		for (j = 1; j <= 4; j++) { n = pn[j]; if (!((c, n) in names)) continue
			pc = (cpu[c,n] > 0) ? rps[c,n] / cpu[c,n] * 1 : 0
			tot = rps[c,n] * '"$DURATION"'
			pc = (cpu[c,n] > 0) ? tot / cpu[c,n] : 0
			pcs[c,n] = pc
			vs_n = (c,"nginx") in pcs && pcs[c,"nginx"] > 0 && pc > 0 ? sprintf("%.2f", pc / pcs[c,"nginx"]) : "-"
			vs_h = "-"
			line[c,n] = sprintf("| %s | %s | %.0f%s | %s | %s |", c, n, rps[c,n], (c == "10MiB-response") ? " (" x[c,n] "/s)" : "", (pc > 0) ? sprintf("%.0f", pc) : "-", p99[c,n] " | " idle[c,n])
		}
		for (j = 1; j <= 4; j++) { n = pn[j]; if (!((c, n) in names)) continue
			vn = (pcs[c,"nginx"] > 0 && pcs[c,n] > 0) ? sprintf("%.2f", pcs[c,n] / pcs[c,"nginx"]) : "-"
			vh = (pcs[c,"haproxy"] > 0 && pcs[c,n] > 0) ? sprintf("%.2f", pcs[c,n] / pcs[c,"haproxy"]) : "-"
			print line[c,n] " " vn " | " vh " |"
		}
	}
}' "$results"
awk '$1 == "sse-first-event" {v[$2]=$3} END {printf "\nSSE first event (median ms): direct %s, nginx %s (+%.3f), haproxy %s (+%.3f), custos %s (+%.3f)\n", v["direct"], v["nginx"], v["nginx"]-v["direct"], v["haproxy"], v["haproxy"]-v["direct"], v["custos"], v["custos"]-v["direct"]}' "$results"
awk '$1 == "idle-conn-kib" {printf "idle keep-alive TLS connection, RSS: %s %s KiB\n", $2, $3}' "$results"
audit_events=$(cat "$w"/audit/*.jsonl 2>/dev/null | wc -l)
echo "custos audit lines written during the run: $audit_events"
