#!/usr/bin/env bash
# Shadow mode through the real binary: with `mode: shadow` a request enforcement would deny
# goes through, and its audit event says what enforcement would have decided; obligations
# (max_tokens here) are not enforced; unauthenticated requests are still refused (401).
. "$(dirname "$0")/proxy_lib.bash"

make_pki
start_fixture model --tokens 3
POLICY_MODE=shadow write_policy "$work/policy.yaml"
write_config "$work/custos.yaml" "$FX_PORT"
start_custos "$work/custos.yaml"
C=(curl -sS --cacert "$work/tls/ca.crt" --max-time 20 -o /dev/null -w '%{http_code}' -D "$work/h")
url="https://localhost:$PORT/v1/chat/completions"
chat='{"model":"test-model","messages":[{"role":"user","content":"hi"}]}'
rid() { sed -n 's/^[Xx]-[Rr]equest-[Ii]d: *\([0-9a-f]*\).*/\1/p' "$work/h" | tr -d '\r'; }

check "bob (no rule) passes in shadow mode" "$("${C[@]}" -H "Authorization: Bearer $BOB" -d "$chat" "$url")" 200
bob_id=$(rid)
check "max_tokens over the limit passes in shadow mode" \
	"$("${C[@]}" -H "Authorization: Bearer $ALICE" -d '{"model":"test-model","max_tokens":5000,"messages":[{"role":"user","content":"hi"}]}' "$url")" 200
check "no credentials still 401" "$("${C[@]}" -d "$chat" "$url")" 401
kill -TERM "$CU_PID"
wait "$CU_PID"
line=$(audit_grep "\"request_id\":\"$bob_id\"")
grep -q '"shadow":true' <<<"$line" && ok "audit event marked shadow" || fail "no shadow flag: $line"
grep -q '"decision":"shadow_deny"' <<<"$line" && ok "audit event records that enforcement would deny" || fail "decision: $line"
[ "$fails" -eq 0 ]
