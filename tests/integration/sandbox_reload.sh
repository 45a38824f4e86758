#!/usr/bin/env bash
# ctest: cost=90 (seconds, about: started first)
# A reload that adds or removes a process-sandboxed model (docs/SANDBOX.md, "Reload"): the
# supervisor starts the added model's sandbox and the reload applies once it answers, while
# the running model keeps answering (all 200); a reload that removes it answers 404 at once,
# then its sandbox is stopped and its cgroup removed; a reload whose new sandbox cannot start
# is refused whole and the previous configuration stays. Each start and stop is audited.
. "$(dirname "$0")/proxy_lib.bash"

[ "$(id -u)" -eq 0 ] || skip "needs root for the process sandbox in this test"
unshare -Urn true 2>/dev/null || skip "user/network namespaces not available"

make_pki
p1=18100 p2=18101
write_policy "$work/policy.yaml"
# model_yaml ID PORT [COMMAND]: one sandboxed model server (the fixture) under models:; its 4
# tokens come 250 ms apart (a request stays in flight for a second).
model_yaml() {
	local cmd=${3:-/opt/fx/model-server} delay=0
	[ "$1" = slow-model ] && delay=250
	cat <<M
  - id: $1
    sandbox:
      type: process
      profile: fx
      command: [$cmd, --listen, "127.0.0.1:$2", --tokens, "4", --delay-ms, "$delay", --model-id, $1]
      env: { ASAN_OPTIONS: "detect_leaks=0" }
      port: $2
      health: { start_timeout: 20s }
M
}
# conf EXTRA: custos.yaml with test-model sandboxed, and EXTRA (more models) after it; the rest
# (listener ports) the same each time.
sandbox_conf_template 2s
conf() {
	conf_models "${FIRST-$(model_yaml test-model $p1)
}$1"
}
conf ""
"$bin" config check "$work/custos.yaml" >/dev/null 2>&1 || { "$bin" config check "$work/custos.yaml"; fail "config check"; exit 1; }
start_custos "$work/custos.yaml"
wait_until 60 test -S "$work/admin.sock" || fail "no admin socket $work/admin.sock after 60 s"
ctl() { "$bin" ctl --socket "$work/admin.sock" "$@"; }
C=(curl -sS --cacert "$work/tls/ca.crt" --max-time 20 -o /dev/null -w '%{http_code}')
chat() { "${C[@]}" -H "Authorization: Bearer $ALICE" -d '{"model":"'"$1"'","messages":[{"role":"user","content":"hi"}]}' "https://localhost:$PORT/v1/chat/completions"; }
# The host pid of MODEL's last audited start.
start_pid() { audit_grep '"type":"sandbox.process".*"model":"'"$1"'".*"action":"start"' | tail -1 | sed -n 's/.*"pid":\([0-9]*\).*/\1/p'; }
answers_slow() { [ "$(chat slow-model)" = 200 ]; }
# MODEL's cgroups made by this test's custos (custos-MODEL-<supervisor pid>-<generation>).
cgroups_of() { find /sys/fs/cgroup -maxdepth 5 -type d -name "custos-$1-$CU_PID-*" 2>/dev/null; }
pid_gone() { ! kill -0 "$1" 2>/dev/null; }
# MODEL's entry in GET /v1/sandboxes up to its limits (empty when it is not listed), and one
# field of it.
sbx_entry() { ctl sandboxes | grep -o '{"id":"'"$1"'",[^}]*'; }
sbx_field() { sbx_entry "$1" | sed -n 's/.*"'"$2"'":\("[^"]*"\|[^,]*\).*/\1/p' | tr -d '"'; }
up_series() { ctl metrics | grep "^custos_sandbox_up{sandbox=\"$1\"}"; }
no_cgroup() { [ -z "$(cgroups_of "$1")" ]; }

check "the first model before any reload" "$(chat test-model)" 200
check "the second model before it is added" "$(chat slow-model)" 404

# Requests to the first model all through the reloads: each code on a line.
: >"$work/loop.codes"
(while [ ! -e "$work/loop.stop" ]; do chat test-model >>"$work/loop.codes"; echo >>"$work/loop.codes"; done) &
loop=$!
wait_until 20 test -s "$work/loop.codes" || fail "the request loop did not start"

# 1. Add slow-model: the reload answers once its sandbox answers.
conf "$(model_yaml slow-model $p2)"
out=$(ctl policy reload 2>&1); rc=$?; echo "reload: $out" >&2
check "reload adding a sandboxed model" "$rc" 0
check "the added model answers right after the reload" "$(chat slow-model)" 200
wait_until 20 audit_grep '"type":"sandbox.process".*"model":"slow-model".*"action":"start"' >/dev/null && ok "its start is audited" || fail "start of slow-model not audited"
pid2=$(start_pid slow-model)
[ -n "$pid2" ] && kill -0 "$pid2" 2>/dev/null && ok "its sandbox runs (pid $pid2)" || fail "no pid for slow-model"
[ -n "$(cgroups_of slow-model)" ] && ok "its cgroup exists" || fail "no cgroup for slow-model"
check "ready with both" "$(ctl ready >/dev/null; echo $?)" 0
# The admin API reads the sandboxes configured now (docs/ADMIN.md): the added one is listed,
# counted by readiness and metrics, and can be restarted.
check "the added sandbox is listed as running" "$(sbx_field slow-model state)" running
check "as a process sandbox" "$(sbx_field slow-model kind)" process
check "with the pid of its audited start" "$(sbx_field slow-model pid)" "$pid2"
ctl ready | grep -q '"sandboxes_ready":true' && ok "sandboxes_ready with both" || fail "ready: $(ctl ready)"
check "its custos_sandbox_up series" "$(up_series slow-model)" 'custos_sandbox_up{sandbox="slow-model"} 1'
out=$(ctl restart slow-model 2>&1); echo "restart: $out" >&2
echo "$out" | grep -q '"result":"restarting"' && ok "restart of the added sandbox accepted" || fail "restart: $out"
echo "$out" | grep -q '"killed_pid":'"$pid2" && ok "it ended pid $pid2" || fail "restart: $out"
restarted() { [ "$(sbx_field slow-model generation)" = 2 ] && [ "$(sbx_field slow-model state)" = running ]; }
wait_until 60 restarted && ok "its next instance runs (generation 2)" || fail "after restart: $(sbx_entry slow-model)"
pid2b=$(sbx_field slow-model pid)
[ -n "$pid2b" ] && [ "$pid2b" -gt 0 ] && [ "$pid2b" != "$pid2" ] && ok "under a new pid ($pid2b)" || fail "pid after restart: '$pid2b'"
wait_until 30 pid_gone "$pid2" && ok "the old instance is gone" || fail "pid $pid2 still runs"
wait_until 60 answers_slow && ok "the restarted model answers" || fail "slow-model after restart: $(chat slow-model)"
pid2=$pid2b

# 2. Remove it while a streamed answer from it is in flight: that one finishes (within
# limits.timeouts.shutdown), new requests get 404 at once, then the sandbox stops and its
# cgroup goes.
curl -sS -N --cacert "$work/tls/ca.crt" --max-time 20 -o "$work/stream.out" -w '%{http_code}' \
	-H "Authorization: Bearer $ALICE" \
	-d '{"model":"slow-model","stream":true,"messages":[{"role":"user","content":"a b c d"}]}' \
	"https://localhost:$PORT/v1/chat/completions" >"$work/stream.code" 2>"$work/stream.err" &
stream=$!
wait_until 20 grep -q '^data: ' "$work/stream.out" || fail "the stream from slow-model did not start"
conf ""
out=$(ctl policy reload 2>&1); rc=$?; echo "reload: $out" >&2
check "reload removing it" "$rc" 0
check "the removed model is unknown at once" "$(chat slow-model)" 404
# Gone from the admin API at once too (its sandbox is stopped after the stream below): not
# listed, no custos_sandbox_up series (docs/ADMIN.md), restart 404, readiness without it.
check "the removed sandbox is not listed" "$(sbx_entry slow-model)" ""
ctl sandboxes | grep -q '"kind":"removed"' && fail "a removed entry: $(ctl sandboxes)" || ok "no removed entry"
check "its custos_sandbox_up series is gone" "$(up_series slow-model)" ""
check "restarting it is refused" "$(ctl restart slow-model >/dev/null 2>&1; echo $?)" 1
ctl sandboxes | grep -q '"id":"test-model","state":"running"' && ok "the first sandbox stays listed" || fail "sandboxes: $(ctl sandboxes)"
wait "$stream"
check "the answer in flight during the removal completed" "$(cat "$work/stream.code")" 200
grep -q '^data: \[DONE\]' "$work/stream.out" && ok "to its end" || fail "stream cut: $(cat "$work/stream.out" "$work/stream.err")"
wait_until 30 pid_gone "$pid2" && ok "its sandbox process is gone" || fail "pid $pid2 still runs"
wait_until 30 no_cgroup slow-model && ok "its cgroup is gone" || fail "cgroup left: $(cgroups_of slow-model)"
check "still ready" "$(ctl ready >/dev/null; echo $?)" 0
ctl sandboxes | grep -q '"id":"test-model","state":"running"' && ok "the first sandbox is listed as running" || fail "sandboxes: $(ctl sandboxes)"
wait_until 20 audit_grep '"type":"sandbox.process".*"model":"slow-model".*"action":"stop"' >/dev/null && ok "its stop is audited" || fail "stop of slow-model not audited"

# 3. A new sandbox that cannot start: the reload is refused whole, the old state stays.
conf "$(model_yaml slow-model $p2 /opt/fx/no-such-server)"
out=$(ctl policy reload 2>&1); rc=$?; echo "reload: $out" >&2
check "reload whose new sandbox cannot start is refused" "$rc" 1
echo "$out" | grep -q 'slow-model' && ok "the refusal names the model ($out)" || fail "refusal: $out"
check "the model it would add is still unknown" "$(chat slow-model)" 404
wait_until 30 no_cgroup slow-model && ok "no cgroup left by the refused start" || fail "cgroup left: $(cgroups_of slow-model)"
wait_until 30 audit_grep '"type":"policy.reload".*"outcome":"refused"' >/dev/null && ok "the refusal is audited" || fail "refusal not audited"

# 3b. A reload the supervisor prepared (the sandbox started) but the proxy refuses (a listener
# moved): the new sandbox is stopped again and the old state stays.
starts() { audit_grep '"type":"sandbox.process".*"model":"slow-model".*"action":"'"$1"'"' | grep -c .; }
# evaluated on each try of wait_until (a "$(...)" argument would be expanded once)
starts_above() { [ "$(starts "$1")" -gt "$2" ]; }
n_start=$(starts start) n_stop=$(starts stop)
conf "$(model_yaml slow-model $p2)"
sed -i "s/127.0.0.1:$PORT2\"/127.0.0.1:$(free_port)\"/" "$work/custos.yaml"
out=$(ctl policy reload 2>&1); rc=$?; echo "reload: $out" >&2
check "reload adding a model and moving a listener is refused" "$rc" 1
echo "$out" | grep -q "listener 2's address changed" && ok "naming the listener" || fail "refusal: $out"
check "the model it would add is unknown" "$(chat slow-model)" 404
wait_until 20 starts_above start "$n_start" && ok "the supervisor started its sandbox" || fail "no start audited"
wait_until 30 no_cgroup slow-model && ok "and stopped it again: no cgroup left" || fail "cgroup left: $(cgroups_of slow-model)"
wait_until 20 starts_above stop "$n_stop" && ok "its stop is audited" || fail "no stop audited"
check "the first model still answers" "$(chat test-model)" 200
check "the refused add is not listed" "$(sbx_entry slow-model)" ""

# 4. And the same model added properly afterwards (a slot after refused ones), by SIGHUP.
conf "$(model_yaml slow-model $p2)"
kill -HUP "$CU_PID"
answers() { [ "$(chat slow-model)" = 200 ]; }
wait_until 60 answers && ok "SIGHUP adding it again: it answers" || fail "slow-model after SIGHUP: $(chat slow-model)"
wait_log "up: reload applied: 1 sandboxes added" 2
check "listed again once added again" "$(sbx_field slow-model state)" running
ctl ready | grep -q '"sandboxes_ready":true' && ok "sandboxes_ready after adding it again" || fail "ready: $(ctl ready)"

touch "$work/loop.stop"
wait "$loop" 2>/dev/null
total=$(grep -c . "$work/loop.codes")
bad=$(grep -v '^200$' "$work/loop.codes" | grep -c .)
[ "$total" -gt 0 ] && [ "$bad" -eq 0 ] && ok "the first model answered all $total requests during the reloads with 200" || fail "first model: $bad of $total requests not 200: $(sort "$work/loop.codes" | uniq -c | tr '\n' ' ')"
check "chat with the first model after" "$(chat test-model)" 200

# 5. Remove the sandbox custos started with: it leaves the admin API at once (no entry, no
# custos_sandbox_up series, readiness counts slow-model alone), then it is stopped.
pid1=$(sbx_field test-model pid)
FIRST= conf "$(model_yaml slow-model $p2)"
out=$(ctl policy reload 2>&1); rc=$?; echo "reload: $out" >&2
check "reload removing the first model" "$rc" 0
check "the first model is unknown" "$(chat test-model)" 404
check "its sandbox is not listed" "$(sbx_entry test-model)" ""
ctl sandboxes | grep -q '"kind":"removed"' && fail "a removed entry: $(ctl sandboxes)" || ok "no removed entry"
check "its custos_sandbox_up series is gone" "$(up_series test-model)" ""
check "slow-model is listed as running" "$(sbx_field slow-model state)" running
ctl ready | grep -q '"sandboxes_ready":true' && ok "sandboxes_ready with slow-model alone" || fail "ready: $(ctl ready)"
[ -n "$pid1" ] && wait_until 30 pid_gone "$pid1" && ok "its process is gone" || fail "first model's pid '$pid1'"

kill -TERM "$CU_PID"
wait "$CU_PID" 2>/dev/null
grep -E 'Sanitizer|runtime error' "$work/custos.log" && fail "sanitizer report in the log" || ok "no sanitizer report"
[ "$fails" -eq 0 ]
