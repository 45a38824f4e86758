#!/usr/bin/env bash
# A reload that the proxy refuses after the supervisor started its new sandbox (a policy that
# does not compile: refused COMMIT) leaves that sandbox unroutable from its COMMIT on, before it
# is stopped (docs/SANDBOX.md, "Reload", step 4). With the test hook
# CUSTOS_TEST_REFUSED_STOP_HOLD (Debug builds, docs/CONTRIBUTING.md "Test hooks") the refused
# sandbox keeps running until the test lets it stop, so that the next reload reads custos.yaml
# while it still runs:
# 1. the file reverted to the model in force: the reload keeps the old sandbox (its 4 tokens),
#    never the refused one (6);
# 2. the file changes the model again: the reload starts its own sandbox, without waiting for
#    the refused one to stop, and routes to it.
. "$(dirname "$0")/proxy_lib.bash"

[ "$(id -u)" -eq 0 ] || skip "needs root for the process sandbox in this test"
unshare -Urn true 2>/dev/null || skip "user/network namespaces not available"
[ "${CUSTOS_TEST_HOOKS:-0}" = 1 ] || skip "custos is built without test hooks (CUSTOS_TEST_HOOKS, on in Debug builds)"

make_pki
p1=18130
write_policy "$work/policy.yaml"
cp "$work/policy.yaml" "$work/policy.good"
# model_yaml TOKENS: test-model sandboxed (the fixture) answering TOKENS completion tokens.
model_yaml() {
	cat <<M
  - id: test-model
    sandbox:
      type: process
      profile: fx
      command: [/opt/fx/model-server, --listen, "127.0.0.1:$p1", --tokens, "$1", --model-id, test-model]
      env: { ASAN_OPTIONS: "detect_leaks=0" }
      port: $p1
      health: { start_timeout: 20s }
M
}
sandbox_conf_template 5s
# conf TOKENS good|bad: custos.yaml with test-model at TOKENS, and a policy that compiles or not.
conf() {
	conf_models "$(model_yaml "$1")
"
	if [ "$2" = good ]; then
		cp "$work/policy.good" "$work/policy.yaml"
	else
		printf 'version: 1\nrules: [\n' >"$work/policy.yaml"
	fi
}
conf 4 good
"$bin" config check "$work/custos.yaml" >/dev/null 2>&1 || { "$bin" config check "$work/custos.yaml"; fail "config check"; exit 1; }
CUSTOS_TEST_REFUSED_STOP_HOLD="$work/release" start_custos "$work/custos.yaml"
wait_until 60 test -S "$work/admin.sock" || fail "no admin socket $work/admin.sock after 60 s"
ctl() { "$bin" ctl --socket "$work/admin.sock" "$@"; }
C=(curl -sS --cacert "$work/tls/ca.crt" --max-time 20)
chat() { "${C[@]}" -o "${1:-/dev/null}" -w '%{http_code}' -H "Authorization: Bearer $ALICE" -d '{"model":"test-model","messages":[{"role":"user","content":"hi"}]}' "https://localhost:$PORT/v1/chat/completions"; }
# The completion tokens of one answer: the --tokens of the sandbox that gave it.
tokens() { chat "$work/one.json" >/dev/null; sed -n 's/.*"completion_tokens":\([0-9]*\).*/\1/p' "$work/one.json"; }
sbx_pid() { ctl sandboxes | grep -o '{"id":"test-model",[^}]*' | sed -n 's/.*"pid":\([0-9]*\).*/\1/p'; }
# The pid of the sandbox started last (the supervisor logs each start).
last_start() { sed -n 's/.*up: model test-model: sandbox started (pid \([0-9]*\)).*/\1/p' "$work/custos.log" | tail -1; }
pid_gone() { ! kill -0 "$1" 2>/dev/null; }
exited_pid() { audit_grep '"type":"sandbox.process".*"model":"test-model".*"action":"exit".*"pid":'"$1"'[,}]' >/dev/null; }
held() { grep -c 'up: test hook: reload [0-9]* refused: its 1 sandboxes are stopped once' "$work/custos.log"; }
released() { grep -c "up: test hook: the refused reload's sandboxes are stopped now" "$work/custos.log"; }
held_at_least() { [ "$(held)" -ge "$1" ]; }

check "test-model before any reload" "$(tokens)" 4
pid1=$(sbx_pid)
[ -n "$pid1" ] && kill -0 "$pid1" 2>/dev/null && ok "its sandbox runs (pid $pid1)" || fail "pid of test-model: '$pid1'"

# 1. 4 -> 6 tokens with a policy that does not compile: the supervisor starts the new sandbox,
# the proxy refuses the reload. Then the file is put back: that reload must keep the old one.
conf 6 bad
out=$(ctl policy reload 2>&1); rc=$?; echo "reload: $out" >&2
check "reload with a broken policy is refused" "$rc" 1
wait_log 'up: test hook: reload [0-9]* refused: its 1 sandboxes are stopped once' 1
ref1=$(last_start)
[ -n "$ref1" ] && [ "$ref1" != "$pid1" ] && kill -0 "$ref1" 2>/dev/null && ok "the refused reload's sandbox still runs, held (pid $ref1)" || fail "refused sandbox pid '$ref1'"
check "the model still answers from the old sandbox" "$(tokens)" 4
conf 4 good
out=$(ctl policy reload 2>&1); rc=$?; echo "reload: $out" >&2
check "reload putting the file back" "$rc" 0
check "it routes to the old sandbox, not to the refused one still running" "$(tokens)" 4
check "the listed sandbox is the old one" "$(sbx_pid)" "$pid1"
kill -0 "$ref1" 2>/dev/null && ok "the refused sandbox was still running meanwhile" || fail "pid $ref1 stopped before the release: the check above proves nothing"
touch "$work/release"
wait_until 30 pid_gone "$ref1" && ok "released, the refused sandbox is stopped" || fail "pid $ref1 still runs"
wait_until 30 exited_pid "$ref1" && ok "its end is audited" || fail "exit of pid $ref1 not audited"
check "the old sandbox still answers" "$(tokens)" 4
check "and is the one listed" "$(sbx_pid)" "$pid1"
rm -f "$work/release"

# 2. Refused again (held), then the same change with a policy that compiles: that reload starts
# its own sandbox while the refused one still runs, and routes to it.
conf 6 bad
out=$(ctl policy reload 2>&1); rc=$?; echo "reload: $out" >&2
check "the second broken reload is refused" "$rc" 1
wait_until 60 held_at_least 2 || fail "the second refused reload was not held"
ref2=$(last_start)
[ -n "$ref2" ] && [ "$ref2" != "$pid1" ] && [ "$ref2" != "$ref1" ] && kill -0 "$ref2" 2>/dev/null && ok "its sandbox runs, held (pid $ref2)" || fail "refused sandbox pid '$ref2'"
conf 6 good
out=$(ctl policy reload 2>&1); rc=$?; echo "reload: $out" >&2
check "the same change with a good policy is applied while the refused sandbox still runs" "$rc" 0
pid3=$(sbx_pid)
[ -n "$pid3" ] && [ "$pid3" != "$ref2" ] && [ "$pid3" != "$pid1" ] && ok "it started its own sandbox (pid $pid3)" || fail "listed pid '$pid3' (old $pid1, refused $ref2)"
check "answers come from it (6 tokens)" "$(tokens)" 6
check "released only now" "$(released)" 1
kill -0 "$ref2" 2>/dev/null && ok "the refused sandbox was still running meanwhile" || fail "pid $ref2 stopped before the release"
touch "$work/release"
wait_until 30 pid_gone "$ref2" && ok "released, the refused sandbox is stopped" || fail "pid $ref2 still runs"
wait_until 30 pid_gone "$pid1" && ok "the replaced sandbox is stopped" || fail "pid $pid1 still runs"
check "the new sandbox still answers" "$(tokens)" 6
check "and is the one listed" "$(sbx_pid)" "$pid3"

kill -TERM "$CU_PID"
wait "$CU_PID" 2>/dev/null
grep -E 'Sanitizer|runtime error' "$work/custos.log" && fail "sanitizer report in the log" || ok "no sanitizer report"
[ "$fails" -eq 0 ]
