#!/usr/bin/env bash
# ctest: serial (loads the machine, or is timing-sensitive under load)
# audit_crash: kill -9 of the writer and its producers during heavy writing leaves a log that
# verifies (as an open log); a torn last record is detected, cut back at the next start with
# a recovery event, and the chain continues to a sealed log that verifies.
set -euo pipefail
: "${CUSTOS_BIN:?}" "${CUSTOS_FIXTURES:?}"
LOAD="$CUSTOS_FIXTURES/audit-load/audit-load"
[ -x "$LOAD" ] || { echo "SKIPPED: $LOAD not built"; exit 77; }
T=$(mktemp -d)
LP=""
WP=""
cleanup() {
	[ -n "$LP" ] && kill -9 "$LP" 2>/dev/null || true
	[ -n "$WP" ] && kill -9 "$WP" 2>/dev/null || true
	[ -n "${KEEP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
# wait_until SECS CMD...: runs CMD until it succeeds (0) or SECS seconds pass (1), the time CMD
# takes included; the bounds hold under ASan on a loaded two-core machine.
wait_until() {
	local end=$((SECONDS + $1))
	shift
	until "$@"; do
		[ "$SECONDS" -lt "$end" ] || return 1
		sleep 0.1
	done
}
started() { grep -q '^writer_pid=' "$T/load.out" 2>/dev/null; }
records() { cat "$T/log"/audit-*.jsonl 2>/dev/null | wc -l; }
# more_than N: the log holds more than N records
more_than() { [ "$(records)" -gt "$1" ]; }
# start_load ARGS...: the load driver writing forever into $T/log; sets LP and WP (its writer)
start_load() {
	"$LOAD" "$T/log" --key "$T/keys/audit.key" --forever "$@" >"$T/load.out" 2>"$T/load.err" &
	LP=$!
	wait_until 60 started || fail "the load driver did not start in 60 s: $(cat "$T/load.err")"
	WP=$(sed -n 's/^writer_pid=//p' "$T/load.out")
	[ -n "$WP" ] || fail "the load driver named no writer: $(cat "$T/load.out" "$T/load.err")"
}

"$CUSTOS_BIN" audit keygen "$T/keys" >/dev/null
PUB="$T/keys/audit.pub"
start_load --threads 4 --rotate-bytes 2000000
# Let it write hard (20000 records), then kill everything without warning.
# Killed once it has written them, not after a fixed time.
wait_until 300 more_than 20000 || fail "the load wrote $(records) records in 300 s, not 20000"
kill -9 "$WP" "$LP"
wait "$LP" 2>/dev/null || true
LP=""
WP=""
n=$(cat "$T/log"/audit-*.jsonl | wc -l)
echo "killed after $n records"
out=$("$CUSTOS_BIN" audit verify --live --pubkey "$PUB" "$T/log") || fail "after kill -9: $out"
echo "after kill -9: $out"
"$CUSTOS_BIN" audit verify --pubkey "$PUB" "$T/log" >/dev/null &&
	fail "an unsealed log verified without --live"

# A torn write: the last record only partly on disk.
LAST=$(ls "$T/log"/audit-*.jsonl | tail -1)
size_before=$(stat -c %s "$LAST")
printf '{"v":1,"seq":%d,"time":"2026-11-27T02:00:00.0000' $((n + 1)) >>"$LAST"
out=$("$CUSTOS_BIN" audit verify --live --pubkey "$PUB" "$T/log") || fail "torn, live: $out"
grep -q "incomplete last record" <<<"$out" || fail "torn tail not reported: $out"
out=$("$CUSTOS_BIN" audit verify --pubkey "$PUB" "$T/log") && fail "torn tail passed: $out"
grep -q "ends inside a record" <<<"$out" || fail "torn tail: $out"

# Restart: recovery cuts the torn record, says so in a recovery event, and the chain goes on.
"$LOAD" "$T/log" --key "$T/keys/audit.key" --events 500 --threads 2 >/dev/null
grep -h '"type":"recovery"' "$T/log"/audit-*.jsonl | grep '"cut_bytes":[1-9]' >/dev/null ||
	fail "no recovery event with cut bytes"
out=$("$CUSTOS_BIN" audit verify --pubkey "$PUB" "$T/log") || fail "after recovery: $out"
echo "after recovery: $out"
[ "$(stat -c %s "$LAST")" -ge "$size_before" ] || fail "recovery cut complete records"

# A second kill -9, then a clean restart: an unclean end without a torn record is recorded too.
n0=$(records)
start_load --threads 2
# Killed once it has written (1000 records more), not after a fixed time.
wait_until 300 more_than $((n0 + 1000)) || fail "the second load wrote $(($(records) - n0)) records in 300 s, not 1000"
kill -9 "$WP" "$LP"
wait "$LP" 2>/dev/null || true
LP=""
WP=""
"$LOAD" "$T/log" --key "$T/keys/audit.key" --events 10 >/dev/null
[ "$(grep -h -c '"type":"recovery"' "$T/log"/audit-*.jsonl | paste -sd+ | bc)" -ge 2 ] ||
	fail "second recovery not recorded"
out=$("$CUSTOS_BIN" audit verify --pubkey "$PUB" "$T/log") || fail "final: $out"
echo "final: $out"
echo "PASS"
