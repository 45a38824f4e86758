#!/usr/bin/env bash
# Shedding at the libmicrohttpd level after a TLS handshake (admin.tls; docs/ADMIN.md "TLS" and
# "Connection slots under a flood"): 150 clients (python ssl, admin_tls_client.py) each finish
# their TLS handshake through the gate and send no request. The admin server's own slots (64 a
# listener) shed the oldest connection waiting for a request head as each one past 64 arrives,
# by shutting down its end of the gate's socketpair. The test checks what the shed clients see
# (the gate relays the end as a TLS close_notify, then closes: no reset, no bare TCP end, the
# oldest first), that all 150 handshakes are counted ok (none refused: the gate frees the slot
# of each connection libmicrohttpd ends, or the gate's 128 would be full before the 150th), that
# the sheds are counted in custos_admin_denied_total and audited (admin.request, result "shed",
# listener "tcp", the client's address as principal), and that with 64 idle TLS connections
# still held, curl and ctl with the token are answered over TLS.
# CUSTOS_TEST_ADMIN_TIMEOUT_S gives each connection 300 s, so that the read deadline never ends
# one before it is shed; CUSTOS_TEST_ADMIN_REFUSED_WINDOW_S puts every shed in one audit window.
. "$(dirname "$0")/proxy_lib.bash"

[ "${CUSTOS_TEST_HOOKS:-0}" = 1 ] ||
	skip "custos is built without test hooks (CUSTOS_TEST_HOOKS, on in Debug builds)"
command -v python3 >/dev/null || skip "python3 not installed"

admin_tcp_setup "  tls:" "    cert: $work/tls/srv.crt" "    key: $work/tls/srv.key"
export CUSTOS_TEST_ADMIN_TIMEOUT_S=300 CUSTOS_TEST_ADMIN_REFUSED_WINDOW_S=3600
start_admin_custos

# metric NAME: its value, read over the Unix socket (no TLS handshake of its own).
metric() {
	"$bin" ctl --socket "$work/admin.sock" metrics 2>/dev/null | awk -v s="$1" '$1 == s {print $2}'
}
N=150 SLOTS=64
st="$work/idle.status"
python3 "$(dirname "$0")/admin_tls_client.py" idle "$APORT" "$work/tls/ca.crt" "$N" "$st" 2>"$work/idle.err" &
idle_pid=$!
pids+=("$idle_pid")
want="opened=$N open=$SLOTS notify=$((N - SLOTS)) raw=0 reset=0 oldest=yes"
status_is() { [ "$(cat "$st" 2>/dev/null)" = "$1" ]; }
wait_until 120 status_is "$want" &&
	ok "$((N - SLOTS)) of $N idle TLS connections shed, the oldest, each with a close_notify; $SLOTS held" ||
	fail "idle connections: '$(cat "$st" 2>/dev/null)', want '$want' ($(cat "$work/idle.err"))"

check "custos_admin_tls_handshakes_total ok: every handshake completed" \
	"$(metric 'custos_admin_tls_handshakes_total{result="ok"}')" "$N"
check "custos_admin_tls_handshakes_total failed: none refused by the gate" \
	"$(metric 'custos_admin_tls_handshakes_total{result="failed"}')" 0
# custos closes a shed connection (admin.c shed_one), then counts it: the client can see the
# last close_notify before the counter moves. Wait for the count, then check it is exact.
denied_reach() { [ "$(metric custos_admin_denied_total)" -ge "$1" ] 2>/dev/null; }
wait_until 30 denied_reach $((N - SLOTS))
check "custos_admin_denied_total counts each shed" "$(metric custos_admin_denied_total)" $((N - SLOTS))
grep -q 'admin: tls: connections full' "$work/custos.log" &&
	fail "the gate refused a connection: its slots were not freed" ||
	ok "the gate never ran out of slots (no 'connections full')"

# With 64 idle connections held, a caller with the token is answered (sheds one more each).
check "curl over TLS with the token, while 64 are held" \
	"$(curl -sS --max-time 30 --cacert "$work/tls/ca.crt" -o /dev/null -w '%{http_code}' \
		-H "Authorization: Bearer $TOKEN" "https://localhost:$APORT/readyz")" 200
out=$("$bin" ctl --url "https://localhost:$APORT" --cacert "$work/tls/ca.crt" --token-file "$work/token" health 2>&1)
check "ctl over TLS, while 64 are held" "$?|$out" '0|{"status":"ok"}'
# Each of them sheds the connection waiting longest: an idle one, or the previous caller's if
# libmicrohttpd has not seen it end yet (a keep-alive connection waiting for its next request).
notify_of() { sed -n 's/.*notify=\([0-9]*\).*/\1/p' "$st"; }
notify_reach() { [ "$(notify_of)" -ge "$1" ] 2>/dev/null; }
wait_until 60 notify_reach $((N - SLOTS + 1)) || fail "no idle connection shed for curl and ctl: '$(cat "$st")'"
# The client may still be reading a second close_notify (ctl's shed, after curl's): its status
# can change at any time, so it is read once and checked in itself; the counter of sheds is
# read once it has counted as many (it counts each just after closing the connection).
now=$(cat "$st")
nn=$(sed -n 's/.*notify=\([0-9]*\).*/\1/p' <<<"$now")
grep -q "open=$((N - nn)) notify=$nn raw=0 reset=0 oldest=yes" <<<"$now" &&
	ok "curl and ctl shed $((nn - N + SLOTS)) more idle connection(s), cleanly" ||
	fail "after curl and ctl: '$now'"
check "custos_admin_tls_handshakes_total ok after curl and ctl" \
	"$(metric 'custos_admin_tls_handshakes_total{result="ok"}')" $((N + 2))
wait_until 30 denied_reach "$nn"
sheds=$(metric custos_admin_denied_total)
[ "$sheds" -ge "$nn" ] && [ "$sheds" -le $((N - SLOTS + 2)) ] &&
	ok "custos_admin_denied_total ($sheds) counts the sheds" ||
	fail "custos_admin_denied_total $sheds, idle connections shed $nn"

kill -TERM "$idle_pid"
wait "$idle_pid"
kill -TERM "$CU_PID"
wait "$CU_PID" 2>/dev/null
grep -E 'Sanitizer|runtime error' "$work/custos.log" && fail "sanitizer report in the log" || ok "no sanitizer report"

check "20 shed TLS connections audited one by one" \
	"$(audit_grep '"type":"admin.request","principal":"tcp:127\.0\.0\.1","listener":"tcp","result":"shed","reason":"connection slots full: closed while waiting for its request head"' | wc -l)" 20
sum=$(audit_grep '"type":"admin.request","principal":"\*","listener":"tcp","result":"shed","reason":"shed connections past the rate bound","count":' |
	sed -n 's/.*"count":\([0-9]*\).*/\1/p' | paste -sd+ | bc)
check "the other sheds summed" "${sum:-none}" $((sheds - 20))
[ "$fails" -eq 0 ] || exit 1
