#!/usr/bin/env bash
# What the admin API refuses before custos's access handler sees a request is audited too
# (docs/ADMIN.md "Audit"), with real clients (admin_refusals_client.py) on the plain TCP
# listener, the Unix socket and the TCP listener with admin.tls:
# - a field of 70000 bytes (over the 64 KiB of connection memory: libmicrohttpd answers 431),
#   a field line without a colon (400) and an HTTP/2.0 request line (505) each give exactly one
#   admin.request event: the peer as principal, listener, path when the request line was read,
#   the status libmicrohttpd sent, result "refused" and a reason;
# - on TCP, a request line without a space (libmicrohttpd closes without an answer and logs
#   nothing) gives one event: result "refused", no status, reason "malformed request line";
#   connections that send nothing and close, beside 505s, give none (each 505 one event);
# - a request head sent one byte every 0.2 s, and a connection that sends nothing, are closed
#   by the watchdog past their deadline (the test hook CUSTOS_TEST_ADMIN_TIMEOUT_S at its
#   smallest, 1 s; the client waits for the close), each with exactly one event: result
#   "timeout", no status (no answer is sent), the path when the request line was read;
# - a request custos answers (401 without the token) has its own event and no other; a
#   kept-alive connection that the watchdog closes idle after an answer (200, not audited)
#   has none;
# - custos_admin_denied_total counts each refusal;
# - a flood of 40 such refusals (through admin.tls) gives 20 events of the kind one by one in a
#   window (CUSTOS_TEST_ADMIN_REFUSED_WINDOW_S makes it last the whole run) and one summary
#   with the count of the rest, written at shutdown.
. "$(dirname "$0")/proxy_lib.bash"

[ "${CUSTOS_TEST_HOOKS:-0}" = 1 ] ||
	skip "custos is built without test hooks (CUSTOS_TEST_HOOKS, on in Debug builds)"
command -v python3 >/dev/null || skip "python3 not installed"

client="$(dirname "$0")/admin_refusals_client.py"
export CUSTOS_TEST_ADMIN_TIMEOUT_S=1

# run_case KIND ADDR CASE PATH TOKEN WANT [CA]: the client's case; checks the status it saw.
# WANT "431|reset": a 431, or a reset (libmicrohttpd closes with our bytes still unread, and
# the kernel may reset the connection before the client has read the answer).
run_case() {
	local kind=$1 addr=$2 case=$3 path=$4 tok=$5 want=$6 ca=${7:-}
	local out st
	out=$(timeout 90 python3 "$client" "$kind" "$addr" "$case" "$path" "$tok" $ca 2>&1)
	st=$(sed -n 's/^status //p' <<<"$out")
	# answered: WANT is the answer's status; then the connection closes without another
	[ "$case" != answered ] || { [ "$st" = none ] && st=$(sed -n 's/^answered //p' <<<"$out"); }
	if grep -qx closed <<<"$out" && grep -Eqx "$want" <<<"$st"; then
		ok "$kind $case: status $st, connection closed"
	else
		fail "$kind $case: got '$out', want status $want and a close"
	fi
}

# events FILTER...: the admin.request events of $work/audit, each matching every FILTER (grep -F).
events() {
	local lines
	lines=$(cat "$work"/audit/*.jsonl 2>/dev/null | grep -F '"type":"admin.request"')
	for f in "$@"; do
		lines=$(grep -F -- "$f" <<<"$lines")
	done
	[ -n "$lines" ] && printf '%s\n' "$lines"
}
count() { events "$@" | wc -l; }

# check_events LISTENER PRINCIPAL PFX WITH_401 TOTAL: the events of one listener's cases, TOTAL
# events of PRINCIPAL in all.
check_events() {
	local l=$1 who=$2 pfx=$3 with401=$4 total=$5
	local base="\"principal\":\"$who\",\"listener\":\"$l\""
	check "$pfx 431: one event" "$(count "$base,\"path\":\"/$pfx-431\",\"status\":431,\"result\":\"refused\",\"reason\":\"libmicrohttpd: request head over the connection memory\"")" 1
	check "$pfx 400: one event" "$(count "$base,\"path\":\"/$pfx-400\",\"status\":400,\"result\":\"refused\",\"reason\":\"libmicrohttpd: malformed request\"")" 1
	check "$pfx 505: one event (no path: the request line was refused)" "$(count "$base,\"status\":505,\"result\":\"refused\",\"reason\":\"libmicrohttpd: HTTP version not supported\"")" "${N505:-1}"
	check "$pfx slow head: one event" "$(count "$base,\"path\":\"/$pfx-slow\",\"result\":\"timeout\",\"reason\":\"request head not complete within 1 s: closed without an answer\"")" 1
	check "$pfx silent connection: one event, no path" "$(count "$base,\"result\":\"timeout\",\"reason\":\"request head not complete within 1 s: closed without an answer\"")" 1
	[ "$with401" = 0 ] ||
		check "$pfx 401: its own event only" "$(count "\"path\":\"/$pfx-401\"")" 1
	check "$pfx events in all" "$(count "\"principal\":\"$who\"")" "$total"
}

# cases KIND ADDR PFX TOKEN [CA]: every case on one listener.
cases() {
	local kind=$1 addr=$2 pfx=$3 tok=$4 ca=${5:-}
	run_case "$kind" "$addr" big "/$pfx-431" "" '431|reset' $ca
	run_case "$kind" "$addr" field "/$pfx-400" "" 400 $ca
	run_case "$kind" "$addr" version "/$pfx-505" "" 505 $ca
	run_case "$kind" "$addr" slow "/$pfx-slow" "" none $ca
	run_case "$kind" "$addr" idle "/" "" none $ca
	run_case "$kind" "$addr" answered "/healthz" "$tok" 200 $ca
}

metric() {
	"$bin" ctl --socket "$work/admin.sock" metrics 2>/dev/null | awk -v s="$1" '$1 == s {print $2}'
}
stop_custos() {
	kill -TERM "$CU_PID"
	wait "$CU_PID" 2>/dev/null
	check "custos exit status after SIGTERM" "$?" 0
	check "no sanitizer report" "$(grep -cE 'AddressSanitizer|LeakSanitizer|runtime error' "$work/custos.log")" 0
}

# --- plain TCP and the Unix socket
admin_tcp_setup
start_admin_custos
cases tcp "$APORT" tcp "$TOKEN"
cases unix "$work/admin.sock" unix ""
run_case tcp "$APORT" answered "/tcp-401" "" 401
# A silent probe beside 505s: only the connections answered take their statuses.
for i in 1 2 3; do
	run_case tcp "$APORT" probe "/" "" none &
	probe=$!
	run_case tcp "$APORT" version "/tcp-505-$i" "" 505
	wait "$probe"
done
run_case tcp "$APORT" nospace "/" "" none
wait_until 30 grep -q 'request not complete within 1 s' "$work/custos.log" ||
	fail "no watchdog close logged"
# 5 refusals a listener (3 answered by libmicrohttpd, 2 closed), the 401, three more 505s and
# the request line without a space on TCP
check "custos_admin_denied_total counts each refusal" "$(metric custos_admin_denied_total)" 15
stop_custos
me=$(id -u)
N505=4 check_events tcp "tcp:127.0.0.1" tcp 1 10
check "tcp: a request line without a space: one event, no status" "$(count '"principal":"tcp:127.0.0.1","listener":"tcp","result":"refused","reason":"libmicrohttpd: malformed request line: closed without an answer"')" 1
check_events unix "uid:$me" unix 0 5
mv "$work/audit" "$work/audit.plain"

# --- the TCP listener with admin.tls (the gate hands libmicrohttpd a socketpair)
T=$work/tls
NO_DEFAULT_ADMIN=1 write_config "$work/custos.yaml" "$FX_PORT"
cat >>"$work/custos.yaml" <<CFG
admin:
  socket: $work/admin.sock
  tls:
    cert: $T/srv.crt
    key: $T/srv.key
  tcp:
    address: "127.0.0.1:$APORT"
    token_sha256: "$(sha256hex "$TOKEN")"
CFG
export CUSTOS_TEST_ADMIN_REFUSED_WINDOW_S=3600
start_admin_custos
grep -q "tcp+tls:127.0.0.1:$APORT" "$work/custos.log" || fail "no tcp+tls listener in the log"
cases tls "$APORT" tls "$TOKEN" "$T/ca.crt"
run_case tls "$APORT" flood "/tls-flood" "" 400 "$T/ca.crt"
stop_custos
# 3 refusals by libmicrohttpd before the flood: 17 of the flood's 40 have their own event
check_events tcp "tcp:127.0.0.1" tls 0 $((5 + 17))
check "flood: 17 events one by one" "$(count '"path":"/tls-flood","status":400,"result":"refused"')" 17
check "flood: the other 23 summed" "$(count '"principal":"*","listener":"tcp","result":"refused","reason":"requests refused by libmicrohttpd past the rate bound","count":23')" 1
check "flood: no other summary" "$(count '"principal":"*"')" 1

[ "$fails" -eq 0 ] || exit 1
echo "all admin refusal audit checks passed"
