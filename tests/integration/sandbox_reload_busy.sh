#!/usr/bin/env bash
# A reload does not wait for the sandboxes an earlier reload removed and still drains
# (docs/SANDBOX.md, "Reload", step 4): with a 60 s shutdown timeout, a stream in flight to a
# removed model (a 100 s answer) keeps its sandbox running, and a second reload that adds a
# model meanwhile is applied while it still runs (waited for with a bound of 30 s, well below
# the shutdown timeout that an earlier reload's drain would hold it for). Once the stream's
# client goes, the removed sandbox is stopped as before.
. "$(dirname "$0")/proxy_lib.bash"

[ "$(id -u)" -eq 0 ] || skip "needs root for the process sandbox in this test"
unshare -Urn true 2>/dev/null || skip "user/network namespaces not available"

make_pki
p1=18140 p2=18141 p3=18142
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
# conf [EXTRA]: test-model, and EXTRA (more models) after it.
conf() {
	conf_models "$(model_yaml test-model $p1 4)
${1-}"
}
conf "$(model_yaml slow-model $p2 400)"
"$bin" config check "$work/custos.yaml" >/dev/null 2>&1 || { "$bin" config check "$work/custos.yaml"; fail "config check"; exit 1; }
grep -q 'shutdown: 60s' "$work/custos.yaml" || fail "the shutdown timeout is not 60 s"
start_custos "$work/custos.yaml"
wait_until 60 test -S "$work/admin.sock" || fail "no admin socket $work/admin.sock after 60 s"
ctl() { "$bin" ctl --socket "$work/admin.sock" "$@"; }
C=(curl -sS --cacert "$work/tls/ca.crt" --max-time 30)
chat() { "${C[@]}" -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $ALICE" -d '{"model":"'"$1"'","messages":[{"role":"user","content":"hi"}]}' "https://localhost:$PORT/v1/chat/completions"; }
answers() { [ "$(chat "$1")" = 200 ]; }
sbx_pid() { ctl sandboxes | grep -o '{"id":"'"$1"'",[^}]*' | sed -n 's/.*"pid":\([0-9]*\).*/\1/p'; }
cgroups() { find /sys/fs/cgroup -maxdepth 5 -type d -name "custos-$1-$CU_PID-*" -printf '%f\n' 2>/dev/null | sort -u | grep -c .; }
cgroups_at_most() { [ "$(cgroups "$1")" -le "$2" ]; }
# Well below the 60 s shutdown timeout.
BOUND=30

check "test-model before any reload" "$(chat test-model)" 200
slow_pid=$(sbx_pid slow-model)
[ -n "$slow_pid" ] && kill -0 "$slow_pid" 2>/dev/null && ok "slow-model's sandbox runs (pid $slow_pid)" || fail "pid of slow-model: '$slow_pid'"

# 1. A stream from slow-model (400 tokens, 100 s) in flight while a reload removes it.
curl -sS -N --cacert "$work/tls/ca.crt" --max-time 300 -o "$work/stream.out" \
	-H "Authorization: Bearer $ALICE" \
	-d '{"model":"slow-model","stream":true,"messages":[{"role":"user","content":"a b c d"}]}' \
	"https://localhost:$PORT/v1/chat/completions" 2>"$work/stream.err" &
stream=$!
pids+=("$stream")
wait_until 20 grep -q '^data: ' "$work/stream.out" || fail "the stream from slow-model did not start"
conf
out=$(ctl policy reload 2>&1); rc=$?; echo "reload: $out" >&2
check "reload removing slow-model" "$rc" 0
check "the removed model is unknown at once" "$(chat slow-model)" 404

# 2. A reload adding down-model while slow-model still drains: applied within the bound.
conf "$(model_yaml down-model $p3 4)"
(ctl policy reload >"$work/reload2.out" 2>&1; echo $? >"$work/reload2.rc") &
wait_until $BOUND answers down-model && ok "the model the second reload adds answers within $BOUND s" || fail "down-model not routed to after $BOUND s: $(cat "$work/reload2.out" 2>/dev/null)"
wait_until $BOUND test -s "$work/reload2.rc" || fail "the second reload did not end in $BOUND s"
check "the second reload is applied" "$(cat "$work/reload2.rc" 2>/dev/null)" 0
grep -q '^data: \[DONE\]' "$work/stream.out" && fail "the stream ended already: this checked nothing" || ok "the stream to the removed model is still in flight"
kill -0 "$slow_pid" 2>/dev/null && ok "and its sandbox still runs" || fail "slow-model's sandbox (pid $slow_pid) was stopped with its stream in flight"
ctl sandboxes | grep -q '"id":"down-model"' && ok "down-model is listed" || fail "sandboxes: $(ctl sandboxes)"
ctl sandboxes | grep -q '"id":"slow-model"' && fail "slow-model still listed" || ok "slow-model is not listed"
check "test-model still answers" "$(chat test-model)" 200

# 3. The stream's client goes: the removed sandbox is stopped then, as before.
kill -TERM "$stream" 2>/dev/null
wait "$stream" 2>/dev/null
wait_until $BOUND cgroups_at_most slow-model 0 && ok "slow-model's cgroup is gone once its stream ended" || fail "slow-model's cgroup still there after $BOUND s"
wait_log "up: model slow-model: no request in flight to its removed sandbox" 1
check "down-model still answers" "$(chat down-model)" 200

kill -TERM "$CU_PID"
wait "$CU_PID" 2>/dev/null
grep -E 'Sanitizer|runtime error' "$work/custos.log" && fail "sanitizer report in the log" || ok "no sanitizer report"
[ "$fails" -eq 0 ]
