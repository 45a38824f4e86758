#!/usr/bin/env bash
# A client of the admin TLS gate (admin.tls; docs/ADMIN.md "TLS") that stops reading while a
# large answer is sent: a python ssl client (admin_tls_client.py) with a 4 KiB receive buffer
# sends 600 pipelined GET /metrics (about 5 MB of answers, more than the kernel's buffers on
# both sides and the gate's 16 KiB hold) and reads nothing, until the answers stop coming in.
# - resumed within the bound: it then reads every answer whole (by Content-Length) and the
#   gate's TLS close_notify after them: the gate kept the connection's state while it waited;
# - never resumed: the gate ends the connection once the client has taken nothing of the answer
#   for the bound (logged "answer not taken within N s: closed"; its TCP socket leaves
#   ESTABLISHED), its thread does not spin meanwhile (CPU time of the custos-admintls thread
#   over the wait: under 5 s for a wait of 30 s or more, where a busy loop takes all of it), and
#   curl over TLS is answered afterwards. Before the fix the gate stopped reading libmicrohttpd's
#   side while its buffer waited for the client, so it never saw the answer end, and had no
#   deadline for it: the connection and its gate slot were held as long as the client lived.
# CUSTOS_TEST_ADMIN_TIMEOUT_S=30 is the bound (libmicrohttpd's and the gate's), so that the
# resumed client's wait, a few seconds, stays far under it on a loaded machine.
. "$(dirname "$0")/proxy_lib.bash"

[ "${CUSTOS_TEST_HOOKS:-0}" = 1 ] ||
	skip "custos is built without test hooks (CUSTOS_TEST_HOOKS, on in Debug builds)"
command -v python3 >/dev/null || skip "python3 not installed"
command -v ss >/dev/null || skip "ss (iproute2) not installed"

admin_tcp_setup "  tls:" "    cert: $work/tls/srv.crt" "    key: $work/tls/srv.key"
export CUSTOS_TEST_ADMIN_TIMEOUT_S=30
start_admin_custos
client="$(dirname "$0")/admin_tls_client.py"
K=600

# stall NAME [resume]: starts the client and waits until the answers have stopped coming in.
stall() {
	python3 "$client" stall "$APORT" "$work/tls/ca.crt" "$TOKEN" "$K" "$work/$1.st" ${2:+"$2"} 2>"$work/$1.err" &
	stall_pid=$!
	pids+=("$stall_pid")
	wait_until 120 grep -qs '^stalled' "$work/$1.st" ||
		{ fail "$1: the answers did not stall: '$(cat "$work/$1.st" 2>/dev/null)' $(cat "$work/$1.err")"; exit 1; }
}
# gate_cpu: CPU ticks (user + system) of the gate's thread so far (in the proxy process).
gate_cpu() {
	local t pp
	pp=$(sed -n 's/.*up: supervisor pid [0-9]*, proxy pid \([0-9]*\).*/\1/p' "$work/custos.log" | head -1)
	for t in "/proc/${pp:-none}"/task/[0-9]*; do
		[ "$(cat "$t/comm" 2>/dev/null)" = custos-admintls ] || continue
		awk '{print $14 + $15}' "$t/stat"
		return
	done
	echo none
}
estab() { ss -Htn state established "( sport = :$APORT )" | grep -c .; }

# --- resumed
stall resumed resume
kill -USR1 "$stall_pid"
wait_until 120 grep -qs '^answers' "$work/resumed.st"
check "resumed: every answer whole, then the gate's close_notify" "$(cat "$work/resumed.st")" "answers $K notify"
wait "$stall_pid"

# --- never resumed
stall never
cpu0=$(gate_cpu)
[ "$(estab)" -ge 1 ] && ok "never: the stalled connection is open ($(sed -n 's/stalled //p' "$work/never.st") bytes in the client's queue)" ||
	fail "never: no established connection on the admin port after the stall"
wait_until 120 grep -q 'admin: tls: answer not taken within 30 s: closed' "$work/custos.log" &&
	ok "never: the gate ended the connection at its bound (logged)" ||
	fail "never: the gate did not end the stalled connection within 120 s"
cpu1=$(gate_cpu)
[ "$cpu0" != none ] && [ $((cpu1 - cpu0)) -lt $((5 * $(getconf CLK_TCK))) ] &&
	ok "never: the gate's thread did not spin while it waited ($((cpu1 - cpu0)) ticks)" ||
	fail "never: the gate's thread used $cpu0 -> $cpu1 ticks while it waited"
no_estab() { [ "$(estab)" -eq 0 ]; }
wait_until 60 no_estab && ok "never: its server socket left ESTABLISHED" ||
	fail "never: $(estab) connection(s) still established on the admin port"
check "curl over TLS after the stalled connection ended" \
	"$(curl -sS --max-time 30 --cacert "$work/tls/ca.crt" -o /dev/null -w '%{http_code}' \
		-H "Authorization: Bearer $TOKEN" "https://localhost:$APORT/readyz")" 200
kill -TERM "$stall_pid"
wait "$stall_pid" 2>/dev/null

kill -TERM "$CU_PID"
wait "$CU_PID" 2>/dev/null
grep -E 'Sanitizer|runtime error' "$work/custos.log" && fail "sanitizer report in the log" || ok "no sanitizer report"
[ "$fails" -eq 0 ] || exit 1
