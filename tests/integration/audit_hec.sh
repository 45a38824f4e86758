#!/usr/bin/env bash
# audit_hec: the Splunk HEC sink against a HEC stand-in (hec_fixture.py: the HEC wire protocol
# with indexer acknowledgement): the first requests get 503 (server busy), acks become true only
# on the second poll; every event must arrive in order with no gap. A wrong token must not
# deliver anything. A host name with a quote and a backslash (a UTS namespace) is escaped in
# the event objects.
set -euo pipefail
: "${CUSTOS_BIN:?}" "${CUSTOS_FIXTURES:?}" "${CUSTOS_SRC:?}"
HEC="$CUSTOS_SRC/tests/integration/hec_fixture.py"
LOAD="$CUSTOS_FIXTURES/audit-load/audit-load"
[ -x "$LOAD" ] || { echo "SKIPPED: $LOAD not built"; exit 77; }
command -v python3 >/dev/null || { echo "SKIPPED: python3 missing"; exit 77; }
T=$(mktemp -d)
SP=""
cleanup() {
	[ -n "$SP" ] && kill "$SP" 2>/dev/null || true
	[ -n "$SP" ] && wait "$SP" 2>/dev/null || true
	[ -n "${KEEP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

python3 "$HEC" "$T/events" "$T/port" s3cret --fail-first 3 --ack-polls 2 2>"$T/hec.err" &
SP=$!
for _ in $(seq 600); do [ -s "$T/port" ] && break; sleep 0.1; done
PORT=$(cat "$T/port")
"$CUSTOS_BIN" audit keygen "$T/keys" >/dev/null
"$LOAD" "$T/log" --key "$T/keys/audit.key" --threads 2 --events 20000 --sink hec \
	--port "$PORT" --token s3cret --wait-sink 60 --drain-s 20 >"$T/load.out" 2>"$T/load.err" ||
	fail "load driver: $(cat "$T/load.err")"
cat "$T/load.out"
grep -q "HEC answered 503" "$T/load.err" || fail "the 503s were not retried: $(cat "$T/load.err")"
last=$(tail -1 "$(ls "$T/log"/audit-*.jsonl | tail -1)" | sed 's/^{"v":1,"seq":\([0-9]*\),.*/\1/')
python3 - "$T/events" "$last" <<'PY'
import sys
seqs = [int(l) for l in open(sys.argv[1])]
last = int(sys.argv[2])
prev = 0
for s in seqs:
    if s > prev + 1:
        sys.exit(f"FAIL: gap: seq {s} after {prev}")
    if s == prev + 1:
        prev = s
missing = set(range(1, last + 1)) - set(seqs)
if missing:
    sys.exit(f"FAIL: {len(missing)} events never arrived, first {min(missing)}")
print(f"HEC received all {last} events in order, {len(seqs) - len(set(seqs))} duplicates")
PY
# A wrong token: nothing delivered, the lag stays.
: >"$T/events"
"$LOAD" "$T/log2" --events 50 --sink hec --port "$PORT" --token wrong --wait-sink 2 \
	--drain-s 1 >"$T/load2.out" 2>"$T/load2.err" || true
grep -q "sink_lag=[1-9]" "$T/load2.out" || fail "wrong token delivered: $(cat "$T/load2.out")"
grep -q "HEC answered 401" "$T/load2.err" || fail "no 401 reported: $(cat "$T/load2.err")"
[ ! -s "$T/events" ] || fail "events accepted with a wrong token"
kill "$SP"
wait "$SP" 2>/dev/null || true
SP=""

# A host name JSON must escape (the kernel's may hold any byte but NUL; a container's is set by
# whoever runs it): in a UTS namespace of its own, the sink delivers every event, its "host"
# the name as it is (written raw it made each batch invalid JSON, refused for ever).
if unshare -u true 2>/dev/null; then
	rm -f "$T/port" "$T/events"
	python3 "$HEC" "$T/events" "$T/port" s3cret 2>"$T/hec.err" &
	SP=$!
	for _ in $(seq 600); do [ -s "$T/port" ] && break; sleep 0.1; done
	odd='a"b\c'
	unshare -u sh -c 'printf %s "$1" >/proc/sys/kernel/hostname && shift && exec "$@"' sh "$odd" \
		"$LOAD" "$T/log5" --events 200 --sink hec --port "$(cat "$T/port")" --token s3cret \
		--wait-sink 60 --drain-s 10 >"$T/load5.out" 2>"$T/load5.err" ||
		fail "odd host name: $(cat "$T/load5.err")"
	grep -q "sink_lag=0" "$T/load5.out" || fail "odd host name: not delivered: $(tail -3 "$T/load5.err")"
	[ "$(cat "$T/events.hosts")" = '"a\"b\\c"' ] || fail "odd host name: hosts $(cat "$T/events.hosts")"
	echo "a host name with a quote and a backslash: all delivered, escaped"
	kill "$SP"
	wait "$SP" 2>/dev/null || true
	SP=""
else
	echo "SKIPPED (part): unshare -u not permitted: the host name check"
fi

# HTTPS: the server certificate is verified against the CA and the name.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
	-subj "/CN=custos test CA" -keyout "$T/ca.key" -out "$T/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
	-keyout "$T/server.key" -out "$T/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$T/ext"
openssl x509 -req -in "$T/server.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial \
	-days 2 -extfile "$T/ext" -out "$T/server.pem" 2>/dev/null
rm -f "$T/port" "$T/events"
python3 "$HEC" "$T/events" "$T/port" s3cret --ack-polls 2 --tls "$T/server.pem" "$T/server.key" \
	2>"$T/hec.err" &
SP=$!
for _ in $(seq 600); do [ -s "$T/port" ] && break; sleep 0.1; done
"$LOAD" "$T/log3" --events 2000 --sink hec --port "$(cat "$T/port")" --token s3cret \
	--ca "$T/ca.pem" --wait-sink 60 --drain-s 10 >"$T/load3.out" 2>"$T/load3.err" ||
	fail "HTTPS: $(cat "$T/load3.err")"
grep -q "sink_lag=0" "$T/load3.out" || fail "HTTPS: not delivered: $(cat "$T/load3.err")"
[ "$(sort -un "$T/events" | wc -l)" -ge 2000 ] || fail "HTTPS: events missing"
echo "HTTPS with a verified server: all delivered"
echo "PASS"
