#!/usr/bin/env bash
# The policy `client` condition through the real binary: on a PROXY protocol listener (trusting
# 127.0.0.1), a chat from 10.1.2.3 (the client the header names) is allowed by the rule whose
# range holds it, one from 203.0.113.7 is denied 403 by the deny rule on its range and audited
# with that rule, one from 198.51.100.1 falls to the default deny; on a plain listener without
# the header the socket peer (127.0.0.1) is the client; on a Unix socket listener there is no
# address, so no client rule holds (the allow fails closed, the deny does not fire). POST
# /v1/decide takes a `client` field and answers the same; so do `policy explain` (which names
# the range that held) and `policy test`.
. "$(dirname "$0")/proxy_lib.bash"
command -v python3 >/dev/null || skip "python3 not installed"
client="$(dirname "$0")/proxy_protocol_client.py"

make_pki
start_fixture model --tokens 4
cat >"$work/policy.yaml" <<POL
version: 1
principals:
  alice: { match: { api_key_sha256: "$(sha256hex $ALICE)" } }
models:
  test-model: { isolation: none }
rules:
  - id: chat-from-corp
    effect: allow
    when:
      direction: ingress
      principal: alice
      route: "POST /v1/chat/completions"
      model: test-model
      client: [10.0.0.0/8, 127.0.0.1/32]
  - id: block-doc-net
    effect: deny
    when: { direction: ingress, client: 203.0.113.0/24 }
POL
chmod 644 "$work/policy.yaml"
P3=$(free_port)
AUTH_YAML="    proxy_protocol: true
    proxy_protocol_from: [127.0.0.1/32]
  - id: direct
    address: \"127.0.0.1:$P3\"
  - id: local
    address: \"unix:$work/ingress.sock\"" WORKERS=1 write_config "$work/custos.yaml" "$FX_PORT"
start_custos "$work/custos.yaml"

pc() { timeout 60 python3 "$client" --token "$ALICE" --chat test-model "$@"; }
ev() { audit_grep '"type":"http.request"'; }
rej() { audit_grep '"type":"http.reject"'; }
chat='{"model":"test-model","messages":[{"role":"user","content":"hi"}],"max_tokens":4}'

check "10.1.2.3 (PROXY v1) is in 10.0.0.0/8: allowed" "$(pc --port "$PORT2" --v1 'TCP4 10.1.2.3 192.0.2.1 4242 80')" 200
check "203.0.113.7 (PROXY v1) is in the blocked range: 403" "$(pc --port "$PORT2" --v1 'TCP4 203.0.113.7 192.0.2.1 4243 80')" 403
check "198.51.100.1 (PROXY v2) is in no range: 403" "$(pc --port "$PORT2" --v2 '198.51.100.1 192.0.2.1 4244 80')" 403
check "::ffff:10.9.9.9 (PROXY v2, IPv4-mapped) is in 10.0.0.0/8: allowed" "$(pc --port "$PORT2" --v2 '::ffff:10.9.9.9 ::1 4245 80')" 200
wait_until 30 eval 'rej | grep "\"remote\":\"203.0.113.7:4243\"" | grep "\"status\":403" | grep -q "\"rules\":\"block-doc-net\""' &&
	ok "the deny is audited with the rule and the client" || fail "no http.reject naming block-doc-net for 203.0.113.7: $(rej | tail -3)"
wait_until 30 eval 'ev | grep "\"remote\":\"10.1.2.3:4242\"" | grep -q "\"rules\":\"chat-from-corp\""' &&
	ok "the allow is audited with the rule" || fail "no event naming chat-from-corp for 10.1.2.3: $(ev | tail -3)"

code=$(curl -sS --max-time 30 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $ALICE" \
	-H 'Content-Type: application/json' -d "$chat" "http://127.0.0.1:$P3/v1/chat/completions")
check "no PROXY header: the socket peer 127.0.0.1 is the client (allowed)" "$code" 200
code=$(curl -sS --max-time 30 -o /dev/null -w '%{http_code}' --unix-socket "$work/ingress.sock" \
	-H "Authorization: Bearer $ALICE" -H 'Content-Type: application/json' -d "$chat" \
	"http://localhost/v1/chat/completions")
check "Unix socket: no address, no client rule holds (default deny)" "$code" 403

decide() {
	curl -sS --max-time 30 --unix-socket "$work/admin.sock" -H 'Content-Type: application/json' \
		-d "$1" http://admin/v1/decide
}
ctx='{"direction":"ingress","principal":"alice","model":"test-model","route":"POST /v1/chat/completions"'
out=$(decide "$ctx,\"client\":\"10.1.2.3\"}")
echo "$out" | grep -q '"allow":true' && echo "$out" | grep -q '"rules":\["chat-from-corp"\]' &&
	ok "decide: client 10.1.2.3 allowed by chat-from-corp" || fail "decide 10.1.2.3: $out"
out=$(decide "$ctx,\"client\":\"203.0.113.7\"}")
echo "$out" | grep -q '"allow":false' && echo "$out" | grep -q '"rules":\["block-doc-net"\]' &&
	ok "decide: client 203.0.113.7 denied by block-doc-net" || fail "decide 203.0.113.7: $out"
out=$(decide "$ctx}")
echo "$out" | grep -q '"allow":false' && echo "$out" | grep -q '"default_deny":true' &&
	ok "decide: no client, default deny" || fail "decide without client: $out"
out=$(decide "$ctx,\"client\":\"10.0.0.0/8\"}")
echo "$out" | grep -q "is not an IPv4 or IPv6 address" &&
	ok "decide: a range as the client is an error" || fail "decide with a range: $out"

# policy explain and policy test read `client` from the request too.
out=$("$bin" policy explain "$work/policy.yaml" --request "$ctx,\"client\":\"::ffff:10.1.2.3\"}" 2>&1)
echo "$out" | grep -q 'client=::ffff:10.1.2.3$' &&
	echo "$out" | grep -q 'chat-from-corp (.*): all conditions hold (client ::ffff:10.1.2.3 is in 10.0.0.0/8) => MATCH' &&
	echo "$out" | grep -q "block-doc-net (.*): client ::ffff:10.1.2.3 is in none of the rule's client ranges => no match" &&
	ok "explain shows which client range held, and which did not" || fail "explain: $out"
cat >"$work/tests.yaml" <<'T'
cases:
  - name: corp client allowed
    request: { direction: ingress, principal: alice, model: test-model, route: "POST /v1/chat/completions", client: 10.1.2.3 }
    expect: allow
    rules: [chat-from-corp]
  - name: blocked client denied by the rule
    request: { direction: ingress, principal: alice, model: test-model, route: "POST /v1/chat/completions", client: "203.0.113.7" }
    expect: deny
    rules: [block-doc-net]
T
out=$("$bin" policy test "$work/policy.yaml" "$work/tests.yaml" 2>&1)
check "policy test with client addresses" "$out" "2 passed, 0 failed"

[ "$fails" -eq 0 ] || exit 1
echo "all policy client checks passed"
