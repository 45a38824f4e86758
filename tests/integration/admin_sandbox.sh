#!/usr/bin/env bash
# Admin API with a sandboxed model: GET /v1/sandboxes reports it (state, generation, limits),
# readiness follows it, POST /v1/sandboxes/ID/restart ends the instance and the supervisor
# starts the next one (generation 2), counted in /metrics and audited; chat works again after.
. "$(dirname "$0")/proxy_lib.bash"

[ "$(id -u)" -eq 0 ] || skip "needs root for the process sandbox in this test"
unshare -Urn true 2>/dev/null || skip "user/network namespaces not available"

make_pki
mport=18000
EXTRA_MODELS="" write_policy "$work/policy.yaml"
NO_DEFAULT_ADMIN=1 write_config "$work/custos.yaml" 1
# Replace the plain-upstream model by a sandboxed one.
perl -0777 -i -pe 's/models:\n  - id: test-model\n    upstream:\n      url: "http:\/\/127.0.0.1:1\/"\n/models:\n  - id: test-model\n    sandbox:\n      type: process\n      profile: fx\n      command: [\/opt\/fx\/model-server, --listen, "127.0.0.1:'"$mport"'", --tokens, "4", --model-id, test-model]\n      env: { ASAN_OPTIONS: "detect_leaks=0" }\n      port: '"$mport"'\n      health: { start_timeout: 20s }\n/' "$work/custos.yaml"
cat >>"$work/custos.yaml" <<CFG
admin:
  socket: $work/admin.sock
sandbox_profiles:
  fx:
    binds:
      - { src: $(dirname "$fixture"), dst: /opt/fx }
    limits: { memory: 1GiB, pids: 64 }
CFG
grep -q 'type: process' "$work/custos.yaml" || { fail "config rewrite"; exit 1; }
"$bin" config check "$work/custos.yaml" >/dev/null 2>&1 || { "$bin" config check "$work/custos.yaml"; fail "config check"; exit 1; }
start_custos "$work/custos.yaml"
C=(curl -sS --cacert "$work/tls/ca.crt" --max-time 20)
url="https://localhost:$PORT/v1/chat/completions"
code=$("${C[@]}" -o "$work/out" -w '%{http_code}' -H "Authorization: Bearer $ALICE" \
	-d '{"model":"test-model","messages":[{"role":"user","content":"inside the sandbox"}]}' "$url")
check "chat with the sandboxed model" "$code" 200
wait_until 60 test -S "$work/admin.sock" || fail "no admin socket $work/admin.sock after 60 s"
ctl() { "$bin" ctl --socket "$work/admin.sock" "$@"; }
C=(curl -sS --cacert "$work/tls/ca.crt" --max-time 20 -o /dev/null -w '%{http_code}')
chat() { "${C[@]}" -H "Authorization: Bearer $ALICE" -d '{"model":"test-model","messages":[{"role":"user","content":"hi"}]}' "https://localhost:$PORT/v1/chat/completions"; }
gen() { ctl sandboxes | sed -n 's/.*"generation":\([0-9]*\).*/\1/p'; }

out=$(ctl sandboxes)
echo "$out" | grep -q '"id":"test-model","state":"running"' && ok "sandbox listed as running" || fail "sandboxes: $out"
echo "$out" | grep -q '"memory_bytes":1073741824,"pids":64' && ok "limits reported" || fail "limits: $out"
check "generation" "$(gen)" 1
check "ready with the sandbox running" "$(ctl ready >/dev/null; echo $?)" 0
check "chat before the restart" "$(chat)" 200
out=$(ctl restart test-model)
echo "$out" | grep -q '"result":"restarting"' && ok "restart accepted" || fail "restart: $out"
# admin contract (docs/ADMIN.md, Endpoints): the 202's documented fields
echo "$out" | grep -Eq '^\{"id":"test-model","result":"restarting","killed_pid":[1-9][0-9]*\}$' &&
	ok "restart 202: id, result, killed_pid" || fail "restart 202 body: $out"
for _ in $(seq 600); do [ "$(gen)" = 2 ] && ctl sandboxes | grep -q '"state":"running"' && break; sleep 0.1; done
check "generation after the restart" "$(gen)" 2
for _ in $(seq 600); do [ "$(chat)" = 200 ] && break; sleep 0.1; done
check "chat after the restart" "$(chat)" 200
ctl metrics | grep -q '^custos_sandbox_restarts_total{sandbox="test-model"} [1-9]' && ok "restart counted in metrics" || fail "restart not counted"
ctl metrics | grep -q '^custos_sandbox_up{sandbox="test-model"} 1$' && ok "sandbox up gauge" || fail "sandbox_up"
check "unknown sandbox" "$(ctl restart nope >/dev/null 2>&1; echo $?)" 1
kill -TERM "$CU_PID"
wait "$CU_PID" 2>/dev/null
audit_grep '"type":"admin.request".*"path":"/v1/sandboxes/test-model/restart".*"status":202' >/dev/null && ok "restart audited" || fail "restart not audited"
grep -E 'Sanitizer|runtime error' "$work/custos.log" && fail "sanitizer report in the log" || ok "no sanitizer report"
[ "$fails" -eq 0 ]
