#!/usr/bin/env bash
# A sandboxed model through `custos up`: the model-server TEST FIXTURE runs in a process
# sandbox (own network namespace with loopback only); custos reaches it through a socket made
# inside that namespace, with no port on the host. A chat completion and a stream go through;
# the host cannot reach the model's port directly.
. "$(dirname "$0")/proxy_lib.bash"

[ "$(id -u)" -eq 0 ] || skip "needs root for the process sandbox in this test"
unshare -Urn true 2>/dev/null || skip "user/network namespaces not available"

make_pki
mport=18000
EXTRA_MODELS="" write_policy "$work/policy.yaml"
write_config "$work/custos.yaml" 1
# Replace the plain-upstream model by a sandboxed one.
perl -0777 -i -pe 's/models:\n  - id: test-model\n    upstream:\n      url: "http:\/\/127.0.0.1:1\/"\n/models:\n  - id: test-model\n    sandbox:\n      type: process\n      profile: fx\n      command: [\/opt\/fx\/model-server, --listen, "127.0.0.1:'"$mport"'", --tokens, "4", --model-id, test-model]\n      env: { ASAN_OPTIONS: "detect_leaks=0" }\n      port: '"$mport"'\n      health: { start_timeout: 20s }\n/' "$work/custos.yaml"
cat >>"$work/custos.yaml" <<CFG
sandbox_profiles:
  fx:
    binds:
      - { src: $(dirname "$fixture"), dst: /opt/fx }
    limits: { memory: 1GiB, pids: 64 }
CFG
grep -q 'type: process' "$work/custos.yaml" || { fail "config rewrite"; exit 1; }
"$bin" config check "$work/custos.yaml" >/dev/null 2>&1 || { "$bin" config check "$work/custos.yaml"; fail "config check"; exit 1; }
# custos' own stdin is a file here (a background job's would be /dev/null already): the
# model server must not get it.
echo marker >"$work/stdin"
CUSTOS_STDIN="$work/stdin" start_custos "$work/custos.yaml"
C=(curl -sS --cacert "$work/tls/ca.crt" --max-time 20)
url="https://localhost:$PORT/v1/chat/completions"
code=$("${C[@]}" -o "$work/out" -w '%{http_code}' -H "Authorization: Bearer $ALICE" \
	-d '{"model":"test-model","messages":[{"role":"user","content":"inside the sandbox"}]}' "$url")
check "chat with the sandboxed model" "$code" 200
grep -q 'inside the sandbox' "$work/out" && ok "reply came from the sandboxed model" || fail "unexpected reply: $(cat "$work/out")"
"${C[@]}" -N -o "$work/sse" -H "Authorization: Bearer $ALICE" \
	-d '{"model":"test-model","stream":true,"messages":[{"role":"user","content":"x y"}]}' "$url"
grep -q '^data: \[DONE\]' "$work/sse" && ok "stream from the sandboxed model" || fail "stream failed"
if (exec 3<>"/dev/tcp/127.0.0.1/$mport") 2>/dev/null; then
	fail "the model's port is reachable from the host"
else
	ok "the model's port is not reachable from the host network namespace"
fi
grep -q 'sandbox started' "$work/custos.log" && ok "sandbox start logged"
# The model server's stdin is /dev/null, not whatever custos was started with (a terminal).
mpid=$(pgrep -f -n "model-server --listen 127.0.0.1:$mport")
if [ -n "$mpid" ]; then
	check "the model server's stdin" "$(readlink "/proc/$mpid/fd/0")" /dev/null
else
	fail "model server process not found"
fi
[ "$fails" -eq 0 ]
