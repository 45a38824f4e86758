#!/usr/bin/env bash
# A sandbox that a reload removes or replaces is stopped as soon as the proxy has no request in
# flight to it any more, not at the end of limits.timeouts.shutdown (docs/SANDBOX.md, "Reload",
# step 4): with a 60 s shutdown timeout, an answer streamed from a removed sandbox still
# completes, then that sandbox is stopped (audited, cgroup removed) long before 60 s; a removed
# or replaced sandbox with nothing in flight is stopped at once.
. "$(dirname "$0")/proxy_lib.bash"

[ "$(id -u)" -eq 0 ] || skip "needs root for the process sandbox in this test"
unshare -Urn true 2>/dev/null || skip "user/network namespaces not available"

make_pki
p1=18120 p2=18121
write_policy "$work/policy.yaml"
# model_yaml ID PORT TOKENS: one sandboxed model server (the fixture); streamed tokens come
# 250 ms apart.
model_yaml() {
	cat <<M
  - id: $1
    sandbox:
      type: process
      profile: fx
      command: [/opt/fx/model-server, --listen, "127.0.0.1:$2", --tokens, "$3", --delay-ms, "250", --model-id, $1]
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
conf 4 "$(model_yaml slow-model $p2 8)"
"$bin" config check "$work/custos.yaml" >/dev/null 2>&1 || { "$bin" config check "$work/custos.yaml"; fail "config check"; exit 1; }
grep -q 'shutdown: 60s' "$work/custos.yaml" || fail "the shutdown timeout is not 60 s"
start_custos "$work/custos.yaml"
wait_until 60 test -S "$work/admin.sock" || fail "no admin socket $work/admin.sock after 60 s"
ctl() { "$bin" ctl --socket "$work/admin.sock" "$@"; }
C=(curl -sS --cacert "$work/tls/ca.crt" --max-time 30)
chat() { "${C[@]}" -o "${2:-/dev/null}" -w '%{http_code}' -H "Authorization: Bearer $ALICE" -d '{"model":"'"$1"'","messages":[{"role":"user","content":"hi"}]}' "https://localhost:$PORT/v1/chat/completions"; }
tokens() { chat test-model "$work/one.json" >/dev/null; sed -n 's/.*"completion_tokens":\([0-9]*\).*/\1/p' "$work/one.json"; }
stops() { audit_grep '"type":"sandbox.process".*"model":"'"$1"'".*"action":"stop"' | grep -c .; }
# MODEL's cgroups made by this test's custos (custos-MODEL-<supervisor pid>-<generation>).
cgroups() { find /sys/fs/cgroup -maxdepth 5 -type d -name "custos-$1-$CU_PID-*" -printf '%f\n' 2>/dev/null | sort -u | grep -c .; }
# Conditions for wait_until, evaluated on each try.
cgroups_at_most() { [ "$(cgroups "$1")" -le "$2" ]; }
stops_above() { [ "$(stops "$1")" -gt "$2" ]; }
# Well below the 60 s shutdown timeout: a stop that waits for it cannot pass.
BOUND=30

check "test-model before any reload" "$(chat test-model)" 200
check "slow-model before any reload" "$(chat slow-model)" 200

# 1. Remove slow-model while an answer streamed from it (8 tokens, 2 s) is in flight: that one
# completes, and its sandbox stops right after it, not 60 s after the reload.
curl -sS -N --cacert "$work/tls/ca.crt" --max-time 30 -o "$work/stream.out" -w '%{http_code}' \
	-H "Authorization: Bearer $ALICE" \
	-d '{"model":"slow-model","stream":true,"messages":[{"role":"user","content":"a b c d"}]}' \
	"https://localhost:$PORT/v1/chat/completions" >"$work/stream.code" 2>"$work/stream.err" &
stream=$!
wait_until 20 grep -q '^data: ' "$work/stream.out" || fail "the stream from slow-model did not start"
n_stop=$(stops slow-model)
conf 4
out=$(ctl policy reload 2>&1); rc=$?; echo "reload: $out" >&2
check "reload removing slow-model" "$rc" 0
check "the removed model is unknown at once" "$(chat slow-model)" 404
wait "$stream"
check "the answer in flight during the removal completed" "$(cat "$work/stream.code")" 200
grep -q '^data: \[DONE\]' "$work/stream.out" && ok "to its end" || fail "stream cut: $(cat "$work/stream.out" "$work/stream.err")"
check "with all its 8 tokens" "$(grep -o '"completion_tokens":[0-9]*' "$work/stream.out")" '"completion_tokens":8'
wait_until $BOUND cgroups_at_most slow-model 0 && ok "its cgroup is gone once the stream ended (within $BOUND s of a 60 s shutdown timeout)" || fail "slow-model's cgroup still there after $BOUND s"
wait_until $BOUND stops_above slow-model "$n_stop" && ok "its stop is audited" || fail "stop of slow-model not audited"
wait_log "up: model slow-model: no request in flight to its removed sandbox" 1
check "test-model still answers" "$(chat test-model)" 200

# 2. Add it back, then remove it with nothing in flight: stopped at once.
conf 4 "$(model_yaml slow-model $p2 8)"
out=$(ctl policy reload 2>&1); rc=$?; echo "reload: $out" >&2
check "reload adding slow-model back" "$rc" 0
check "it answers" "$(chat slow-model)" 200
n_stop=$(stops slow-model)
conf 4
out=$(ctl policy reload 2>&1); rc=$?; echo "reload: $out" >&2
check "reload removing it again" "$rc" 0
wait_until $BOUND cgroups_at_most slow-model 0 && ok "removed with nothing in flight: its cgroup is gone within $BOUND s" || fail "slow-model's cgroup still there after $BOUND s"
wait_until $BOUND stops_above slow-model "$n_stop" && ok "its stop is audited" || fail "stop of slow-model not audited"

# 3. Replace test-model's sandbox (4 -> 6 tokens) with nothing in flight: the old one stops at
# once, the new one serves.
n_stop=$(stops test-model)
conf 6
out=$(ctl policy reload 2>&1); rc=$?; echo "reload: $out" >&2
check "reload changing test-model" "$rc" 0
check "answers come from the new sandbox (6 tokens)" "$(tokens)" 6
wait_until $BOUND stops_above test-model "$n_stop" && ok "the old sandbox's stop is audited within $BOUND s" || fail "the replaced sandbox was not stopped in $BOUND s"
wait_until $BOUND cgroups_at_most test-model 1 && ok "one test-model cgroup left" || fail "cgroups: $(cgroups test-model)"
check "the new sandbox still answers" "$(tokens)" 6

kill -TERM "$CU_PID"
wait "$CU_PID" 2>/dev/null
grep -E 'Sanitizer|runtime error' "$work/custos.log" && fail "sanitizer report in the log" || ok "no sanitizer report"
[ "$fails" -eq 0 ]
