#!/usr/bin/env bash
# A reload that changes sandboxed models is read twice: by the proxy, then by the supervisor,
# which starts what the file says (docs/SANDBOX.md, "Reload"). custos.yaml replaced in between
# (here held open with the test hook CUSTOS_TEST_SUP_READ_HOLD, Debug builds,
# docs/CONTRIBUTING.md "Test hooks") must not leave the proxy applying one version while the
# supervisor starts the sandboxes of another: the reload is refused whole, saying so, nothing is
# started, the old configuration keeps serving; the next reload applies the file as it is.
. "$(dirname "$0")/proxy_lib.bash"

[ "$(id -u)" -eq 0 ] || skip "needs root for the process sandbox in this test"
unshare -Urn true 2>/dev/null || skip "user/network namespaces not available"
[ "${CUSTOS_TEST_HOOKS:-0}" = 1 ] || skip "custos is built without test hooks (CUSTOS_TEST_HOOKS, on in Debug builds)"

make_pki
p1=18150 p2=18151
write_policy "$work/policy.yaml"
# model_yaml ID PORT TOKENS: one sandboxed model server (the fixture) answering TOKENS tokens.
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
sandbox_conf_template 5s
conf_models "$(model_yaml test-model $p1 4)
"
"$bin" config check "$work/custos.yaml" >/dev/null 2>&1 || { "$bin" config check "$work/custos.yaml"; fail "config check"; exit 1; }
CUSTOS_TEST_SUP_READ_HOLD="$work/go" start_custos "$work/custos.yaml"
wait_until 60 test -S "$work/admin.sock" || fail "no admin socket $work/admin.sock after 60 s"
ctl() { "$bin" ctl --socket "$work/admin.sock" "$@"; }
C=(curl -sS --cacert "$work/tls/ca.crt" --max-time 20)
# chat MODEL [OUT]: the status of one chat completion to MODEL.
chat() { "${C[@]}" -o "${2:-/dev/null}" -w '%{http_code}' -H "Authorization: Bearer $ALICE" -d '{"model":"'"$1"'","messages":[{"role":"user","content":"hi"}]}' "https://localhost:$PORT/v1/chat/completions"; }
tokens() { chat "$1" "$work/one.json" >/dev/null; sed -n 's/.*"completion_tokens":\([0-9]*\).*/\1/p' "$work/one.json"; }
starts() { grep -c 'sandbox started (pid' "$work/custos.log"; }
held() { grep -q 'up: test hook: reload [0-9]*: the supervisor reads .* once' "$work/custos.log"; }

check "test-model before any reload" "$(tokens test-model)" 4
n0=$(starts)

# The proxy reads a file that adds other-model; the supervisor, held, then reads one that
# replaces test-model instead.
conf_models "$(model_yaml test-model $p1 4)
$(model_yaml other-model $p2 5)
"
ctl policy reload >"$work/reload.out" 2>&1 &
RL=$!
wait_until 60 held || fail "the supervisor's reading was not held"
conf_models "$(model_yaml test-model $p1 6)
"
touch "$work/go"
wait "$RL"
rc=$?
out=$(cat "$work/reload.out")
echo "reload: $out" >&2
check "the reload over a replaced file is refused" "$rc" 1
grep -q "changed between the proxy's reading and the supervisor's" <<<"$out" &&
	ok "and says why" || fail "reload answer: $out"
grep -q "changed between the proxy's reading and the supervisor's" "$work/custos.log" &&
	ok "the log says why" || fail "no reason in the log"
check "no sandbox was started for either version" "$(starts)" "$n0"
check "test-model still answers from its old sandbox" "$(tokens test-model)" 4
check "other-model (only in the version the proxy read) is unknown" "$(chat other-model)" 404

# The file as it is now, read by both: applied.
out=$(ctl policy reload 2>&1); rc=$?; echo "reload: $out" >&2
check "the next reload applies the file as it is" "$rc" 0
check "test-model answers from its replacement" "$(tokens test-model)" 6
check "other-model is still unknown" "$(chat other-model)" 404

kill -TERM "$CU_PID"
wait "$CU_PID" 2>/dev/null
grep -E 'Sanitizer|runtime error' "$work/custos.log" && fail "sanitizer report in the log" || ok "no sanitizer report"
[ "$fails" -eq 0 ]
