#!/usr/bin/env bash
# bench/egress: requests/s and MB/s through custos' egress forward proxy, side by side with
# Squid and tinyproxy, plain (absolute URI) and CONNECT (TLS inside the tunnel), plus custos
# with TLS interception. nginx serves the data (1 KiB and 1 MiB files, HTTP and HTTPS).
# Load: bench/egress/eload.c (closed loop, keep-alive, one connection per thread).
# Also prints requests per proxy CPU-second (utime+stime of the proxy process), the fair
# comparison on a machine whose two cores are shared with the load generator and nginx.
#
#   bench/egress/run.sh [BUILD_DIR]    (`make bench-egress`; about 2 minutes in all)
# BUILD_DIR (default build/release) is built (RelWithDebInfo) when it has no cli/custos;
# CUSTOS_BIN overrides the binary, DUR the seconds per run (default 6), CONNS the
# connections (default 50; DUR at least 2), REPS the rounds (default 1; with more, the proxies take turns in
# every round and a table of medians follows), CUSTOS_BASE a second custos binary run side by
# side as "custos-base" (before/after comparisons in one run), MODES a space-separated subset of
# the modes (plain-1KiB connect-1KiB plain-1MiB connect-1MiB icpt-1KiB icpt-1MiB). Needs root for apt-get (squid,
# tinyproxy, nginx) when missing.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:-$SRC/build/release}
case $BUILD in /*) ;; *) BUILD=$SRC/$BUILD ;; esac
DUR=${DUR:-6}
CONNS=${CONNS:-50}
REPS=${REPS:-1}

need=()
for p in squid tinyproxy nginx-light wrk; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >/dev/null
fi
if [ -z "${CUSTOS_BIN:-}" ]; then
	if [ ! -x "$BUILD/cli/custos" ]; then
		cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
		cmake --build "$BUILD" -j2 --target custos >/dev/null
	fi
	CUSTOS_BIN="$BUILD/cli/custos"
fi

W=$(mktemp -d /tmp/custos-bench-egress-XXXXXX)
chmod 755 "$W"
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$W"
}
trap cleanup EXIT
cd "$W"
gcc -O2 -o eload "$SRC/bench/egress/eload.c" -lssl -lcrypto -lpthread

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P_HTTP=$(port); P_TLS=$(port); P_ICPT=$(port); P_IN=$(port); P_EG=$(port); P_SQ=$(port); P_TP=$(port)
P_IN2=$(port); P_EG2=$(port)

# certificates
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
	-keyout ca.key -out ca.crt -addext basicConstraints=critical,CA:TRUE 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
	-keyout srv.key -out srv.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost\n' >srv.ext
openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile srv.ext \
	-out srv.crt 2>/dev/null
"$CUSTOS_BIN" ca init "$W/custos-ca" >/dev/null

# data: nginx, one worker
mkdir -p www logs
head -c 1024 /dev/zero | tr '\0' a >www/small
head -c $((1 << 20)) /dev/zero | tr '\0' b >www/big
cat >nginx.conf <<EON
worker_processes 1;
daemon off;
pid $W/nginx.pid;
error_log $W/logs/error.log crit;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$P_HTTP; root $W/www; }
  server { listen 127.0.0.1:$P_TLS ssl; ssl_certificate $W/srv.crt; ssl_certificate_key $W/srv.key; root $W/www; }
  server { listen 127.0.0.1:$P_ICPT ssl; ssl_certificate $W/srv.crt; ssl_certificate_key $W/srv.key; root $W/www; }
}
EON
nginx -c "$W/nginx.conf" -p "$W" & PIDS+=($!)

# custos
cat >policy.yaml <<EOY
version: 1
mode: enforce
models:
  m1: { isolation: process }
data:
  plain: { url: "http://localhost:$P_HTTP/", classification: internal }
  tls: { url: "https://localhost:$P_TLS/", classification: internal }
  icpt: { url: "https://localhost:$P_ICPT/", classification: internal }
rules:
  - id: read
    effect: allow
    when: { direction: egress, data: [plain, tls, icpt] }
EOY
cat >custos.yaml <<EOY
version: 1
log: { level: warn, format: json }
workers: 1
listeners:
  - { id: local, address: "127.0.0.1:$P_IN" }
models:
  - { id: m1, upstream: { url: "http://127.0.0.1:9" } }
data_sources:
  - { id: plain, url: "http://localhost:$P_HTTP/", classification: internal, allow_private_addresses: true }
  - { id: tls, url: "https://localhost:$P_TLS/", classification: internal, allow_private_addresses: true }
  - { id: icpt, url: "https://localhost:$P_ICPT/", classification: internal, allow_private_addresses: true, intercept: true, ca_file: "$W/ca.crt" }
egress:
  port: $P_EG
  ca_dir: "$W/custos-ca"
  max_connections_per_sandbox: 1024
  max_response: 16GiB             # a tunnel's cap counts all its bytes: keep-alive runs long
audit: { dir: "$W/audit" }
policy: { file: "$W/policy.yaml" }
EOY
chmod 600 custos.yaml policy.yaml
"$CUSTOS_BIN" up -c custos.yaml 2>custos.log & CUSTOS=$!
PIDS+=($CUSTOS)
BASE=
if [ -n "${CUSTOS_BASE:-}" ]; then
	sed -e "s/:$P_IN\"/:$P_IN2\"/" -e "s/port: $P_EG\$/port: $P_EG2/" -e "s|$W/audit|$W/audit-base|" \
		custos.yaml >custos-base.yaml
	chmod 600 custos-base.yaml
	"$CUSTOS_BASE" up -c custos-base.yaml 2>custos-base.log & BASE=$!
	PIDS+=($BASE)
fi

# squid: no cache, no logs, one process
mkdir -p squid && chown proxy:proxy squid 2>/dev/null || true
cat >squid.conf <<EOS
http_port 127.0.0.1:$P_SQ
http_access allow all
cache deny all
cache_mem 8 MB
access_log none
cache_log $W/squid/cache.log
pid_filename $W/squid/squid.pid
coredump_dir $W/squid
cache_effective_user proxy
workers 1
shutdown_lifetime 1 seconds
EOS
squid -N -f "$W/squid.conf" 2>squid.err & SQUID=$!
PIDS+=($SQUID)

# tinyproxy
cat >tinyproxy.conf <<EOT
User nobody
Group nogroup
Port $P_TP
Listen 127.0.0.1
Timeout 60
MaxClients 1024
LogLevel Critical
Allow 127.0.0.1
DisableViaHeader Yes
EOT
tinyproxy -d -c "$W/tinyproxy.conf" 2>tinyproxy.err & TINY=$!
PIDS+=($TINY)

wait_port() { for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }
for p in $P_HTTP $P_TLS $P_EG $P_SQ $P_TP ${BASE:+$P_EG2}; do wait_port $p; done

tree() { # a process and all its descendants (custos up: supervisor -> proxy -> audit writer)
	local p
	echo "$1"
	for p in $(pgrep -P "$1" || true); do tree "$p"; done
}
cpu() { # utime+stime in clock ticks of a process tree, threads included
	local t=0 p
	for p in $(tree "$1"); do
		t=$((t + $(awk '{print $14 + $15}' /proc/$p/stat 2>/dev/null || echo 0)))
	done
	echo $t
}
csw() { # context switches of the threads of a process tree
	local t=0 p f
	for p in $(tree "$1"); do
		for f in /proc/$p/task/*/status; do
			t=$((t + $(awk '/ctxt_switches/ { s += $2 } END { print s + 0 }' "$f" 2>/dev/null || echo 0)))
		done
	done
	echo $t
}
HZ=$(getconf CLK_TCK)
printf '%-10s %-12s %6s %10s %8s %12s %7s %9s %7s\n' proxy mode conns req/s MB/s req/cpu-s errors connects cs/req
run() { # run NAME PID PORT MODE TARGET PATH CONNS [eload flags]
	local name=$1 pid=$2 port=$3 mode=$4 target=$5 path=$6 c=$7; shift 7
	local c0 c1 s0 s1 out lp
	c0=$(cpu "$pid")
	./eload -x "$port" -t "$target" -P "$path" -c "$c" -d "$DUR" "$@" >eload.out &
	lp=$!
	# context switches over the middle DUR-1 seconds, while every connection (and custos'
	# thread for it) is alive: a thread's count leaves /proc with it
	sleep 0.5; s0=$(csw "$pid"); sleep $((DUR - 1)); s1=$(csw "$pid")
	wait $lp
	out=$(cat eload.out)
	c1=$(cpu "$pid")
	local req rps mbs err
	req=$(awk '{print $2}' <<<"$out"); err=$(awk '{print $4}' <<<"$out")
	rps=$(awk '{print $10}' <<<"$out"); mbs=$(awk '{print $12}' <<<"$out")
	local dials; dials=$(awk '{print $6}' <<<"$out")
	local cs
	cs=$(awk -v r="$req" -v t=$((c1 - c0)) -v hz="$HZ" 'BEGIN { if (t > 0) printf "%.0f", r / (t / hz); else print "-" }')
	local cspr
	cspr=$(awk -v r="$rps" -v s=$((s1 - s0)) -v d=$((DUR - 1)) 'BEGIN { if (r > 0) printf "%.2f", s / d / r; else print "-" }')
	printf '%-10s %-12s %6s %10s %8s %12s %7s %9s %7s\n' "$name" "$mode" "$c" "$rps" "$mbs" "$cs" "$err" "$dials" "$cspr" | tee -a results.txt
}
want() { [ -z "${MODES:-}" ] || [[ " $MODES " == *" $1 "* ]]; }
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
PXS=("custos $CUSTOS $P_EG")
[ -n "$BASE" ] && PXS+=("custos-base $BASE $P_EG2")
PXS+=("squid $SQUID $P_SQ" "tinyproxy $TINY $P_TP")
for rep in $(seq 1 "$REPS"); do
	for px in "${PXS[@]}"; do
		set -- $px
		pid=$2
		if want plain-1KiB; then run "$1" "$pid" "$3" plain-1KiB "localhost:$P_HTTP" /small "$CONNS"; fi
		if want connect-1KiB; then run "$1" "$pid" "$3" connect-1KiB "localhost:$P_TLS" /small "$CONNS" -C -k ca.crt; fi
		if want plain-1MiB; then run "$1" "$pid" "$3" plain-1MiB "localhost:$P_HTTP" /big 10; fi
		if want connect-1MiB; then run "$1" "$pid" "$3" connect-1MiB "localhost:$P_TLS" /big 10 -C -k ca.crt; fi
		case $1 in custos*)
			if want icpt-1KiB; then run "$1" "$pid" "$3" icpt-1KiB "localhost:$P_ICPT" /small "$CONNS" -C -k "$W/custos-ca/ca.crt"; fi
			if want icpt-1MiB; then run "$1" "$pid" "$3" icpt-1MiB "localhost:$P_ICPT" /big 10 -C -k "$W/custos-ca/ca.crt"; fi
			;;
		esac
	done
	echo "load average after round $rep: $(cut -d' ' -f1-3 /proc/loadavg)"
done
if [ "$REPS" -gt 1 ]; then
	echo "medians of $REPS rounds:"
	printf '%-11s %-12s %10s %8s %12s %7s\n' proxy mode req/s MB/s req/cpu-s cs/req
	awk '{ k = $1 " " $2; n[k]++; r[k, n[k]] = $4; m[k, n[k]] = $5; c[k, n[k]] = $6; x[k, n[k]] = $9; if (!(k in seen)) { seen[k] = 1; order[++no] = k } }
	function med(a, k, cnt,   i, j, t, v) { for (i = 1; i <= cnt; i++) v[i] = a[k, i] + 0;
		for (i = 1; i <= cnt; i++) for (j = i + 1; j <= cnt; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
		return cnt % 2 ? v[(cnt + 1) / 2] : (v[cnt / 2] + v[cnt / 2 + 1]) / 2 }
	END { for (i = 1; i <= no; i++) { k = order[i]; split(k, p, " ");
		printf "%-11s %-12s %10.0f %8.1f %12.0f %7.2f\n", p[1], p[2], med(r, k, n[k]), med(m, k, n[k]), med(c, k, n[k]), med(x, k, n[k]) } }' results.txt
fi
echo "machine: $(nproc) CPUs, $(uname -r); $DUR s per run; nginx 1 worker; all on loopback"
