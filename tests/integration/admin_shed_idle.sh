#!/usr/bin/env bash
# The admin API's connection slots (docs/ADMIN.md "Connection slots under a flood") with
# connections that send nothing at all, on the plain TCP listener: ADMIN_MAX_CONNECTIONS (64,
# read from include/custos/admin.h) of them are held and none is closed; curl with the bearer
# token is still answered, its connection (the 65th) shedding the oldest idle one and only that;
# a caller within the limit sheds nothing; a new idle connection is not the one shed, the oldest
# still open is; 128 more idle connections (libmicrohttpd's own limit, twice ours) each shed the
# oldest, and a caller is still answered (admin_shed_idle.py, which waits for the server's
# accept queue and closed connections between steps, so that "oldest" is the opening order).
# Each shed is counted in custos_admin_denied_total and audited (admin.request, result "shed",
# the peer as principal): 20 one by one, the rest summed in one event (RK_SHED's burst; the
# test hook CUSTOS_TEST_ADMIN_REFUSED_WINDOW_S puts them all in one window, summed at shutdown).
# CUSTOS_TEST_ADMIN_TIMEOUT_S gives each connection 300 s, so that no read deadline closes an
# idle one before it is shed.
. "$(dirname "$0")/proxy_lib.bash"

[ "${CUSTOS_TEST_HOOKS:-0}" = 1 ] ||
	skip "custos is built without test hooks (CUSTOS_TEST_HOOKS, on in Debug builds)"
command -v python3 >/dev/null || skip "python3 not installed"
[ -r /proc/net/tcp ] || skip "/proc/net/tcp not readable"

SLOTS=$(sed -n 's/^#define ADMIN_MAX_CONNECTIONS *\([0-9]*\).*/\1/p' "$src/include/custos/admin.h")
[ -n "$SLOTS" ] || { fail "ADMIN_MAX_CONNECTIONS not found in include/custos/admin.h"; exit 1; }

admin_tcp_setup
export CUSTOS_TEST_ADMIN_TIMEOUT_S=300 CUSTOS_TEST_ADMIN_REFUSED_WINDOW_S=3600
start_admin_custos

metric() {
	"$bin" ctl --socket "$work/admin.sock" metrics 2>/dev/null | awk -v s="$1" '$1 == s {print $2}'
}
check "no admin request denied before" "$(metric custos_admin_denied_total)" 0

python3 "$(dirname "$0")/admin_shed_idle.py" "$APORT" "$work/token" "$SLOTS" >"$work/idle.out" 2>&1
rc=$?
grep -E '^(ok|FAIL) ' "$work/idle.out"
fails=$((fails + $(grep -c '^FAIL ' "$work/idle.out")))
if [ "$rc" -ne 0 ]; then
	grep -q '^FAIL ' "$work/idle.out" || fail "admin_shed_idle.py: exit $rc: $(cat "$work/idle.out")"
	exit 1
fi
shed=$(sed -n 's/^shed \([0-9]*\)$/\1/p' "$work/idle.out")
check "connections shed: the 65th, the next caller past the limit, 128 more" "$shed" $((2 + 2 * SLOTS))

# custos closes a shed connection (admin.c shed_one), then counts it: the client can see the
# last one closed before the counter moves. Wait for the count, then check it is exact.
denied_reach() { [ "$(metric custos_admin_denied_total)" -ge "$1" ] 2>/dev/null; }
wait_until 30 denied_reach "$shed"
check "custos_admin_denied_total counts each shed" "$(metric custos_admin_denied_total)" "$shed"
check "the listener still serves" "$("$bin" ctl --url "http://127.0.0.1:$APORT" --token-file "$work/token" health)" '{"status":"ok"}'

kill -TERM "$CU_PID"
wait "$CU_PID" 2>/dev/null
check "custos exit status after SIGTERM" "$?" 0
check "no sanitizer report" "$(grep -cE 'AddressSanitizer|LeakSanitizer|runtime error' "$work/custos.log")" 0

check "20 shed connections audited one by one" \
	"$(audit_grep '"type":"admin.request","principal":"tcp:127\.0\.0\.1","listener":"tcp","result":"shed","reason":"connection slots full: closed while waiting for its request head"' | wc -l)" 20
check "the others summed in one event" \
	"$(audit_grep '"type":"admin.request","principal":"\*","listener":"tcp","result":"shed","reason":"shed connections past the rate bound","count":' |
		sed -n 's/.*"count":\([0-9]*\).*/\1/p' | paste -sd' ')" $((shed - 20))
check "no other shed event" "$(audit_grep '"result":"shed"' | wc -l)" 21
check "no caller refused (curl and ctl had the token)" "$(audit_grep '"result":"unauthenticated"' | wc -l)" 0
[ "$fails" -eq 0 ] || exit 1
echo "all admin connection shedding checks passed"
