#!/usr/bin/env bash
# The policy's hard edges through the real proxy:
# - a `jwt_sub: "*"` principal does not take in callers without a JWT (a random API key is
#   401, alice stays alice, an mTLS client is its own principal);
# - "/v1/%66iles" and "//v1/files" meet `deny path: { prefix: /v1/files }`;
# - the trail's policy_hash is the one `policy check` prints;
# - limits over two windows both hold (2 a minute beside 100 an hour, a lower rate: the third
#   request at once is 429, not one of a burst of 100).
. "$(dirname "$0")/proxy_lib.bash"

make_pki
start_fixture model --tokens 2 --log "$work/fx-requests.log"
cat >"$work/policy.yaml" <<POL
version: 1
principals:
  alice: { match: { api_key_sha256: "$(sha256hex $ALICE)" } }
  jwt-users: { match: { jwt_sub: "*" } }
  analytics: { match: { cert_san_uri: "spiffe://test/team/analytics/*" } }
models:
  test-model: { isolation: none }
rules:
  - id: jwt-chat
    effect: allow
    when: { direction: ingress, principal: jwt-users, route: "POST /v1/chat/completions" }
  - id: alice-any
    effect: allow
    when: { direction: ingress, principal: alice, model: test-model }
    limits: { requests_per_minute: 2 }
  - id: alice-daily
    effect: allow
    when: { direction: ingress, principal: alice, route: "POST /v1/chat/completions" }
    limits: { requests_per_hour: 100 }
  - id: no-files
    effect: deny
    when: { direction: ingress, path: { prefix: /v1/files } }
POL
chmod 644 "$work/policy.yaml"
write_config "$work/custos.yaml" "$FX_PORT"
start_custos "$work/custos.yaml"

chat='{"model":"test-model","messages":[{"role":"user","content":"hi"}]}'
P="http://127.0.0.1:$PORT2"
C=(curl -s -o /dev/null -w '%{http_code}' --max-time 20 -H 'Content-Type: application/json' -d "$chat")

check "random API key" "$("${C[@]}" -H 'Authorization: Bearer sk-not-a-real-key' "$P/v1/chat/completions")" 401
check "mTLS client without a JWT" "$("${C[@]}" --cacert "$work/tls/ca.crt" --cert "$work/tls/cli.crt" \
	--key "$work/tls/cli.key" "https://localhost:$PORT/v1/chat/completions")" 403
check "alice POST /v1/files" "$("${C[@]}" -H "Authorization: Bearer $ALICE" "$P/v1/files")" 403
check "alice POST /v1/%66iles" "$("${C[@]}" -H "Authorization: Bearer $ALICE" "$P/v1/%66iles")" 403
check "alice POST //v1/files" "$("${C[@]}" --path-as-is -H "Authorization: Bearer $ALICE" "$P//v1/files")" 403
check "alice POST /v1/files%2Fx" "$("${C[@]}" -H "Authorization: Bearer $ALICE" "$P/v1/files%2Fx")" 403
if grep -q "files" "$work/fx-requests.log" 2>/dev/null; then
	fail "a files request reached the model: $(cat "$work/fx-requests.log")"
else
	ok "no files request reached the model"
fi

codes="" # denied requests took nothing from the buckets: both are full
for i in 1 2 3; do
	codes="$codes $("${C[@]}" -H "Authorization: Bearer $ALICE" "$P/v1/chat/completions")"
done
check "2 a minute beside 100 an hour" "$codes" " 200 200 429"
# the trail is written in batches: wait for the events (bounded), not a fixed time
alice_ok() { audit_grep '"principal":"alice"' | grep -q '"status":200'; }
mtls_ok() { audit_grep '"auth":"mtls"' | grep -q '"principal":"analytics"'; }
wait_until 30 alice_ok && ok "alice is alice in the trail" || fail "alice's events: $(audit_grep alice)"
wait_until 30 mtls_ok && ok "the mTLS client is analytics" || fail "mTLS client's events: $(audit_grep mtls)"
# the trail's policy_hash is what `policy check` prints, however the path is spelled
want=$(cd "$work" && "$bin" policy check ./policy.yaml 2>/dev/null | sed -n 's/.*sha256 \([0-9a-f]\{64\}\).*/\1/p')
got=$(audit_grep '"policy_hash"' | head -1 | sed -n 's/.*"policy_hash":"\([0-9a-f]*\)".*/\1/p')
check "audit policy_hash = policy check's" "$got" "$want"

[ "$fails" -eq 0 ] || exit 1
echo "proxy_policy_edges: ok"
