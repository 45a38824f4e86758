#!/usr/bin/env bash
# proxy_body_hashes: a policy rule with `audit: bodies_hashed` makes the ingress request's
# audit event carry the SHA-256 of the request body as the client sent it, of the body custos
# forwarded when it rewrote it, and of the response body the client received
# (docs/POLICY.md "Body hashes"); a rule without it, none. Through the real binary, with curl:
# - a JSON chat answered whole: request_body_sha256 = sha256(what curl sent),
#   response_body_sha256 = sha256(what curl received), no forwarded digest;
# - a prompt with an e-mail address under `inspect: prompt: { email: redact }`: the forwarded
#   digest is there and differs (the fixture echoes the redacted text, so the response digest
#   is of the masked answer the client got);
# - a streamed (SSE) answer: custos adds stream_options for token accounting (forwarded
#   digest) and drops the usage chunk it asked for: the response digest is of what the client
#   received, chunk framing removed;
# - GET /v1/models under a rule without `audit:`: no digest, no audit_level.
. "$(dirname "$0")/proxy_lib.bash"

make_pki
start_fixture model --tokens 4
write_policy "$work/policy.yaml"
# The chat rule asks for body hashes and redacts e-mail addresses in prompts.
sed -i 's/^    limits: { requests_per_minute: 6000, tokens_per_hour/    audit: bodies_hashed\n    inspect: { prompt: { email: redact } }\n    limits: { requests_per_minute: 6000, tokens_per_hour/' "$work/policy.yaml"
grep -q "audit: bodies_hashed" "$work/policy.yaml" || { fail "policy not edited"; exit 1; }
write_config "$work/custos.yaml" "$FX_PORT"
start_custos "$work/custos.yaml"
url="http://127.0.0.1:$PORT2"

# post NAME BODY: POSTs BODY to the chat endpoint as alice; the answer in $work/NAME.out, its
# headers in $work/NAME.hdr, the request body in $work/NAME.in; prints the request id.
post() {
	printf '%s' "$2" >"$work/$1.in"
	curl -sS --max-time 20 -H "Authorization: Bearer $ALICE" -H 'Content-Type: application/json' \
		--data-binary "@$work/$1.in" -D "$work/$1.hdr" -o "$work/$1.out" "$url/v1/chat/completions" ||
		fail "$1: curl"
	tr -d '\r' <"$work/$1.hdr" | sed -n 's/^[Xx]-[Rr]equest-[Ii]d: //p'
}
# event ID: the request's http.request event (waits for the asynchronous writer).
event() { wait_until 30 eval "audit_grep '\"request_id\":\"$1\"' | grep -q '\"type\":\"http.request\"'" &&
	audit_grep "\"request_id\":\"$1\"" | grep '"type":"http.request"' | tail -1; }
field() { python3 -c 'import json,sys; print(json.loads(sys.stdin.read()).get(sys.argv[1], "-"))' "$1"; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

# 1. A JSON answer.
id=$(post plain '{"model":"test-model","messages":[{"role":"user","content":"hash me"}]}')
ev=$(event "$id") || fail "plain: no event for $id"
check "plain: audit_level" "$(field audit_level <<<"$ev")" bodies_hashed
check "plain: request_body_sha256 is sha256 of what curl sent" "$(field request_body_sha256 <<<"$ev")" "$(sha "$work/plain.in")"
check "plain: no forwarded digest (nothing rewritten)" "$(field request_body_forwarded_sha256 <<<"$ev")" -
check "plain: response_body_sha256 is sha256 of what curl received" "$(field response_body_sha256 <<<"$ev")" "$(sha "$work/plain.out")"

# 2. A redacted prompt.
id=$(post redact '{"model":"test-model","messages":[{"role":"user","content":"mail jane.doe@example.com now"}]}')
ev=$(event "$id") || fail "redact: no event for $id"
grep -q 'jane.doe@example.com' "$work/redact.out" && fail "redact: the address reached the model"
check "redact: request_body_sha256 is of the body as sent" "$(field request_body_sha256 <<<"$ev")" "$(sha "$work/redact.in")"
fwd=$(field request_body_forwarded_sha256 <<<"$ev")
[ "$fwd" != - ] && [ "$fwd" != "$(sha "$work/redact.in")" ] &&
	ok "redact: a forwarded digest, not the sent body's ($fwd)" || fail "redact: forwarded digest '$fwd'"
check "redact: response_body_sha256 is of the masked answer received" "$(field response_body_sha256 <<<"$ev")" "$(sha "$work/redact.out")"

# 3. A streamed answer: stream_options added (forwarded digest), the usage chunk not passed on.
id=$(post sse '{"model":"test-model","stream":true,"messages":[{"role":"user","content":"stream me"}]}')
ev=$(event "$id") || fail "sse: no event for $id"
grep -q '^data: ' "$work/sse.out" && ok "sse: an event stream came back" || fail "sse: $(head -c 200 "$work/sse.out")"
fwd=$(field request_body_forwarded_sha256 <<<"$ev")
[ "$fwd" != - ] && ok "sse: forwarded digest (stream_options added)" || fail "sse: no forwarded digest"
check "sse: response_body_sha256 is of the stream received" "$(field response_body_sha256 <<<"$ev")" "$(sha "$work/sse.out")"

# 4. A rule without audit: no digests.
hid=$(curl -sS --max-time 20 -H "Authorization: Bearer $ALICE" -D - -o /dev/null "$url/v1/models" |
	tr -d '\r' | sed -n 's/^[Xx]-[Rr]equest-[Ii]d: //p')
ev=$(event "$hid") || fail "models: no event for $hid"
check "no audit obligation: no audit_level" "$(field audit_level <<<"$ev")" -
check "no audit obligation: no request digest" "$(field request_body_sha256 <<<"$ev")" -
check "no audit obligation: no response digest" "$(field response_body_sha256 <<<"$ev")" -

# 5. With response inspection on, a JSON answer is held whole and a stream inspected piece by
# piece: the digests are still of what the client received.
sed -i 's/    inspect: { prompt: { email: redact } }/    inspect: { prompt: { email: redact }, response: { email: redact } }/' "$work/policy.yaml"
kill -HUP "$CU_PID"
wait_log 'reloaded' 1
for k in plain sse; do
	case $k in
	plain) body='{"model":"test-model","messages":[{"role":"user","content":"held: bob@example.org"}]}' ;;
	sse) body='{"model":"test-model","stream":true,"messages":[{"role":"user","content":"inspected stream"}]}' ;;
	esac
	id=$(post "insp-$k" "$body")
	ev=$(event "$id") || fail "inspected $k: no event for $id"
	check "inspected $k: request digest" "$(field request_body_sha256 <<<"$ev")" "$(sha "$work/insp-$k.in")"
	check "inspected $k: response digest of what was received" "$(field response_body_sha256 <<<"$ev")" "$(sha "$work/insp-$k.out")"
done
[ "$fails" -eq 0 ]
