#!/usr/bin/env bash
# A client without the token cannot keep token holders out of the admin API by holding its
# connection slots: a flood of connections that each send one byte of a request head and
# reconnect when closed (more than ADMIN_MAX_CONNECTIONS, 64, at once) on the TCP listener, then
# on the Unix socket, while `custos ctl` and an authenticated curl are still answered. The new
# connections shed the ones that have waited longest for a request head; the shed connections
# are audited (admin.request, result "shed") at most 20 one by one per listener in a window,
# the rest summed. The test hook CUSTOS_TEST_ADMIN_TIMEOUT_S gives requests 300 s to be read,
# so that before the fix (slots taken until the 10 s read deadline) the flood outlasts ctl's own
# 30 s timeout whatever the machine's speed; CUSTOS_TEST_ADMIN_REFUSED_WINDOW_S puts every
# refusal in one audit window (summed at shutdown).
. "$(dirname "$0")/proxy_lib.bash"

[ "${CUSTOS_TEST_HOOKS:-0}" = 1 ] ||
	skip "custos is built without test hooks (CUSTOS_TEST_HOOKS, on in Debug builds)"
command -v python3 >/dev/null || skip "python3 not installed"
curl --help all 2>/dev/null | grep -q -- '--unix-socket' || skip "curl without --unix-socket"

admin_tcp_setup

export CUSTOS_TEST_ADMIN_TIMEOUT_S=300 CUSTOS_TEST_ADMIN_REFUSED_WINDOW_S=3600
start_admin_custos
grep -q 'admin: test hook: requests must be read within 300 s' "$work/custos.log" &&
	ok "test hook in force" || fail "test hook not logged"

K=80 # > 64 slots
flood_pid=''
# flood TARGET NAME: starts the flood and waits until its K connections are open.
flood() {
	python3 "$(dirname "$0")/admin_slots_flood.py" "$1" "$K" "$work/$2.status" 2>"$work/$2.err" &
	flood_pid=$!
	pids+=("$flood_pid")
	wait_until 60 test -s "$work/$2.status" || fail "$2: the flood did not open its $K connections: $(cat "$work/$2.err")"
}
closed_of() { awk '{print $2}' "$work/$1.status" 2>/dev/null; }
closed_reach() { [ "$(closed_of "$1")" -ge "$2" ] 2>/dev/null; }
unflood() {
	kill -TERM "$flood_pid"
	wait "$flood_pid"
}

# --- TCP
flood "tcp:127.0.0.1:$APORT" tcp
out=$("$bin" ctl --url "http://127.0.0.1:$APORT" --token-file "$work/token" health 2>&1)
check "TCP flood: ctl health answered" "$?|$out" '0|{"status":"ok"}'
check "TCP flood: authenticated curl answered" \
	"$(curl -sS --max-time 30 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$APORT/readyz")" 200
wait_until 60 closed_reach tcp 30 && ok "TCP flood: the server sheds the flood's connections ($(closed_of tcp) closed)" ||
	fail "TCP flood: fewer than 30 of its connections closed: $(cat "$work/tcp.status")"
check "TCP flood: a caller without the token is still told 401" \
	"$(curl -sS --max-time 30 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$APORT/healthz")" 401
unflood
tcp_closed=$(closed_of tcp)

# --- Unix socket (a uid its mode lets in may flood it too)
flood "unix:$work/admin.sock" unix
out=$("$bin" ctl --socket "$work/admin.sock" health 2>&1)
check "Unix flood: ctl health answered" "$?|$out" '0|{"status":"ok"}'
wait_until 60 closed_reach unix 30 && ok "Unix flood: shed ($(closed_of unix) closed)" ||
	fail "Unix flood: fewer than 30 of its connections closed: $(cat "$work/unix.status")"
unflood
unix_closed=$(closed_of unix)

check "the listener still serves after the floods" "$("$bin" ctl --url "http://127.0.0.1:$APORT" --token-file "$work/token" health)" '{"status":"ok"}'

kill -TERM "$CU_PID"
wait "$CU_PID" 2>/dev/null
grep -E 'Sanitizer|runtime error' "$work/custos.log" && fail "sanitizer report in the log" || ok "no sanitizer report"

# Audit: 20 shed connections one by one per listener, the others summed; every connection the
# flood saw closed was shed (it may have been shed more than it saw, as it stopped).
for l in tcp unix; do
	if [ $l = tcp ]; then who='tcp:127\.0\.0\.1' seen=$tcp_closed; else who="uid:$(id -u)" seen=$unix_closed; fi
	check "$l: 20 shed connections audited one by one" \
		"$(audit_grep "\"type\":\"admin.request\",\"principal\":\"$who\",\"listener\":\"$l\",\"result\":\"shed\",\"reason\":\"connection slots full: closed while waiting for its request head\"" | wc -l)" 20
	sum=$(audit_grep "\"type\":\"admin.request\",\"principal\":\"\\*\",\"listener\":\"$l\",\"result\":\"shed\",\"reason\":\"shed connections past the rate bound\",\"count\":" |
		sed -n 's/.*"count":\([0-9]*\).*/\1/p' | paste -sd+ | bc)
	[ -n "$sum" ] && [ $((sum + 20)) -ge "$seen" ] && ok "$l: the others summed ($sum + 20 >= $seen seen closed)" ||
		fail "$l: summary of shed connections: '$sum' + 20 < $seen"
done
[ "$fails" -eq 0 ] || exit 1
