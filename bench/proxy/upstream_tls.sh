#!/usr/bin/env bash
# bench/proxy/upstream_tls.sh: TLS to the upstream when the upstream closes after every response,
# so every proxied request opens a new upstream TLS connection: custos (one or two builds, A/B)
# beside HAProxy (server `ssl verify required`, session reuse on by default) and nginx
# (`proxy_ssl_session_reuse on`, the default). The upstream: nginx, one worker, TLS (ECDSA P-256,
# tickets on), `keepalive_timeout 0`, `return 200`; it logs $ssl_session_reused per connection,
# (and $ssl_protocol), so each measurement also says which share of the upstream handshakes
# were resumed, and over which version. nginx 1.22's `proxy_ssl_protocols` default stops at
# TLS 1.2, whose resumption makes no key exchange; custos and HAProxy use TLS 1.3, so nginx is
# given `TLSv1.2 TLSv1.3` too (env NGX_UP_PROTOCOLS to change it). Clients:
# wrk -t1 -cCONNS keep-alive over plain HTTP to each proxy; one worker/thread each; custos with
# policy and audit (batch) as bench/proxy/run.sh sets it up (lib.bash).
# CPU = utime+stime of the proxy's process tree over the run, per request; per-core ratio =
# HAProxy's CPU per request / the proxy's (above 1: cheaper than HAProxy).
# Usage: bench/proxy/upstream_tls.sh BUILD_DIR [BUILD_DIR_B]   (release builds: build/release)
# Env: ROUNDS (default 3), DURATION (s per case, default 8), CONNS (default 50).
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
abs() { case "$1" in /*) echo "$1" ;; *) echo "$top/$1" ;; esac; }
A=$(abs "${1:?usage: upstream_tls.sh BUILD_DIR [BUILD_DIR_B]}")/cli/custos
B=""
[ -n "${2:-}" ] && B=$(abs "$2")/cli/custos
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-8} CONNS=${CONNS:-50}
NGX_UP_PROTOCOLS=${NGX_UP_PROTOCOLS:-TLSv1.2 TLSv1.3}
for x in "$A" $B; do [ -x "$x" ] || { echo "upstream_tls: $x not built" >&2; exit 1; }; done
for t in wrk haproxy nginx openssl; do
	command -v $t >/dev/null || { echo "upstream_tls: $t not installed (bench/proxy/run.sh installs them)" >&2; exit 1; }
done

. "$top/bench/proxy/lib.bash"
bench_workdir custos-uptls
bench_ca_certs

P_UP=$(port) P_NGX=$(port) P_HAP=$(port)

# ---- the upstream: TLS, closes after each response, logs whether each session was resumed
bench_nginx up "$P_UP" <<EOF
http {
  log_format reuse '\$ssl_session_reused \$ssl_protocol';
  access_log $w/up/reuse.log reuse buffer=64k flush=100ms;
  keepalive_timeout 0;
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_session_tickets on;
  server {
    listen 127.0.0.1:$P_UP ssl reuseport backlog=4096;
    ssl_certificate $w/srv.crt;
    ssl_certificate_key $w/srv.key;
    location / { return 200 "ok\n"; }
  }
}
EOF

# ---- nginx as the proxy: verified TLS to the upstream, sessions reused (its default)
bench_nginx ngx "$P_NGX" <<EOF
http {
  access_log off;
  keepalive_requests 1000000;
  upstream up { server 127.0.0.1:$P_UP; keepalive 64; }
  server {
    listen 127.0.0.1:$P_NGX reuseport backlog=4096;
    location / {
      proxy_pass https://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate $w/ca.crt;
      proxy_ssl_name localhost;
      proxy_ssl_server_name on;
      proxy_ssl_session_reuse on;
      proxy_ssl_protocols $NGX_UP_PROTOCOLS;
    }
  }
}
EOF
NGX=$NGINX_PID

# ---- HAProxy, one thread: verified TLS to the upstream (session reuse is its default)
BENCH_HAP_UP_EXTRA=" ssl verify required ca-file $w/ca.crt sni str(localhost) verifyhost localhost" \
	bench_haproxy "$P_HAP" "" "$P_UP"

# ---- custos (A, and B when given): the same upstream over verified TLS
KEY=sk-bench
bench_policy "$KEY" up
declare -A PID_OF=([nginx]=$NGX [haproxy]=$HAP) PORT_OF=([nginx]=$P_NGX [haproxy]=$P_HAP)
sides="nginx haproxy custos-a"
export BENCH_UP_SCHEME=https BENCH_UP_EXTRA=", ca_file: $w/ca.crt, server_name: localhost"
for s in a b; do
	bin=$A
	if [ $s = b ]; then
		[ -n "$B" ] || continue
		bin=$B sides="$sides custos-b"
	fi
	p=$(port)
	bench_custos "$bin" "$w/custos-$s" "$p" "$(port)" "$P_UP"
	PID_OF[custos-$s]=$CUSTOS_PID PORT_OF[custos-$s]=$p
done

# reused_lines: "total resumed tls1.3" lines of the upstream's log so far (flushed every 100 ms)
reused_lines() { awk '{n++} $1 == "r" {r++} $2 == "TLSv1.3" {t++} END {print n + 0, r + 0, t + 0}' "$w/up/reuse.log" 2>/dev/null || echo "0 0 0"; }

# warm-up: one request through each (a first full handshake, and a check that all answer 200)
for n in $sides; do
	code=$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KEY" "http://127.0.0.1:${PORT_OF[$n]}/v1/models" || true)
	[ "$code" = 200 ] || { echo "upstream_tls: $n answered $code to the warm-up request" >&2; exit 1; }
done

echo "upstream_tls: $ROUNDS rounds, ${DURATION}s per run, $CONNS client connections (keep-alive, plain HTTP), upstream TLS closing after each response; load $(cut -d' ' -f1-3 /proc/loadavg)"
: >"$w/summary"
for r in $(seq "$ROUNDS"); do
	order=$sides
	[ $((r % 2)) -eq 0 ] && order=$(echo "$sides" | tr ' ' '\n' | tac | tr '\n' ' ')
	for n in $order; do
		sleep 0.2
		read -r l0 r0 v0 < <(reused_lines)
		t0=$(proc_ticks "${PID_OF[$n]}")
		wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "Authorization: Bearer $KEY" "http://127.0.0.1:${PORT_OF[$n]}/v1/models" >"$w/wrk.out"
		t1=$(proc_ticks "${PID_OF[$n]}")
		sleep 0.3 # the upstream's log flush
		read -r l1 r1 v1 < <(reused_lines)
		req=$(awk '/requests in/ {print $1}' "$w/wrk.out")
		rps=$(awk '/^Requests\/sec/ {printf "%.0f", $2}' "$w/wrk.out")
		non2xx=$(awk '/Non-2xx/ {print $NF}' "$w/wrk.out")
		us=$(awk -v t=$((t1 - t0)) -v n="${req:-0}" -v hz="$HZ" 'BEGIN {printf "%.2f", n ? t / hz * 1e6 / n : 0}')
		res=$(awk -v a=$((l1 - l0)) -v b=$((r1 - r0)) 'BEGIN {printf "%.1f", a ? b * 100 / a : 0}')
		v13=$(awk -v a=$((l1 - l0)) -v b=$((v1 - v0)) 'BEGIN {printf "%.0f", a ? b * 100 / a : 0}')
		echo "$n $us $rps $res" >>"$w/summary"
		printf 'round %d %-9s %7s req/s  cpu %6.2f us/request  upstream handshakes %6d, resumed %5s%%, TLS 1.3 %3s%%%s\n' \
			"$r" "$n" "${rps:-0}" "$us" $((l1 - l0)) "$res" "$v13" "${non2xx:+  non-2xx $non2xx}"
	done
done
h=$(awk '$1 == "haproxy" {print $2}' "$w/summary" | med)
echo "medians of $ROUNDS rounds:"
for n in $sides; do
	u=$(awk -v s="$n" '$1 == s {print $2}' "$w/summary" | med)
	q=$(awk -v s="$n" '$1 == s {print $3}' "$w/summary" | med)
	z=$(awk -v s="$n" '$1 == s {print $4}' "$w/summary" | med)
	awk -v n="$n" -v u="$u" -v q="$q" -v z="$z" -v h="$h" 'BEGIN {printf "MEDIAN %-9s %7.0f req/s  %6.2f us/request  per core vs HAProxy %.2f  resumed %.1f%%\n", n, q, u, (u > 0 ? h / u : 0), z}'
done
