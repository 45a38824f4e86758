#!/usr/bin/env bash
# Slots of the privsep protocol are reused (docs/SANDBOX.md, "Reload"): once a removed or
# replaced sandbox is stopped and the proxy let go of it, a later reload's sandbox takes its
# slot, so that reloads keep working however many sandboxes custos has run. A model's sandbox
# is replaced 70 times (more than the 64 slots): each reload is applied and its new sandbox
# answers. Then, with the test hook CUSTOS_TEST_SANDBOX_SLOTS=2 (Debug builds), a reload
# needing more slots than are free is refused whole, naming the limit, and the sandbox serving
# stays, while one that needs only the free slot is applied.
. "$(dirname "$0")/proxy_lib.bash"

[ "$(id -u)" -eq 0 ] || skip "needs root for the process sandbox in this test"
unshare -Urn true 2>/dev/null || skip "user/network namespaces not available"

CYCLES=70
make_pki
p1=18130 p2=18131
write_policy "$work/policy.yaml"
# model_yaml ID PORT TOKENS: one sandboxed model server (the fixture).
model_yaml() {
	cat <<M
  - id: $1
    sandbox:
      type: process
      profile: fx
      command: [/opt/fx/model-server, --listen, "127.0.0.1:$2", --tokens, "$3", --model-id, $1]
      env: { ASAN_OPTIONS: "detect_leaks=0" }
      port: $2
      health: { start_timeout: 20s }
M
}
sandbox_conf_template 60s
# conf TOKENS [EXTRA]: test-model with TOKENS, and EXTRA (more models) after it.
conf() {
	conf_models "$(model_yaml test-model $p1 "$1")
${2-}"
}
ctl() { "$bin" ctl --socket "$work/admin.sock" "$@"; }
C=(curl -sS --cacert "$work/tls/ca.crt" --max-time 30)
chat() { "${C[@]}" -o "${2:-/dev/null}" -w '%{http_code}' -H "Authorization: Bearer $ALICE" -d '{"model":"'"$1"'","messages":[{"role":"user","content":"hi"}]}' "https://localhost:$PORT/v1/chat/completions"; }
# The completion tokens of one answer: the --tokens of the sandbox that gave it.
tokens() { chat test-model "$work/one.json" >/dev/null; sed -n 's/.*"completion_tokens":\([0-9]*\).*/\1/p' "$work/one.json"; }
stops() { audit_grep '"type":"sandbox.process".*"model":"test-model".*"action":"stop"' | grep -c .; }
# Conditions for wait_until, evaluated on each try.
stops_at_least() { [ "$(stops)" -ge "$1" ]; }
cgroups() { find /sys/fs/cgroup -maxdepth 5 -type d -name "custos-$1-$CU_PID-*" -printf '%f\n' 2>/dev/null | sort -u | grep -c .; }
cgroups_at_most() { [ "$(cgroups "$1")" -le "$2" ]; }

conf 1
"$bin" config check "$work/custos.yaml" >/dev/null 2>&1 || { "$bin" config check "$work/custos.yaml"; fail "config check"; exit 1; }
start_custos "$work/custos.yaml"
wait_until 60 test -S "$work/admin.sock" || fail "no admin socket $work/admin.sock after 60 s"
check "test-model before any reload" "$(tokens)" 1

# 1. Replace test-model's sandbox 70 times: each replacement takes a slot an old sandbox left
# once it was stopped (64 slots: without reuse, the 64th reload would be refused).
applied=0 answered=0
for k in $(seq 2 $((CYCLES + 1))); do
	n_stop=$(stops)
	conf "$k"
	out=$(ctl policy reload 2>&1); rc=$?
	[ "$rc" = 0 ] && applied=$((applied + 1)) || echo "reload $k: $out" >&2
	[ "$(tokens)" = "$k" ] && answered=$((answered + 1)) || echo "reload $k: answer: $(cat "$work/one.json")" >&2
	wait_until 30 stops_at_least $((n_stop + 1)) || fail "reload $k: the replaced sandbox was not stopped"
done
check "all $CYCLES replacements applied" "$applied" "$CYCLES"
check "after each, the new sandbox answered" "$answered" "$CYCLES"
wait_until 30 cgroups_at_most test-model 1 && ok "one test-model cgroup left" || fail "cgroups: $(cgroups test-model)"
wait_log "up: model test-model: sandbox stopped and removed" "$CYCLES"
kill -TERM "$CU_PID"
wait "$CU_PID" 2>/dev/null
grep -E 'Sanitizer|runtime error' "$work/custos.log" && fail "sanitizer report in the log"

if [ "${CUSTOS_TEST_HOOKS:-0}" != 1 ]; then
	echo "skipped: the slot limit checks need the test hooks (CUSTOS_TEST_HOOKS, Debug builds)"
	[ "$fails" -eq 0 ]
	exit
fi
# 2. With 2 slots (test hook): replacing test-model and adding slow-model in one reload needs
# 2 slots while 1 is free: refused whole, the sandbox serving stays.
rm -f "$work/admin.sock"
conf 1
CUSTOS_TEST_SANDBOX_SLOTS=2 start_custos "$work/custos.yaml"
wait_until 60 test -S "$work/admin.sock" || fail "no admin socket $work/admin.sock after 60 s"
wait_log "up: test hook: reloads have at most 2 sandbox slots" 1
conf 2
out=$(ctl policy reload 2>&1); rc=$?; echo "reload: $out" >&2
check "a replacement with 2 slots is applied" "$rc" 0
check "its sandbox answers" "$(tokens)" 2
wait_until 30 cgroups_at_most test-model 1 || fail "the replaced sandbox was not stopped"
conf 99 "$(model_yaml slow-model $p2 3)"
out=$(ctl policy reload 2>&1); rc=$?; echo "reload: $out" >&2
check "a reload needing more slots than are free is refused" "$rc" 1
echo "$out" | grep -q 'sandbox slots free' && ok "the refusal names the slot limit" || fail "refusal: $out"
check "test-model still answers from its sandbox" "$(tokens)" 2
check "slow-model was not added" "$(chat slow-model)" 404

# 3. The same with test-model unchanged: one slot needed, one free: applied.
conf 2 "$(model_yaml slow-model $p2 3)"
out=$(ctl policy reload 2>&1); rc=$?; echo "reload: $out" >&2
check "a reload adding slow-model in the free slot is applied" "$rc" 0
check "slow-model answers" "$(chat slow-model)" 200

kill -TERM "$CU_PID"
wait "$CU_PID" 2>/dev/null
grep -E 'Sanitizer|runtime error' "$work/custos.log" && fail "sanitizer report in the log"
[ "$fails" -eq 0 ]
