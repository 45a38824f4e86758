#!/usr/bin/env bash
# bench/audit: the audit writer against the raw limit of this disk, side by side in one run:
#   raw   200-byte appends with fdatasync after every record / after every 64 records
#   custos batch and sync durability with 1, 4 and 16 producer threads (audit-load fixture)
#   custos -> rsyslog over TLS (imtcp + ossl) throughput of the syslog sink
# Usage: bench/audit/run.sh BUILD_DIR   (an optimised build with tests; `make bench-audit`)
# Takes about 2-3 minutes. Figures go to docs/PERFORMANCE.md.
set -euo pipefail
B=${1:-build/release}
top=$(cd "$(dirname "$0")/../.." && pwd)
LOAD="$B/tests/fixtures/audit-load/audit-load"
[ -x "$LOAD" ] || { echo "build $B first (make bench-audit)" >&2; exit 1; }
D="$(cd "$B" && pwd)/bench-audit-data" # same disk as the build; absolute for rsyslog
rm -rf "$D"
mkdir -p "$D"
RSP=""
trap '[ -n "$RSP" ] && kill "$RSP" 2>/dev/null; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$D"' EXIT
cc -O2 -o "$D/rawdisk" "$top/bench/audit/rawdisk.c"
# The key custos audit keygen would write (Ed25519 PKCS#8 PEM, 0600), made with openssl so the
# bench needs only the audit library and its driver.
mkdir -m 0700 "$D/keys"
openssl genpkey -algorithm ed25519 -out "$D/keys/audit.key" 2>/dev/null
chmod 0600 "$D/keys/audit.key"
KEY="$D/keys/audit.key"

echo "== machine: $(nproc) CPUs, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== disk holding $D: $(df -h "$D" | awk 'NR==2 {print $1, $2}')"
echo
printf '%-44s %14s\n' "case" "events/s"
if [ -z "${ONLY_TLS:-}" ]; then
raw1=$("$D/rawdisk" "$D/raw" 3000 1 | sed 's/.*= \([0-9]*\) records.*/\1/')
printf '%-44s %14s\n' "raw: 200 B append + fdatasync per record" "$raw1"
raw64=$("$D/rawdisk" "$D/raw" 300000 64 | sed 's/.*= \([0-9]*\) records.*/\1/')
printf '%-44s %14s\n' "raw: 200 B append + fdatasync per 64" "$raw64"

run() { # mode threads events
	rm -rf "$D/log"
	"$LOAD" "$D/log" --key "$KEY" --mode "$1" --threads "$2" --events "$3" |
		sed -n 's/.*events_per_s=\([0-9]*\).*/\1/p'
}
for t in 1 4 16; do
	printf '%-44s %14s\n' "custos batch, $t producer(s) (durable)" "$(run batch $t 300000)"
done
for t in 1 4 16; do
	n=$((t * 2500))
	r=$(run sync $t $n)
	printf '%-44s %14s  (%.1fx raw per-record)\n' "custos sync, $t producer(s)" "$r" \
		"$(echo "$r / $raw1" | bc -l)"
done
fi

# rsyslog over TLS.
RSYSLOGD=$(command -v rsyslogd || echo /usr/sbin/rsyslogd)
if [ -x "$RSYSLOGD" ] && ls /usr/lib/*/rsyslog/lmnsd_ossl.so >/dev/null 2>&1; then
	C="$D/tls"
	mkdir -p "$C/rs"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
		-subj "/CN=bench CA" -keyout "$C/ca.key" -out "$C/ca.pem" 2>/dev/null
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-subj "/CN=localhost" -keyout "$C/server.key" -out "$C/server.csr" 2>/dev/null
	printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$C/ext"
	openssl x509 -req -in "$C/server.csr" -CA "$C/ca.pem" -CAkey "$C/ca.key" \
		-CAcreateserial -days 2 -extfile "$C/ext" -out "$C/server.pem" 2>/dev/null
	PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	cat >"$C/rsyslog.conf" <<CONF
global(workDirectory="$C/rs" maxMessageSize="64k" DefaultNetstreamDriver="ossl"
       DefaultNetstreamDriverCAFile="$C/ca.pem" DefaultNetstreamDriverCertFile="$C/server.pem"
       DefaultNetstreamDriverKeyFile="$C/server.key")
module(load="imtcp" StreamDriver.Name="ossl" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
input(type="imtcp" port="$PORT" address="127.0.0.1")
main_queue(queue.size="200000" queue.dequeueBatchSize="4096")
template(name="raw" type="string" string="%msg%\n")
action(type="omfile" file="$C/rs/out.log" template="raw" asyncWriting="on"
       ioBufferSize="1m" flushOnTXEnd="off" flushInterval="1")
CONF
	"$RSYSLOGD" -n -f "$C/rsyslog.conf" -i "$C/rs/pid" >"$C/rs/stderr" 2>&1 &
	RSP=$!
	for _ in $(seq 100); do
		python3 -c "import socket; socket.create_connection(('127.0.0.1',$PORT),0.2)" \
			2>/dev/null && break
		sleep 0.1
	done
	rm -rf "$D/log"
	out=$("$LOAD" "$D/log" --key "$KEY" --threads 4 --events 200000 --sink tls --port "$PORT" \
		--ca "$C/ca.pem" --replay-ms 1 --wait-sink 120 --drain-s 10 2>/dev/null)
	r=$(echo "$out" | sed -n 's/.*sink_events_per_s=\([0-9]*\).*/\1/p')
	sleep 1
	got=$(wc -l <"$C/rs/out.log")
	printf '%-44s %14s  (rsyslog wrote %s messages)\n' "custos -> rsyslog, syslog/TLS (RFC 5425)" "$r" "$got"
	kill "$RSP"
	wait "$RSP" 2>/dev/null || true
	RSP=""
	# The sink alone: the same stream into openssl s_server, which discards it.
	(sleep 100 | openssl s_server -accept "$PORT" -cert "$C/server.pem" -key "$C/server.key" \
		-quiet >/dev/null 2>&1) &
	RSP=$!
	for _ in $(seq 100); do
		python3 -c "import socket; socket.create_connection(('127.0.0.1',$PORT),0.2)" \
			2>/dev/null && break
		sleep 0.1
	done
	rm -rf "$D/log"
	out=$("$LOAD" "$D/log" --key "$KEY" --threads 4 --events 200000 --sink tls --port "$PORT" \
		--ca "$C/ca.pem" --replay-ms 1 --wait-sink 120 --drain-s 10 2>/dev/null)
	r=$(echo "$out" | sed -n 's/.*sink_events_per_s=\([0-9]*\).*/\1/p')
	printf '%-44s %14s\n' "custos -> openssl s_server (sink alone)" "$r"
	pkill -P "$RSP" 2>/dev/null || true
	kill "$RSP" 2>/dev/null || true
	wait "$RSP" 2>/dev/null || true
	RSP=""
else
	echo "rsyslog with the ossl driver not installed: TLS sink not measured"
fi
