#!/usr/bin/env bash
# A reload that changes a process-sandboxed model that stays (docs/SANDBOX.md, "Reload"): its
# sandbox is replaced. The new one starts beside the old one (the same port, in its own netns)
# while the old one keeps serving (a request loop: all 200), new requests then go to the new
# one (the new --tokens shows), an answer streamed from the old one finishes, and the old one
# is stopped (audited). A change whose new sandbox cannot start is refused whole: the old one
# keeps serving untouched.
. "$(dirname "$0")/proxy_lib.bash"

[ "$(id -u)" -eq 0 ] || skip "needs root for the process sandbox in this test"
unshare -Urn true 2>/dev/null || skip "user/network namespaces not available"

make_pki
p1=18110
write_policy "$work/policy.yaml"
# model_yaml TOKENS [COMMAND]: test-model sandboxed (the fixture); its tokens come 250 ms apart
# when streamed (a stream of 4 stays in flight for a second).
model_yaml() {
	cat <<M
  - id: test-model
    sandbox:
      type: process
      profile: fx
      command: [${2:-/opt/fx/model-server}, --listen, "127.0.0.1:$p1", --tokens, "$1", --delay-ms, "250", --model-id, test-model]
      env: { ASAN_OPTIONS: "detect_leaks=0" }
      port: $p1
      health: { start_timeout: 20s }
M
}
sandbox_conf_template 5s
conf() {
	conf_models "$(model_yaml "$@")
"
}
conf 4
"$bin" config check "$work/custos.yaml" >/dev/null 2>&1 || { "$bin" config check "$work/custos.yaml"; fail "config check"; exit 1; }
start_custos "$work/custos.yaml"
wait_until 60 test -S "$work/admin.sock" || fail "no admin socket $work/admin.sock after 60 s"
ctl() { "$bin" ctl --socket "$work/admin.sock" "$@"; }
C=(curl -sS --cacert "$work/tls/ca.crt" --max-time 20)
# chat [OUT]: the status code of one non-streamed request; its body in OUT (or nowhere).
chat() { "${C[@]}" -o "${1:-/dev/null}" -w '%{http_code}' -H "Authorization: Bearer $ALICE" -d '{"model":"test-model","messages":[{"role":"user","content":"hi"}]}' "https://localhost:$PORT/v1/chat/completions"; }
# The completion tokens of one answer: the --tokens of the sandbox that gave it.
tokens() { chat "$work/one.json" >/dev/null; sed -n 's/.*"completion_tokens":\([0-9]*\).*/\1/p' "$work/one.json"; }
starts() { audit_grep '"type":"sandbox.process".*"model":"test-model".*"action":"'"$1"'"' | grep -c .; }
sbx_entry() { ctl sandboxes | grep -o '{"id":"test-model",[^}]*'; }
sbx_field() { sbx_entry | sed -n 's/.*"'"$1"'":\("[^"]*"\|[^,]*\).*/\1/p' | tr -d '"'; }
# How many sandboxes of test-model have a cgroup (v1: a directory per controller, one name);
# only this custos' (custos-MODEL-<supervisor pid>-<generation>): other tests have test-models.
cgroups() { find /sys/fs/cgroup -maxdepth 5 -type d -name "custos-test-model-$CU_PID-*" -printf '%f\n' 2>/dev/null | sort -u | grep -c .; }
# Conditions for wait_until, evaluated on each try (a "$(...)" argument would be expanded once).
cgroups_at_most() { [ "$(cgroups)" -le "$1" ]; }
starts_above() { [ "$(starts "$1")" -gt "$2" ]; }
pid_gone() { ! kill -0 "$1" 2>/dev/null; }

check "test-model before any reload" "$(chat)" 200
check "its answers have 4 tokens" "$(tokens)" 4
pid1=$(sbx_field pid)
[ -n "$pid1" ] && kill -0 "$pid1" 2>/dev/null && ok "its sandbox runs (pid $pid1)" || fail "pid of test-model: '$pid1'"
n_start=$(starts start) n_stop=$(starts stop)

# Requests all through the reloads: each code on a line.
: >"$work/loop.codes"
(while [ ! -e "$work/loop.stop" ]; do chat >>"$work/loop.codes"; echo >>"$work/loop.codes"; done) &
loop=$!
wait_until 20 test -s "$work/loop.codes" || fail "the request loop did not start"

# 1. --tokens 4 -> 6 while a streamed answer from the old sandbox is in flight.
curl -sS -N --cacert "$work/tls/ca.crt" --max-time 30 -o "$work/stream.out" -w '%{http_code}' \
	-H "Authorization: Bearer $ALICE" \
	-d '{"model":"test-model","stream":true,"messages":[{"role":"user","content":"a b c d"}]}' \
	"https://localhost:$PORT/v1/chat/completions" >"$work/stream.code" 2>"$work/stream.err" &
stream=$!
wait_until 20 grep -q '^data: ' "$work/stream.out" || fail "the stream from the old sandbox did not start"
conf 6
out=$(ctl policy reload 2>&1); rc=$?; echo "reload: $out" >&2
check "reload changing the model's command" "$rc" 0
check "answers right after the reload come from the new sandbox (6 tokens)" "$(tokens)" 6
pid2=$(sbx_field pid)
[ -n "$pid2" ] && [ "$pid2" != "$pid1" ] && kill -0 "$pid2" 2>/dev/null && ok "the listed sandbox is the new one (pid $pid2)" || fail "pid after reload: '$pid2' (old $pid1)"
check "listed as running" "$(sbx_field state)" running
ctl ready | grep -q '"sandboxes_ready":true' && ok "ready after the change" || fail "ready: $(ctl ready)"
ctl metrics | grep -q '^custos_sandbox_up{sandbox="test-model"} 1$' && ok "one custos_sandbox_up series at 1" || fail "metrics: $(ctl metrics | grep custos_sandbox_up)"
check "one custos_sandbox_up series" "$(ctl metrics | grep -c '^custos_sandbox_up{sandbox="test-model"}')" 1
wait "$stream"
check "the answer streamed from the old sandbox completed" "$(cat "$work/stream.code")" 200
grep -q '^data: \[DONE\]' "$work/stream.out" && ok "to its end" || fail "stream cut: $(cat "$work/stream.out" "$work/stream.err")"
check "with the old sandbox's 4 tokens" "$(grep -o '"completion_tokens":[0-9]*' "$work/stream.out")" '"completion_tokens":4'
wait_until 30 pid_gone "$pid1" && ok "the old sandbox's process is gone" || fail "pid $pid1 still runs"
wait_until 30 cgroups_at_most 1 && ok "one cgroup left" || fail "cgroups: $(cgroups)"
wait_until 20 starts_above stop "$n_stop" && ok "the old one's stop is audited" || fail "no stop audited"
check "the new one's start is audited" "$(starts start)" $((n_start + 1))
audit_grep '"type":"sandbox.process".*"model":"test-model".*"action":"start".*"pid":'"$pid2"'[,}]' >/dev/null && ok "with its pid $pid2" || fail "start of pid $pid2 not audited"
wait_log "up: reload: model test-model changed: starting its new sandbox beside the old one" 1

# 2. A change whose new sandbox cannot start: refused whole, the sandbox serving stays.
n_start=$(starts start) n_stop=$(starts stop)
conf 8 /opt/fx/no-such-server
out=$(ctl policy reload 2>&1); rc=$?; echo "reload: $out" >&2
check "reload whose new sandbox cannot start is refused" "$rc" 1
echo "$out" | grep -q 'test-model' && ok "the refusal names the model ($out)" || fail "refusal: $out"
check "the model still answers with 6 tokens" "$(tokens)" 6
check "from the same sandbox" "$(sbx_field pid)" "$pid2"
kill -0 "$pid2" 2>/dev/null && ok "which still runs" || fail "pid $pid2 is gone"
wait_until 30 cgroups_at_most 1 && ok "no cgroup left by the refused start" || fail "cgroups: $(cgroups)"
wait_until 30 audit_grep '"type":"policy.reload".*"outcome":"refused"' >/dev/null && ok "the refusal is audited" || fail "refusal not audited"
check "the refused reload stopped no running sandbox" "$(audit_grep '"type":"sandbox.process".*"model":"test-model".*"action":"stop".*"pid":'"$pid2"'[,}]' | grep -c .)" 0

touch "$work/loop.stop"
wait "$loop" 2>/dev/null
total=$(grep -c . "$work/loop.codes")
bad=$(grep -v '^200$' "$work/loop.codes" | grep -c .)
[ "$total" -gt 0 ] && [ "$bad" -eq 0 ] && ok "the model answered all $total requests during the reloads with 200" || fail "$bad of $total requests not 200: $(sort "$work/loop.codes" | uniq -c | tr '\n' ' ')"

kill -TERM "$CU_PID"
wait "$CU_PID" 2>/dev/null
grep -E 'Sanitizer|runtime error' "$work/custos.log" && fail "sanitizer report in the log" || ok "no sanitizer report"
[ "$fails" -eq 0 ]
