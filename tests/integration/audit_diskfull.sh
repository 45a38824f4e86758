#!/usr/bin/env bash
# audit_diskfull: the log on a small tmpfs fills up; producers get errors (the proxy fails
# closed with 503), nothing acknowledged is lost and the log stays intact (verifies, no torn
# record).
set -euo pipefail
: "${CUSTOS_BIN:?}" "${CUSTOS_FIXTURES:?}"
LOAD="$CUSTOS_FIXTURES/audit-load/audit-load"
[ -x "$LOAD" ] || { echo "SKIPPED: $LOAD not built"; exit 77; }
if ! unshare -m true 2>/dev/null; then
	echo "SKIPPED: cannot create a mount namespace (unshare -m) to mount a small tmpfs"
	exit 77
fi
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
"$CUSTOS_BIN" audit keygen "$T/keys" >/dev/null
mkdir "$T/mnt"
export T LOAD CUSTOS_BIN
set +e
unshare -m bash -euc '
	fail() { echo "FAIL: $*" >&2; exit 1; }
	if ! mount -t tmpfs -o size=512k tmpfs "$T/mnt" 2>/dev/null; then
		echo "SKIPPED: mounting a tmpfs is not permitted"
		exit 77
	fi
	for mode in sync batch; do
		rc=0
		"$LOAD" "$T/mnt/$mode" --key "$T/keys/audit.key" --mode $mode --threads 4 \
			--events 100000 --stop-on-error >"$T/$mode.out" 2>"$T/$mode.err" || rc=$?
		cat "$T/$mode.out"
		[ "$rc" -eq 3 ] || fail "$mode: exit $rc, expected 3 (flush/stop report the failure)"
		grep -q "failed=[1-9]" "$T/$mode.out" || fail "$mode: producers saw no error"
		grep -q "cannot write the log, failing closed" "$T/$mode.err" ||
			fail "$mode: no alert logged: $(cat "$T/$mode.err")"
		out=$("$CUSTOS_BIN" audit verify --live --pubkey "$T/keys/audit.pub" "$T/mnt/$mode") ||
			fail "$mode: log not intact: $out"
		grep -q "incomplete" <<<"$out" && fail "$mode: torn record left: $out"
		echo "$mode: $out"
		accepted=$(sed -n "s/.*accepted=\([0-9]*\).*/\1/p" "$T/$mode.out")
		inlog=$(grep -c "\"type\":\"request\"" "$T/mnt/$mode"/audit-*.jsonl || true)
		echo "$mode: accepted=$accepted requests in log=$inlog"
		if [ $mode = sync ]; then
			# Every acknowledged event is on disk.
			[ "$inlog" -ge "$accepted" ] || fail "sync: acknowledged events missing"
		fi
		rm -rf "$T/mnt/$mode"
	done
'
rc=$?
[ $rc -eq 0 ] && echo PASS
exit $rc
