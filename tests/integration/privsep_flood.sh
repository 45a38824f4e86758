#!/usr/bin/env bash
# The supervisor's answer to always-denied system calls made by the confined proxy
# (docs/SANDBOX.md "Privilege separation of `custos up`"), driven by the test hooks (Debug
# builds only, docs/CONTRIBUTING.md "Test hooks"): CUSTOS_TEST_PROXY_REFUSED_CALLS=N (the proxy
# calls ptrace N times in a row before it serves) and CUSTOS_TEST_REFUSED_WINDOW_S=3600 (the
# supervisor's "second" lasts an hour, so that all the calls of runs 2 and 3 fall in one window
# however slow the machine: no run depends on its speed).
#  1. A handful (5): each fails with EPERM in the proxy, is logged and audited by the
#     supervisor (privsep / proxy_call_refused, count 1); the proxy serves on and SIGTERM stops
#     custos up with exit 0.
#  2. 1000, the most the supervisor allows in one window: the proxy is not stopped, and the
#     trail counts every one (20 events, the rest summed when the proxy stops).
#  3. A flood (100000): the supervisor stops the proxy after the 1001st refused call in one
#     window, logs why, audits proxy_lost with the call and the sum of the calls it refused;
#     custos up ends with exit 1; the trail of all three runs verifies.
. "$(dirname "$0")/proxy_lib.bash"
[ "${CUSTOS_TEST_HOOKS:-0}" = 1 ] ||
	skip "custos is built without test hooks (CUSTOS_TEST_HOOKS, on in Debug builds)"
command -v python3 >/dev/null || skip "python3 not installed"

make_pki
start_fixture model
write_policy "$work/policy.yaml"
write_config "$work/custos.yaml" "$FX_PORT"
plain() { echo "http://127.0.0.1:$PORT2"; }
chat() {
	curl -s -o /dev/null -w '%{http_code}' --max-time 20 -H "Authorization: Bearer $ALICE" \
		-d '{"model":"test-model","messages":[{"role":"user","content":"hi"}]}' \
		"$(plain)/v1/chat/completions"
}
proxy_pid() { sed -n 's/.*supervisor pid [0-9]*, proxy pid \([0-9]*\).*/\1/p' "$work/custos.log" | head -1; }
# refused_total PID: the calls the trail counts as refused for proxy PID (every event's count).
refused_total() {
	audit_grep '"action":"proxy_call_refused"' | python3 -c '
import json, sys
print(sum(e["count"] for e in map(json.loads, sys.stdin) if e.get("proxy_pid") == int(sys.argv[1])))' "$1"
}
# wait_for SECONDS CMD...: true once CMD succeeds within SECONDS (CMD's own time counted).
wait_for() {
	local end=$((SECONDS + $1))
	shift
	until "$@"; do
		[ "$SECONDS" -lt "$end" ] || return 1
		sleep 0.1
	done
}
total_is() { [ "$(refused_total "$1")" = "$2" ]; }
hook_done() { grep -q "test hook: $1 of $1 ptrace call(s) failed with EPERM" "$work/custos.log"; }
# logged_is PID N: the supervisor has logged N refused calls of proxy PID.
logged_is() { [ "$(grep -c "the proxy (pid $1, thread custos-proxy) called ptrace (101), which custos never allows: refused (EPERM)" "$work/custos.log")" = "$2" ]; }
# stop_run NAME: SIGTERM; custos up must exit 0 without a sanitizer report; keeps its log.
stop_run() {
	kill -TERM "$CU_PID"
	wait "$CU_PID"
	check "$1: SIGTERM stops custos up" "$?" 0
	check "$1: no sanitizer report" "$(grep -cE 'AddressSanitizer|LeakSanitizer|runtime error' "$work/custos.log")" 0
	mv "$work/custos.log" "$work/custos-$1.log"
}

# ---- 1. a handful: refused, logged, audited one by one; the proxy serves on
CUSTOS_TEST_PROXY_REFUSED_CALLS=5 start_custos "$work/custos.yaml"
px=$(proxy_pid)
check "handful: the proxy's calls all failed with EPERM" "$(hook_done 5 && echo yes)" yes
# The supervisor logs each call after answering it: its lines may follow the proxy's.
check "handful: each call logged by the supervisor" "$(wait_for 30 logged_is "$px" 5 && echo 5)" 5
check "handful: each call audited (count 1)" "$(wait_for 30 total_is "$px" 5 && echo 5)" 5
check "handful: ... as events of their own naming the call" \
	"$(audit_grep '"action":"proxy_call_refused"' | grep -c "\"syscall\":\"ptrace\",\"syscall_nr\":101,\"caller_pid\":$px,\"caller_thread\":\"custos-proxy\",\"count\":1")" 5
check "handful: a chat is served afterwards" "$(chat)" 200
check "handful: by the same proxy" "$(kill -0 "$px" 2>/dev/null && echo alive)" alive
check "handful: not stopped" "$(grep -c 'stopping it' "$work/custos.log")" 0
stop_run handful

# ---- 2. 1000 in a row, the most one window may have: not stopped, every one counted
export CUSTOS_TEST_REFUSED_WINDOW_S=3600
CUSTOS_TEST_PROXY_REFUSED_CALLS=1000 start_custos "$work/custos.yaml"
px=$(proxy_pid)
check "1000: the supervisor's window is stretched by the test hook" \
	"$(grep -c 'test hook: the window for refused calls lasts 3600 s' "$work/custos.log")" 1
check "1000: the proxy's calls all failed with EPERM" "$(hook_done 1000 && echo yes)" yes
check "1000: a chat is served afterwards" "$(chat)" 200
check "1000: not stopped" "$(grep -c 'stopping it' "$work/custos.log")" 0
check "1000: the log is budgeted to 20 lines in the window" "$(wait_for 30 logged_is "$px" 20 && echo 20)" 20
# The events past the budget are summed once the window is over or the proxy stops (here).
check "1000: the trail counts 20 of them before the window ends" "$(wait_for 30 total_is "$px" 20 && refused_total "$px")" 20
stop_run 1000
check "1000: the rest summed in one event when the proxy stopped" \
	"$(audit_grep '"action":"proxy_call_refused"' | grep "\"proxy_pid\":$px," | grep -c '"syscall":"\*","count":980')" 1
check "1000: the trail counts every refused call" "$(refused_total "$px")" 1000

# ---- 3. a flood: the supervisor stops the proxy
CUSTOS_TEST_PROXY_REFUSED_CALLS=100000 "$bin" --log-format text --log-level debug up \
	-c "$work/custos.yaml" </dev/null 2>"$work/custos.log" &
CU_PID=$!
pids+=("$CU_PID")
if ! wait_for 120 bash -c "! kill -0 $CU_PID 2>/dev/null"; then
	fail "flood: custos up still runs after 120 s: stopped"
	kill -TERM "$CU_PID"
fi
wait "$CU_PID"
rc=$?
px=$(proxy_pid)
check "flood: custos up ends with exit 1" "$rc" 1
check "flood: the proxy is gone" "$(kill -0 "$px" 2>/dev/null && echo alive || echo gone)" gone
check "flood: the proxy never finished its calls" "$(grep -c 'test hook: .* failed with EPERM' "$work/custos.log")" 0
check "flood: the supervisor says why it stops the proxy" \
	"$(grep -c "the proxy made more than 1000 calls custos never allows in one second (last: ptrace by pid $px): stopping it" "$work/custos.log")" 1
why="killed by the supervisor: more than 1000 calls custos never allows in one second (last: ptrace by pid $px, thread custos-proxy)"
check "flood: and how the proxy ended" "$(grep -c "the proxy (pid $px) ended: .*$why; stopping the sandboxes" "$work/custos.log")" 1
lost=$(audit_grep '"action":"proxy_lost"' | grep "\"proxy_pid\":$px,")
check "flood: proxy_lost audited with the reason" "$(grep -cF "$why" <<<"$lost")" 1
check "flood: ... and the call" "$(grep -c "\"syscall\":\"ptrace\",\"syscall_nr\":101,\"caller_pid\":$px,\"caller_thread\":\"custos-proxy\"" <<<"$lost")" 1
check "flood: the trail counts the calls refused up to the stop (at least 1001)" \
	"$([ "$(refused_total "$px")" -ge 1001 ] && echo yes)" yes
check "flood: no sanitizer report" "$(grep -cE 'AddressSanitizer|LeakSanitizer|runtime error' "$work/custos.log")" 0
"$bin" audit verify "$work/audit" >"$work/verify.out" 2>&1
check "the trail of the three runs verifies ($(tail -1 "$work/verify.out"))" "$?" 0

[ "$fails" -eq 0 ] || exit 1
echo "all refused-call checks passed"
