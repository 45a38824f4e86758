# shellcheck shell=bash
# Shared by the bench/proxy scripts: the work directory and its cleanup, free ports, the
# certificates, nginx (the upstream all measure against), HAProxy and custos set up alike, and
# the CPU of a process tree.

# bench_workdir PREFIX: makes $w (mode 700), an empty pids array, and an EXIT trap that stops
# every pid in it and removes $w (kept with BENCH_KEEP=1).
bench_workdir() {
	w=$(mktemp -d "/tmp/$1.XXXXXX")
	chmod 700 "$w"
	pids=()
	trap bench_cleanup EXIT
}
bench_cleanup() {
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	[ -n "${BENCH_KEEP:-}" ] && echo "kept $w" || rm -rf "$w"
}

port() { perl -MIO::Socket::INET -e 'my $s=IO::Socket::INET->new(Listen=>1,LocalAddr=>"127.0.0.1:0") or die; print $s->sockport'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "bench: nothing on port $1" >&2; return 1; }

# bench_ca_certs: in $w, a CA (ca.key, ca.crt: CN bench-ca) and a server certificate it signs
# for localhost and 127.0.0.1 (srv.key, srv.crt, and srv.pem: both, for HAProxy); ECDSA P-256,
# valid a day.
bench_ca_certs() {
	(
		cd "$w" || exit
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
			-subj /CN=bench-ca -keyout ca.key -out ca.crt
		printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >ext
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
			-keyout srv.key -out srv.csr
		openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
			-extfile ext -out srv.crt
		cat srv.crt srv.key >srv.pem
		chmod 600 srv.key srv.pem
	) >/dev/null 2>&1
}

# bench_nginx NAME PORT: nginx, one worker, in $w/NAME (nginx.pid, error.log), the rest of its
# configuration (the http block) read from stdin. Sets NGINX_PID once PORT answers.
bench_nginx() {
	mkdir -p "$w/$1"
	{
		printf 'worker_processes 1;\npid %s/nginx.pid;\nerror_log %s/error.log;\n' "$w/$1" "$w/$1"
		printf 'events { worker_connections 4096; }\n'
		cat
	} >"$w/$1/nginx.conf"
	nginx -p "$w/$1" -c "$w/$1/nginx.conf" -g 'daemon off;' &
	NGINX_PID=$!
	pids+=($!)
	wait_port "$2"
}

# bench_upstream PORT: the upstream everyone is measured against, in $w/up: nginx, one worker,
# `return 200 "ok\n"`, and /big serving $w/big.bin (when the caller made it; its workers run as
# root to read it in $w).
bench_upstream() {
	bench_nginx up "$1" <<EOF
user root;
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$1 reuseport backlog=4096;
    location /big { alias $w/big.bin; }
    location / { return 200 "ok\n"; }
  }
}
EOF
}

# descendants PID: every pid below PID (the CPU of a whole process tree is summed over them).
descendants() {
	local p
	for p in $(ps -o pid= --ppid "$1" 2>/dev/null); do
		echo "$p"
		descendants "$p"
	done
}

# proc_ticks PID: CPU ticks (utime+stime) of PID and all its descendants: for custos up, the
# supervisor, its proxy process and the audit writer (a grandchild). HZ: ticks per second.
proc_ticks() {
	local p t=0
	for p in $(descendants "$1") "$1"; do
		[ -r "/proc/$p/stat" ] || continue
		t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
	done
	echo "$t"
}
HZ=$(getconf CLK_TCK)
# idle_ticks: the host's idle + iowait ticks so far (/proc/stat), all CPUs.
idle_ticks() { awk '/^cpu / {print $5 + $6}' /proc/stat; }
# med: the median of the numbers on stdin, one a line.
med() { sort -g | awk '{a[NR] = $1} END {print NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

# bench_custos BIN DIR PLAIN_PORT TLS_PORT UP_PORT [SSE_PORT]: custos up with its files in DIR
# (keys/, audit/, custos.yaml, custos.log): one worker, plain and TLS listeners ($w/srv.crt),
# model `up` (and `sse` with SSE_PORT), the policy $w/policy.yaml (bench_policy), the audit
# trail in `batch` mode with signed checkpoints, batch_window $AUDIT_WINDOW (default 10ms, the
# configuration's default). Sets CUSTOS_PID once the plain port answers. BENCH_UP_SCHEME (https)
# and BENCH_UP_EXTRA (more keys of the upstream, after a comma) make `up` a TLS upstream.
bench_custos() {
	local bin=$1 d=$2 sse=""
	mkdir -p "$d/keys" "$d/audit"
	"$bin" audit keygen "$d/keys" >/dev/null 2>&1 || echo "bench: no audit keygen: unsigned checkpoints" >&2
	[ -n "${6:-}" ] && sse=$'\n  - id: sse\n    upstream: { url: "http://127.0.0.1:'"$6"$'/" }'
	cat >"$d/custos.yaml" <<EOF
version: 1
log: { level: warn }
workers: 1
listeners:
  - id: plain
    address: "127.0.0.1:$3"
  - id: tls
    address: "127.0.0.1:$4"
    tls: { cert: $w/srv.crt, key: $w/srv.key }
models:
  - id: up
    upstream: { url: "${BENCH_UP_SCHEME:-http}://127.0.0.1:$5/", pool_size: 128${BENCH_UP_EXTRA:-} }$sse
audit:
  dir: $d/audit
  durability: batch
  batch_window: ${AUDIT_WINDOW:-10ms}
$([ -f "$d/keys/audit.key" ] && echo "  signing_key: $d/keys/audit.key")
policy:
  file: $w/policy.yaml
EOF
	chmod 600 "$d/custos.yaml"
	"$bin" up -c "$d/custos.yaml" 2>"$d/custos.log" &
	CUSTOS_PID=$!
	pids+=($!)
	wait_port "$3"
}

# bench_haproxy PLAIN_PORT TLS_PORT UP_PORT [SSE_PORT]: HAProxy, one thread, in front of the
# upstream (and /v1/chat/ to SSE_PORT when given), TLS with $w/srv.pem (no TLS listener when
# TLS_PORT is empty), its messages in $w/haproxy.log; sets HAP to its pid. BENCH_HAP_UP_EXTRA:
# more options of the upstream's server line (TLS to the upstream).
bench_haproxy() {
	local sse_use="" sse_backend="" tls_bind=""
	[ -n "$2" ] && tls_bind="  bind 127.0.0.1:$2 ssl crt $w/srv.pem alpn http/1.1"
	if [ -n "${4:-}" ]; then
		sse_use="  use_backend sse if { path_beg /v1/chat/ }"
		sse_backend=$(printf 'backend sse\n  server s2 127.0.0.1:%s' "$4")
	fi
	cat >"$w/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 8000
  ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:$1
$tls_bind
$sse_use
  default_backend up
backend up
  server s1 127.0.0.1:$3${BENCH_HAP_UP_EXTRA:-}
$sse_backend
EOF
	haproxy -f "$w/haproxy.cfg" -db >"$w/haproxy.log" 2>&1 &
	HAP=$!
	pids+=($HAP)
	wait_port "$1"
}

# bench_policy KEY MODEL...: $w/policy.yaml allowing the API key KEY to the models named,
# with no effective rate limit (policy evaluated on every request, as the benches want).
bench_policy() {
	local key=$1 m models=""
	shift
	for m in "$@"; do models+="  $m: { isolation: none }"$'\n'; done
	cat >"$w/policy.yaml" <<EOF
version: 1
principals:
  bench: { match: { api_key_sha256: "$(printf %s "$key" | openssl dgst -sha256 -r | cut -d' ' -f1)" } }
models:
${models}rules:
  - id: bench-any
    effect: allow
    when: { direction: ingress, principal: bench }
    limits: { requests_per_second: 10000000 }
EOF
	chmod 644 "$w/policy.yaml"
}
