#!/usr/bin/env bash
# ctest: serial (loads the machine, or is timing-sensitive under load)
# audit_rsyslog: the syslog/TLS sink against a real rsyslog (imtcp + ossl driver) on loopback.
# Events are sent, rsyslog is stopped while writing goes on, then restarted; every event must
# arrive, in order, with no gap (duplicates allowed: at-least-once, recognisable by seq).
# A sink given the wrong CA must refuse the server.
set -euo pipefail
: "${CUSTOS_BIN:?}" "${CUSTOS_FIXTURES:?}"
LOAD="$CUSTOS_FIXTURES/audit-load/audit-load"
[ -x "$LOAD" ] || { echo "SKIPPED: $LOAD not built"; exit 77; }
RSYSLOGD=$(command -v rsyslogd || echo /usr/sbin/rsyslogd)
[ -x "$RSYSLOGD" ] || { echo "SKIPPED: rsyslogd not installed"; exit 77; }
ls /usr/lib/*/rsyslog/lmnsd_ossl.so >/dev/null 2>&1 ||
	{ echo "SKIPPED: rsyslog-openssl (lmnsd_ossl) not installed"; exit 77; }
command -v python3 >/dev/null || { echo "SKIPPED: python3 missing"; exit 77; }
. "$(dirname "$0")/ports.bash"
T=$(mktemp -d)
RSP=""
LP=""
cleanup() {
	[ -n "$LP" ] && kill "$LP" 2>/dev/null || true
	[ -n "$RSP" ] && kill "$RSP" 2>/dev/null || true
	[ -n "$RSP" ] && wait "$RSP" 2>/dev/null || true
	port_release "$T"
	[ -n "${KEEP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# A CA and a server certificate for localhost / 127.0.0.1.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
	-subj "/CN=custos test CA" -keyout "$T/ca.key" -out "$T/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
	-keyout "$T/server.key" -out "$T/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$T/ext"
openssl x509 -req -in "$T/server.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial \
	-days 2 -extfile "$T/ext" -out "$T/server.pem" 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
	-subj "/CN=other CA" -keyout "$T/other.key" -out "$T/other.pem" 2>/dev/null

PORT=$(port_reserve "$T") # ports.bash: rsyslog binds it at each (re)start, reserved till exit
mkdir -p "$T/rs"
cat >"$T/rsyslog.conf" <<CONF
global(workDirectory="$T/rs" maxMessageSize="64k"
       DefaultNetstreamDriver="ossl"
       DefaultNetstreamDriverCAFile="$T/ca.pem"
       DefaultNetstreamDriverCertFile="$T/server.pem"
       DefaultNetstreamDriverKeyFile="$T/server.key")
main_queue(queue.type="Direct")
module(load="imtcp" StreamDriver.Name="ossl" StreamDriver.Mode="1" StreamDriver.AuthMode="anon")
input(type="imtcp" port="$PORT" address="127.0.0.1")
template(name="raw" type="string" string="%msg%\n")
action(type="omfile" file="$T/rs/out.log" template="raw")
CONF
start_rsyslog() {
	"$RSYSLOGD" -n -f "$T/rsyslog.conf" -i "$T/rs/rsyslog.pid" >>"$T/rs/stderr" 2>&1 &
	RSP=$!
	local end=$((SECONDS + 60))
	while [ "$SECONDS" -lt "$end" ]; do
		python3 -c "import socket; socket.create_connection(('127.0.0.1',$PORT),0.2)" \
			2>/dev/null && return 0
		sleep 0.1
	done
	fail "rsyslog did not start in 60 s: $(cat "$T/rs/stderr")"
}
stop_rsyslog() {
	kill "$RSP"
	wait "$RSP" 2>/dev/null || true
	RSP=""
}

"$CUSTOS_BIN" audit keygen "$T/keys" >/dev/null
start_rsyslog
# About 8 s of writing at 4000 events/s per thread; rsyslog is down for ~3 s in the middle.
"$LOAD" "$T/log" --key "$T/keys/audit.key" --threads 2 --events 60000 --rate 4000 \
	--sink tls --port "$PORT" --ca "$T/ca.pem" --wait-sink 60 --drain-s 30 \
	>"$T/load.out" 2>"$T/load.err" &
LP=$!
# rsyslog goes down once events flow (1000 arrived), not after a fixed time: a slow start would
# otherwise stop it before the sink ever connected.
arrived() { [ "$(wc -l 2>/dev/null <"$T/rs/out.log" || echo 0)" -ge "$1" ]; }
end=$((SECONDS + 60))
until arrived 1000 || [ "$SECONDS" -ge "$end" ]; do sleep 0.1; done
arrived 1000 || fail "fewer than 1000 events reached rsyslog in 60 s"
stop_rsyslog
echo "rsyslog stopped at $(wc -l <"$T/rs/out.log") messages"
# The outage under test: the load writes on while rsyslog is down, 4000 events (not a fixed
# time: a slow machine would write few) or all 60000 it has. (Not until it ends: once all are
# written it waits at most --drain-s for the sink, which needs rsyslog back.)
written() { cat "$T/log"/audit-*.jsonl 2>/dev/null | wc -l; }
w0=$(written)
target=$((w0 + 4000 > 60000 ? 60000 : w0 + 4000))
outage_over() { [ "$(written)" -ge "$target" ] || ! kill -0 "$LP" 2>/dev/null; }
end=$((SECONDS + 120))
until outage_over || [ "$SECONDS" -ge "$end" ]; do sleep 0.1; done
echo "the load wrote $(($(written) - w0)) events while rsyslog was down"
start_rsyslog
echo "rsyslog restarted"
wait "$LP" || fail "load driver failed: $(cat "$T/load.err")"
LP=""
cat "$T/load.out"
last=$(tail -1 "$(ls "$T/log"/audit-*.jsonl | tail -1)" | sed 's/^{"v":1,"seq":\([0-9]*\),.*/\1/')
# all_arrived: every seq 1..last is in rsyslog's output, in order (replays allowed); says so, or
# exits non-zero naming the first gap or missing seq.
all_arrived() {
	python3 - "$T/rs/out.log" "$last" <<'PY'
import re, sys
seqs = []
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    m = re.match(r'\s*\{"v":1,"seq":(\d+),', line)
    if not m:
        sys.exit("FAIL: unexpected message in rsyslog output: " + line[:200])
    seqs.append(int(m.group(1)))
last = int(sys.argv[2])
prev = 0
for s in seqs:
    if s > prev + 1:
        sys.exit(f"FAIL: gap: seq {s} arrived after {prev}")
    prev = max(prev, s) if s == prev + 1 else prev if s <= prev else s
missing = set(range(1, last + 1)) - set(seqs)
if missing:
    sys.exit(f"FAIL: {len(missing)} events never arrived, first {min(missing)}")
print(f"rsyslog received {len(seqs)} messages: all {last} events in order, "
      f"{len(seqs) - len(set(seqs))} duplicates (at-least-once replay)")
PY
}
# The load driver ends once the sink has written everything to its connection; rsyslog may
# still be reading the last messages, and stopping it now would drop them. Wait (60 s) until
# its file holds every event, then stop it.
end=$((SECONDS + 60))
until all_arrived >/dev/null 2>&1 || [ "$SECONDS" -ge "$end" ]; do sleep 0.1; done
stop_rsyslog
"$CUSTOS_BIN" audit verify --pubkey "$T/keys/audit.pub" "$T/log" >/dev/null || fail "log verify"
grep -q "resuming at seq" "$T/load.err" || fail "the sink never reconnected"
all_arrived

# The wrong CA: the sink must refuse the server and deliver nothing.
: >"$T/rs/out.log"
start_rsyslog
rm -rf "$T/log2"
"$LOAD" "$T/log2" --key "$T/keys/audit.key" --events 100 --sink tls --port "$PORT" \
	--ca "$T/other.pem" --wait-sink 2 --drain-s 1 >"$T/load2.out" 2>"$T/load2.err" || true
grep -q "sink_lag=[1-9]" "$T/load2.out" || fail "wrong CA: lag should stay: $(cat "$T/load2.out")"
grep -qi "certificate" "$T/load2.err" || fail "wrong CA: no certificate error: $(cat "$T/load2.err")"
[ ! -s "$T/rs/out.log" ] || fail "wrong CA: rsyslog received messages"
echo "wrong CA refused: $(grep -i -m1 certificate "$T/load2.err")"
echo "PASS"
