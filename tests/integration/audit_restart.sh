#!/usr/bin/env bash
# audit_restart: what a writer restart does with the log: a signing key rotated by restart
# verifies with both keys.
set -euo pipefail
: "${CUSTOS_BIN:?}" "${CUSTOS_FIXTURES:?}"
LOAD="$CUSTOS_FIXTURES/audit-load/audit-load"
[ -x "$LOAD" ] || { echo "SKIPPED: $LOAD not built"; exit 77; }
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

fresh() { rm -rf "$T/case"; cp -a "$T/log" "$T/case"; }
restart() { "$LOAD" "$T/case" --key "${2:-$KEY}" --events "${1:-3}" >/dev/null 2>"$T/err"; }

# Key rotation by restart: the log holds checkpoints of two keys; verify takes both
# (repeated --pubkey or one keyring file) and says which key signed which range.
fresh
restart 100 "$T/keys2/audit.key" || fail "restart with a new key: $(cat "$T/err")"
out=$("$CUSTOS_BIN" audit verify --pubkey "$PUB" --pubkey "$T/keys2/audit.pub" "$T/case") ||
	fail "two keys: $out"
echo "$out" | grep -q "sealed by a shutdown checkpoint" || fail "two keys: $out"
[ "$(echo "$out" | grep -c '^  key [0-9a-f]\{16\} (.*): [0-9]* checkpoints, signed heads seq')" = 2 ] ||
	fail "ranges per key: $out"
cat "$PUB" "$T/keys2/audit.pub" >"$T/ring.pem"
"$CUSTOS_BIN" audit verify --pubkey "$T/ring.pem" "$T/case" >/dev/null || fail "keyring"
out=$("$CUSTOS_BIN" audit verify --pubkey "$PUB" "$T/case") && fail "old key alone passed"
echo "$out" | grep -q "signed by another key" || fail "old key alone: $out"
echo "key rotation by restart:"
"$CUSTOS_BIN" audit verify --pubkey "$T/ring.pem" "$T/case" | sed 's/^/  /'
echo "PASS"
