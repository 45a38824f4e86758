#!/usr/bin/env bash
# Refused admin callers cannot flood the audit trail, and the trail still counts each: a burst
# of 200 requests with a wrong token on the TCP listener gives exactly 20 admin.request events
# one by one (the per-listener bound a second) and summary events (principal "*", listener tcp)
# whose counts add up to the other 180; refusals on the Unix socket are counted apart (their
# own listener's bound). The test hook CUSTOS_TEST_ADMIN_REFUSED_WINDOW_S stretches the "second"
# to an hour, so the whole burst falls in one window whatever the machine's speed; the window's
# sum is then written at shutdown (no timing in the test).
. "$(dirname "$0")/proxy_lib.bash"

[ "${CUSTOS_TEST_HOOKS:-0}" = 1 ] ||
	skip "custos is built without test hooks (CUSTOS_TEST_HOOKS, on in Debug builds)"
command -v setpriv >/dev/null || skip "setpriv not installed"
curl --help all 2>/dev/null | grep -q -- '--unix-socket' || skip "curl without --unix-socket"

admin_tcp_setup '  socket_mode: "0660"'

export CUSTOS_TEST_ADMIN_REFUSED_WINDOW_S=3600
start_admin_custos
grep -q 'admin: test hook: the window for refused callers lasts 3600 s' "$work/custos.log" &&
	ok "test hook in force" || fail "test hook not logged"

chmod 711 "$work"
chgrp 65534 "$work/admin.sock" # uid 65534 may connect; SO_PEERCRED refuses it

# 200 refused requests on TCP (one curl, 200 URLs), 3 on the Unix socket (a uid not allowed).
urls=()
for i in $(seq 1 200); do urls+=(-o /dev/null "http://127.0.0.1:$APORT/healthz?n=$i"); done
codes=$(curl -s --max-time 60 -H "Authorization: Bearer wrong" -w '%{http_code}\n' "${urls[@]}" | sort | uniq -c | tr -s ' ')
check "200 wrong-token requests answered 401" "$codes" " 200 401"
for i in 1 2 3; do
	check "uid 65534 refused ($i)" \
		"$(setpriv --reuid=65534 --regid=65534 --clear-groups curl -s --max-time 10 -o /dev/null -w '%{http_code}' --unix-socket "$work/admin.sock" http://admin/healthz)" 403
done
check "the right token still works" \
	"$(curl -s --max-time 10 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$APORT/healthz")" 200

kill -TERM "$CU_PID"
wait "$CU_PID" 2>/dev/null
grep -E 'Sanitizer|runtime error' "$work/custos.log" && fail "sanitizer report in the log" || ok "no sanitizer report"
check "TCP: 20 refused callers audited one by one" \
	"$(audit_grep '"type":"admin.request","principal":"tcp:127\.0\.0\.1.*"status":401' | wc -l)" 20
sum=$(audit_grep '"type":"admin.request","principal":"\*","listener":"tcp"' |
	sed -n 's/.*"count":\([0-9]*\).*/\1/p' | paste -sd+ | bc)
check "TCP: the other 180 summed (principal \"*\", count)" "$sum" 180
audit_grep '"principal":"\*","listener":"tcp","status":401,"result":"unauthenticated","reason":"refused callers past the rate bound","count":' >/dev/null &&
	ok "summary event members" || fail "summary event: $(audit_grep '"principal":"\*"')"
check "Unix: its 3 refusals audited one by one (a bound of its own)" \
	"$(audit_grep '"type":"admin.request","principal":"uid:65534".*"status":403' | wc -l)" 3
check "Unix: no summary" "$(audit_grep '"principal":"\*","listener":"unix"' | wc -l)" 0
[ "$fails" -eq 0 ] || exit 1
