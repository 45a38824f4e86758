#!/usr/bin/env bash
# audit_sink_stall: SIEM peers that stall the shipper (fixtures: sink_stall_fixture.py, a HEC
# stand-in hec_fixture.py), with the writer and shipper of the audit-load driver:
# - a TLS server that trickles its handshake a byte at a time (never 10 s apart): the
#   handshake is cut at 10 s ("timed out", the sink retries), and custos' stop ends at the
#   drain deadline instead of waiting for the handshake for ever;
# - a syslog receiver that reads 5 KiB/s: the stop ends at the drain deadline, not when the
#   batch under way has trickled out; what was not delivered stays behind the cursor (lag);
# - a syslog receiver that reads 80 KiB/s, less than the backlog: its TCP acknowledges batch
#   after batch, and the cursor follows (it waited for nothing left unacknowledged, which a
#   backlog never leaves: no progress, all resent at a restart, the lag all of it);
# - a HEC collector answering HTTP 200 with an error in its body ("code":6): nothing was kept,
#   so the batch is resent, and every event arrives;
# - a HEC collector behind a body limit answering 413: batches get smaller, every event
#   arrives (the whole batch was resent for ever).
set -euo pipefail
: "${CUSTOS_BIN:?}" "${CUSTOS_FIXTURES:?}" "${CUSTOS_SRC:?}"
FIX="$CUSTOS_SRC/tests/integration/sink_stall_fixture.py"
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
peer() { # MODE: starts the fixture, sets PORT
	rm -f "$T/port"
	python3 "$FIX" "$1" "$T/port" 2>"$T/fix.err" &
	SP=$!
	for _ in $(seq 600); do [ -s "$T/port" ] && break; sleep 0.1; done
	PORT=$(cat "$T/port")
}
stop_peer() {
	kill "$SP" 2>/dev/null || true
	wait "$SP" 2>/dev/null || true
	SP=""
}
"$CUSTOS_BIN" audit keygen "$T/keys" >/dev/null

# 1. A TLS handshake trickled a byte every 0.5 s.
peer tls-trickle
t0=$(date +%s)
timeout 90 "$LOAD" "$T/log1" --key "$T/keys/audit.key" --events 100 --sink tls --port "$PORT" \
	--wait-sink 14 --drain-s 2 >"$T/load1.out" 2>"$T/load1.err" || true
el=$(($(date +%s) - t0))
stop_peer
grep -q "timed out (not connected within 10 s); retrying" "$T/load1.err" ||
	fail "trickled TLS handshake: never cut: $(tail -3 "$T/load1.err")"
[ "$el" -le 30 ] || fail "trickled TLS handshake: the stop took $el s (drain 2 s after 14 s)"
grep -q "sink_lag=[1-9]" "$T/load1.out" || fail "trickled TLS handshake: delivered? $(cat "$T/load1.out")"
echo "trickled TLS handshake: cut after 10 s, retried; stopped in $el s (14 s run, 2 s drain)"

# 2. A syslog receiver that reads 5 KiB/s.
peer tcp-trickle
t0=$(date +%s)
timeout 120 "$LOAD" "$T/log2" --key "$T/keys/audit.key" --events 5000 --sink tcp \
	--port "$PORT" --wait-sink 1 --drain-s 2 >"$T/load2.out" 2>"$T/load2.err" || true
el=$(($(date +%s) - t0))
stop_peer
# (it waited for 10 s of silence, which a receiver that reads never leaves, or for the batch
# under way to trickle out)
[ "$el" -le 8 ] || fail "slow syslog receiver: the stop took $el s (drain 2 s after 1 s)"
cur=$(cat "$T/log2/ship/cursor.siem" 2>/dev/null || echo 0)
last=$(tail -1 "$(ls "$T/log2"/audit-*.jsonl | tail -1)" | sed 's/^{"v":1,"seq":\([0-9]*\),.*/\1/')
[ "$cur" -lt "$last" ] || fail "slow syslog receiver: cursor $cur, log head $last: all delivered?"
grep -q "drain deadline" "$T/load2.err" ||
	fail "slow syslog receiver: the stop does not say what was left: $(tail -3 "$T/load2.err")"
echo "slow syslog receiver: stopped in $el s at the drain deadline, cursor $cur of $last"

# 3. A syslog receiver that reads 80 KiB/s, behind a backlog of about 2.4 MB.
peer tcp-slow
timeout 120 "$LOAD" "$T/log4" --key "$T/keys/audit.key" --events 5000 --sink tcp \
	--port "$PORT" --wait-sink 12 --drain-s 1 >"$T/load4.out" 2>"$T/load4.err" || true
stop_peer
cur=$(cat "$T/log4/ship/cursor.siem" 2>/dev/null || echo 0)
[ "$cur" -ge 200 ] ||
	fail "receiver behind a backlog: cursor $cur after 12 s at 80 KiB/s: $(cat "$T/load4.out")"
echo "receiver behind a backlog: the cursor moved to $cur while it read"

# 4. HEC: HTTP 200 with an error in the body, twice.
rm -f "$T/port"
python3 "$HEC" "$T/events" "$T/port" s3cret --ok-error 2 2>"$T/hec.err" &
SP=$!
for _ in $(seq 600); do [ -s "$T/port" ] && break; sleep 0.1; done
"$LOAD" "$T/log3" --key "$T/keys/audit.key" --events 3000 --sink hec --port "$(cat "$T/port")" \
	--token s3cret --wait-sink 60 --drain-s 10 >"$T/load3.out" 2>"$T/load3.err" ||
	fail "load driver: $(cat "$T/load3.err")"
stop_peer
grep -q "HEC answered 200 without success" "$T/load3.err" ||
	fail "HEC 200 with an error body not refused: $(tail -3 "$T/load3.err")"
last=$(tail -1 "$(ls "$T/log3"/audit-*.jsonl | tail -1)" | sed 's/^{"v":1,"seq":\([0-9]*\),.*/\1/')
python3 - "$T/events" "$last" <<'PY'
import sys
seqs = set(int(l) for l in open(sys.argv[1]))
missing = set(range(1, int(sys.argv[2]) + 1)) - seqs
if missing:
    sys.exit(f"FAIL: HEC 200 with an error body: {len(missing)} events never arrived, first {min(missing)}")
print(f"HEC 200 with an error body: resent, all {sys.argv[2]} events arrived")
PY
# 5. HEC behind a 20 000-byte body limit: 413 for a batch larger than that.
rm -f "$T/port" "$T/events"
python3 "$HEC" "$T/events" "$T/port" s3cret --max-body 20000 2>"$T/hec.err" &
SP=$!
for _ in $(seq 600); do [ -s "$T/port" ] && break; sleep 0.1; done
"$LOAD" "$T/log5" --key "$T/keys/audit.key" --events 3000 --sink hec --port "$(cat "$T/port")" \
	--token s3cret --wait-sink 60 --drain-s 10 >"$T/load5.out" 2>"$T/load5.err" ||
	fail "load driver: $(cat "$T/load5.err")"
stop_peer
grep -q "sink_lag=0" "$T/load5.out" ||
	fail "HEC body limit: not delivered: $(cat "$T/load5.out") $(tail -2 "$T/load5.err")"
grep -q "HEC answered 413 for a batch of [0-9]* bytes: batches cut to" "$T/load5.err" ||
	fail "HEC body limit: no 413 seen: $(tail -3 "$T/load5.err")"
echo "HEC body limit: 413 answered, smaller batches, all delivered"
echo "PASS"
