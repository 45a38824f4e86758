#!/usr/bin/env bash
# audit_restart: what a writer restart does with a log that is not as the writer left it. A
# damaged record followed by more records is never cut, however long the damage; a log cut
# below its last durable checkpoint (DIR/audit.head), with its last file removed, or behind a
# sink's cursor is refused until the operator accepts the head (custos audit accept-head),
# which the trail then records (files removed by retention are no truncation); a signing key
# rotated by restart verifies with both keys. custos audit verify checks the same anchor: such a
# log fails verification (also with --live, also when what is left ends sealed), a damaged
# audit.head too; --no-head ignores it and --head checks a copy kept elsewhere.
set -euo pipefail
: "${CUSTOS_BIN:?}" "${CUSTOS_FIXTURES:?}"
LOAD="$CUSTOS_FIXTURES/audit-load/audit-load"
[ -x "$LOAD" ] || { echo "SKIPPED: $LOAD not built"; exit 77; }
command -v python3 >/dev/null || { echo "SKIPPED: python3 missing"; exit 77; }
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$CUSTOS_BIN" audit keygen "$T/keys" >/dev/null
"$CUSTOS_BIN" audit keygen "$T/keys2" >/dev/null
KEY=$T/keys/audit.key
PUB=$T/keys/audit.pub
"$LOAD" "$T/log" --key "$KEY" --events 400 --rotate-bytes 60000 --checkpoint-events 50 >/dev/null
nfiles=$(ls "$T/log"/audit-*.jsonl | wc -l)
[ "$nfiles" -ge 3 ] || fail "expected >= 3 files, got $nfiles"
[ -f "$T/log/audit.head" ] || fail "no audit.head after a clean run"
head_seq=$(awk '{print $2}' "$T/log/audit.head")
last_seq=$(tail -1 "$(ls "$T/log"/audit-*.jsonl | tail -1)" | sed 's/^{"v":1,"seq":\([0-9]*\),.*/\1/')
[ "$head_seq" = "$last_seq" ] || fail "audit.head at seq $head_seq, the shutdown seal is $last_seq"

fresh() { rm -rf "$T/case"; cp -a "$T/log" "$T/case"; }
restart() { "$LOAD" "$T/case" --key "${2:-$KEY}" --events "${1:-3}" >/dev/null 2>"$T/err"; }
sums() { md5sum "$T/case"/audit-*.jsonl; }
verify() { "$CUSTOS_BIN" audit verify --pubkey "$PUB" "$@" "$T/case"; }
# verify_cut WHAT [OPTION...]: verify must fail (exit 1) because the log ends below audit.head.
verify_cut() {
	local what=$1 out rc=0
	shift
	out=$(verify "$@") || rc=$?
	[ "$rc" -eq 1 ] || fail "$what: verify exit $rc, expected 1: $out"
	grep -q "below the last signed checkpoint recorded in $T/case/audit.head (seq [0-9]*, hash [0-9a-f]\{16\}\.\.\., in audit-[0-9]\{20\}\.jsonl): the log was truncated or its newest files were removed" <<<"$out" ||
		fail "$what: $out"
	echo "$what: verify: $(echo "$out" | sed -n 2p | sed 's/.*: the log ends/the log ends/')"
}

# 0. custos audit verify and audit.head. The untouched log reaches it; files given one by one
#    are checked without it (the output says so); a second run cut back to the first run's
#    shutdown seal ends sealed, and only audit.head shows that it was cut.
out=$("$CUSTOS_BIN" audit verify --pubkey "$PUB" "$T/log") || fail "clean log: $out"
grep -q "sealed by a shutdown checkpoint; reaches audit.head (seq $head_seq)" <<<"$out" ||
	fail "clean log: $out"
"$CUSTOS_BIN" audit verify --pubkey "$PUB" "$T/log"/audit-*.jsonl | grep -q "; no audit.head checked" ||
	fail "files one by one"
fresh
restart 5 || fail "second run: $(cat "$T/err")"
LAST=$(ls "$T/case"/audit-*.jsonl | tail -1)
n=$(grep -n "^{\"v\":1,\"seq\":$last_seq," "$LAST" | cut -d: -f1)
[ -n "$n" ] || fail "the first run's seal (seq $last_seq) is not in the last file"
sed -i "$((n + 1)),\$d" "$LAST"
out=$(verify --no-head) || fail "a run cut back to the previous seal, --no-head: $out"
grep -q "sealed by a shutdown checkpoint; no audit.head checked" <<<"$out" || fail "no-head: $out"
verify_cut "second run cut back to the first run's seal"
# A copy of audit.head kept elsewhere (or taken off-host) is checked with --head.
cp "$T/case/audit.head" "$T/head.copy"
rm "$T/case/audit.head"
verify >/dev/null || fail "without audit.head the cut log verified"
out=$(verify --head "$T/head.copy") && fail "--head: the cut log passed: $out"
grep -q "below the last signed checkpoint recorded in $T/head.copy (seq" <<<"$out" || fail "--head: $out"
echo "copy of audit.head given with --head: caught"
rc=0
verify --head "$T/no-such-head" >/dev/null 2>"$T/err" || rc=$?
[ "$rc" -eq 1 ] && grep -q "no-such-head" "$T/err" || fail "--head without its file: exit $rc: $(cat "$T/err")"
# A damaged audit.head: verification fails naming it; --no-head verifies without it.
fresh
echo "custos-audit-head/1 $head_seq xyz" >"$T/case/audit.head"
out=$(verify) && fail "a damaged audit.head passed: $out"
grep -q "^problem: $T/case/audit.head: malformed: how far the log once reached cannot be checked (--no-head verifies without it)" <<<"$out" ||
	fail "damaged head: $out"
verify --no-head >/dev/null || fail "--no-head with a damaged audit.head"
echo "damaged audit.head: $(echo "$out" | sed -n 2p)"
# An audit.head whose record was rewritten (another hash at its seq): the log was rewritten.
fresh
sed -i "s/^\(custos-audit-head\/1 [0-9]* \)[0-9a-f]\{64\}/\1$(printf 'f%.0s' $(seq 64))/" "$T/case/audit.head"
out=$(verify) && fail "a head with another hash passed: $out"
grep -q "seq $head_seq: the record at seq $head_seq has hash [0-9a-f]\{16\}\.\.\., but $T/case/audit.head recorded the signed checkpoint there as ffffffffffffffff" <<<"$out" ||
	fail "other hash: $out"

# 1. A junk line longer than the reader's 1 MiB chunk in the middle of the last file, with
#    complete signed records after it: the writer refuses to start and cuts nothing.
fresh
LAST=$(ls "$T/case"/audit-*.jsonl | tail -1)
python3 - "$LAST" <<'PY'
import sys
p = sys.argv[1]
lines = open(p, 'rb').read().split(b'\n')
lines.insert(10, b'x' * (2 * 1024 * 1024))
open(p, 'wb').write(b'\n'.join(lines))
PY
before=$(sums)
restart && fail "a restart accepted a damaged record followed by records"
grep -q "$(basename "$LAST"): damaged record at line 11 (offset [0-9]*) is not the last" "$T/err" ||
	fail "long damage: $(cat "$T/err")"
[ "$(sums)" = "$before" ] || fail "the refused restart changed the log"
echo "long junk line in the middle: refused: $(grep -o 'damaged record.*' "$T/err" | head -1)"

# 2. The same length of zeros at the very end (delayed allocation after a power cut) is a torn
#    tail: cut, recorded, and the chain goes on.
fresh
LAST=$(ls "$T/case"/audit-*.jsonl | tail -1)
head -c $((2 * 1024 * 1024)) /dev/zero >>"$LAST"
restart || fail "torn tail of zeros: $(cat "$T/err")"
grep -h '"type":"recovery"' "$T/case"/audit-*.jsonl | grep -c '"cut_bytes":2097152' >/dev/null ||
	fail "no recovery event for 2 MiB of zeros"
out=$(verify) || fail "after cutting zeros: $out"
echo "2 MiB of zeros at the end: cut"

# 3. The last file cut back below its checkpoints: refused, naming the head and the anchor.
fresh
LAST=$(ls "$T/case"/audit-*.jsonl | tail -1)
sed -i '6,$d' "$LAST"
before=$(sums)
restart && fail "a restart re-anchored a log cut below its last checkpoint"
grep -q "the log ends at seq [0-9]* ($(basename "$LAST")), below the last signed checkpoint recorded in audit.head (seq $head_seq" "$T/err" ||
	fail "truncation: $(cat "$T/err")"
grep -q "custos audit accept-head" "$T/err" || fail "no way out named: $(cat "$T/err")"
[ "$(sums)" = "$before" ] || fail "the refused restart changed the log"
echo "truncated below the last checkpoint: refused"
verify_cut "truncated below the last checkpoint" --live

# 4. The newest file removed (the previous one ends sealed by its rotation checkpoint): refused;
#    then accepted by the operator, which the next start records; verify passes again.
fresh
LAST=$(ls "$T/case"/audit-*.jsonl | tail -1)
rm "$LAST"
restart && fail "a restart re-anchored a log whose newest file was removed"
grep -q "below the last signed checkpoint recorded in audit.head" "$T/err" ||
	fail "removed file: $(cat "$T/err")"
verify_cut "newest file removed" --live
out=$("$CUSTOS_BIN" audit accept-head "$T/case") || fail "accept-head: $out"
grep -q "accepted the log head at seq" <<<"$out" || fail "accept-head said: $out"
[ -f "$T/case/audit.head.accept" ] || fail "no acceptance written"
# Accepted is not restored: until the next start records the acceptance, the log is still cut.
verify_cut "newest file removed, accepted, not yet restarted" --live
restart || fail "restart after accept-head: $(cat "$T/err")"
[ ! -e "$T/case/audit.head.accept" ] || fail "the acceptance was not used up"
grep -h '"type":"recovery"' "$T/case"/audit-*.jsonl | tail -1 |
	grep -q 'the operator accepted the head at seq [0-9]* (custos audit accept-head): the log ends at seq' ||
	fail "no recovery event naming the acceptance"
out=$(verify) || fail "after the accepted restart: $out"
grep -q "reaches audit.head (seq $(awk '{print $2}' "$T/case/audit.head"))" <<<"$out" ||
	fail "after the accepted restart: $out"
"$CUSTOS_BIN" audit accept-head "$T/case" | grep -q "nothing to accept" || fail "accepted twice"
echo "newest file removed: refused, accepted by the operator, recorded"

# 5. A SIEM cursor past the head (the log cut back, or a cursor from another log): refused;
#    once accepted, the cursor moves back so the sink resends instead of skipping. The cursor
#    is written where an older custos kept it (the directory itself): the writer moves it to
#    ship/ first, so it is checked all the same.
fresh
echo $((last_seq + 40)) >"$T/case/cursor.siem"
restart && fail "a restart accepted a cursor past the head"
grep -q "ship/cursor.siem says seq $((last_seq + 40)) was delivered to a SIEM, past the head" "$T/err" ||
	fail "cursor: $(cat "$T/err")"
[ ! -e "$T/case/cursor.siem" ] && [ -f "$T/case/ship/cursor.siem" ] ||
	fail "the old cursor was not moved to ship/: $(ls -R "$T/case")"
"$CUSTOS_BIN" audit accept-head "$T/case" >/dev/null
restart || fail "restart after accepting the cursor: $(cat "$T/err")"
[ "$(cat "$T/case/ship/cursor.siem")" = "$last_seq" ] ||
	fail "cursor not moved back to $last_seq: $(cat "$T/case/ship/cursor.siem")"
echo "cursor past the head (an old layout's, moved to ship/): refused, then moved back to $last_seq"

# 5b. accept-head itself looks where the writer will: an old layout's cursor past the head is
#     moved to ship/ and accepted in one go.
fresh
echo $((last_seq + 7)) >"$T/case/cursor.siem"
"$CUSTOS_BIN" audit accept-head "$T/case" | grep -q "nothing to accept" &&
	fail "accept-head did not see the old layout's cursor"
restart || fail "restart after accepting the old layout's cursor: $(cat "$T/err")"
[ "$(cat "$T/case/ship/cursor.siem")" = "$last_seq" ] ||
	fail "old layout's cursor not moved back to $last_seq: $(ls -R "$T/case")"
echo "accept-head moves an old layout's cursor to ship/ before checking it"

# 6. Retention: the files up to the anchor's record removed (a crash just after a rotation, then
#    the sealed files archived away), the log going on past it: not a truncation.
fresh
F1=$(ls "$T/case"/audit-*.jsonl | head -1)
ckl=$(grep '"reason":"interval"' "$F1" | head -1)
ck_seq=$(echo "$ckl" | sed 's/^{"v":1,"seq":\([0-9]*\),.*/\1/')
ck_hash=$(echo "$ckl" | sed 's/.*"hash":"\([0-9a-f]*\)"}$/\1/')
echo "custos-audit-head/1 $ck_seq $ck_hash $(basename "$F1") -" >"$T/case/audit.head"
rm "$F1"
restart || fail "a restart refused a log whose anchored file was removed: $(cat "$T/err")"
echo "anchor in a removed older file: accepted as retention"

# 7. Key rotation by restart: the log holds checkpoints of two keys; verify takes both
#    (repeated --pubkey or one keyring file) and says which key signed which range.
fresh
restart 100 "$T/keys2/audit.key" || fail "restart with a new key: $(cat "$T/err")"
grep -h '"type":"audit.start"' "$T/case"/audit-*.jsonl | tail -1 | grep -q '"previous_key_id":"' ||
	fail "the key change is not in the trail"
out=$("$CUSTOS_BIN" audit verify --pubkey "$PUB" --pubkey "$T/keys2/audit.pub" "$T/case") ||
	fail "two keys: $out"
grep -q "sealed by a shutdown checkpoint" <<<"$out" || fail "two keys: $out"
[ "$(echo "$out" | grep -c '^  key [0-9a-f]\{16\} (.*): [0-9]* checkpoints, signed heads seq')" = 2 ] ||
	fail "ranges per key: $out"
cat "$PUB" "$T/keys2/audit.pub" >"$T/ring.pem"
"$CUSTOS_BIN" audit verify --pubkey "$T/ring.pem" "$T/case" >/dev/null || fail "keyring"
out=$("$CUSTOS_BIN" audit verify --pubkey "$PUB" "$T/case") && fail "old key alone passed"
grep -q "signed by another key" <<<"$out" || fail "old key alone: $out"
echo "key rotation by restart:"
"$CUSTOS_BIN" audit verify --pubkey "$T/ring.pem" "$T/case" | sed 's/^/  /'
echo "PASS"
