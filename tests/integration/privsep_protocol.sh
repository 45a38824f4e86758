#!/usr/bin/env bash
# The supervisor of `custos up` against a proxy that breaks the privsep protocol
# (docs/SANDBOX.md "What the supervisor accepts from the proxy"), driven by the test hook
# CUSTOS_TEST_PSX_SEND (Debug builds only, docs/CONTRIBUTING.md "Test hooks"): once serving,
# the proxy sends the supervisor one message a compromised proxy could. For each, the
# supervisor kills the proxy, logs why, audits proxy_lost with the fault, and custos up ends
# with exit 1 (fail closed):
#  1. WANT for a slot that does not exist (no sandbox here: no slot at all);
#  2. COMMIT applied for a reload never asked for;
#  3. 4 bytes, no header (malformed frame);
#  4. DRAINED with a payload (no proxy message has one);
#  5. PROXY_UP with an fd (only SECCOMP carries one);
#  6. an empty message with an fd, which reads as EOF: the supervisor stops reading and
#     kills the proxy that lives on 10 s later;
#  7. an unknown type;
#  8. DRAINED twice (the supervisor stopped the sandboxes at the first);
#  9. a proxy that reads none of the supervisor's messages (stall) and sends RELOAD/COMMIT
#     pairs, whose answers fill its socket: killed once the supervisor's send timeout passed
#     (2 s here: test hook CUSTOS_TEST_SUP_SEND_TIMEOUT_S).
. "$(dirname "$0")/proxy_lib.bash"
[ "${CUSTOS_TEST_HOOKS:-0}" = 1 ] ||
	skip "custos is built without test hooks (CUSTOS_TEST_HOOKS, on in Debug builds)"

make_pki
start_fixture model
write_policy "$work/policy.yaml"
write_config "$work/custos.yaml" "$FX_PORT"
chmod 600 "$work/custos.yaml"
proxy_pid() { sed -n 's/.*supervisor pid [0-9]*, proxy pid \([0-9]*\).*/\1/p' "$work/custos.log" | head -1; }
# wait_for SECONDS CMD...: true once CMD succeeds within SECONDS.
wait_for() {
	local end=$((SECONDS + $1))
	shift
	until "$@"; do
		[ "$SECONDS" -lt "$end" ] || return 1
		sleep 0.1
	done
}
# run NAME SPEC: custos up with the hook sending SPEC; waits (bounded) until it ends; sets RC
# and PX (the proxy's pid); keeps the log as custos-NAME.log.
run() {
	CUSTOS_TEST_PSX_SEND=$2 "$bin" --log-format text --log-level debug up \
		-c "$work/custos.yaml" </dev/null 2>"$work/custos.log" &
	CU_PID=$!
	pids+=("$CU_PID")
	if ! wait_for 120 bash -c "! kill -0 $CU_PID 2>/dev/null"; then
		fail "$1: custos up still runs after 120 s: stopped"
		kill -TERM "$CU_PID"
	fi
	wait "$CU_PID"
	RC=$?
	PX=$(proxy_pid)
	check "$1: the hook sent it" "$(grep -cF "test hook: the proxy sends the supervisor $2" "$work/custos.log")" 1
	check "$1: custos up ends with exit 1" "$RC" 1
	check "$1: the proxy is gone" "$(kill -0 "$PX" 2>/dev/null && echo alive || echo gone)" gone
	check "$1: no sanitizer report" "$(grep -cE 'AddressSanitizer|LeakSanitizer|runtime error' "$work/custos.log")" 0
	cp "$work/custos.log" "$work/custos-$1.log"
}
# killed NAME WHY: the supervisor killed the proxy for WHY: logged, and audited in proxy_lost.
killed() {
	check "$1: the supervisor says why it stops the proxy" \
		"$(grep -cF "the proxy (pid $PX) broke the supervisor's protocol: $2; stopping it" "$work/custos.log")" 1
	local why="killed by the supervisor: $2"
	check "$1: and how the proxy ended" \
		"$(grep -cF "the proxy (pid $PX) ended: unexpectedly: $why; stopping the sandboxes" "$work/custos.log")" 1
	check "$1: proxy_lost audited with the fault" \
		"$(audit_grep '"action":"proxy_lost"' | grep "\"proxy_pid\":$PX," | grep -cF "$why")" 1
}

run want_slot "32,9,0,1,0,0"
killed want_slot "message type 32, slot 9: no such sandbox slot"
run commit "38,0,5,1,0,0"
killed commit "COMMIT of reload 5 without its RELOADED answer"
run short short
killed short "a malformed message (Protocol error)"
run payload "34,0,0,0,8,0"
killed payload "message type 34, slot 0: a payload where none is allowed"
run proxy_up_fd "35,0,0,0,0,1"
killed proxy_up_fd "message type 35, slot 0: an unexpected fd"
run unknown_type "99,0,0,0,0,0"
killed unknown_type "message type 99, slot 0: unknown type"
run drained_twice "34,0,0,0,0,0;34,0,0,0,0,0"
why="message type 34, slot 0: DRAINED twice"
check "drained_twice: the supervisor says why it stops the proxy" \
	"$(grep -cF "the proxy (pid $PX) broke the supervisor's protocol: $why; stopping it" "$work/custos.log")" 1
check "drained_twice: proxy_lost audited with the fault" \
	"$(audit_grep '"action":"proxy_lost"' | grep "\"proxy_pid\":$PX," | grep -cF "after draining: killed by the supervisor: $why")" 1
zeros=0000000000000000000000000000000000000000000000000000000000000000
CUSTOS_TEST_SUP_SEND_TIMEOUT_S=2 run stall "2000*stall:120000;37,0,9,0,64,0:$zeros;38,0,9,0,0,0"
killed stall "it read none of the supervisor's messages for 2 seconds"
run empty_fd empty_fd
check "empty_fd: the proxy that shut nothing but lives on is killed" \
	"$(grep -c 'the proxy did not stop in time: SIGKILL' "$work/custos.log")" 1
check "empty_fd: proxy_lost audited" \
	"$(audit_grep '"action":"proxy_lost"' | grep -c "\"proxy_pid\":$PX,")" 1
"$bin" audit verify "$work/audit" >"$work/verify.out" 2>&1
check "the trail of the runs verifies ($(tail -1 "$work/verify.out"))" "$?" 0

[ "$fails" -eq 0 ] || exit 1
echo "all privsep protocol checks passed"
