#!/usr/bin/env bash
# proxy_audit_bodies: a policy rule with `audit: bodies` makes the ingress request's audit
# event carry the request body as custos forwarded it and the response body as the client
# received it, beside the digests `audit: bodies_hashed` gives (docs/AUDIT.md "Bodies"), each
# cut at audit.body_record_max. Through the real binary, with curl:
# - a small JSON chat: request_body is the body curl sent, verbatim (utf-8), response_body
#   what curl received, lengths exact, no truncation flag, the digests as bodies_hashed's;
# - a prompt with an e-mail address under `inspect: prompt: { email: redact }`: the recorded
#   request body is the redacted one (the address is nowhere in the trail), its digest of
#   the body as sent stays;
# - a body over the cap (body_record_max: 512): its first 512 bytes, request_body_truncated
#   and the whole length; the echoed response likewise;
# - a body that is not UTF-8 text (POST /upload, bytes 0x00-0xff): base64 of its bytes;
# - a streamed (SSE) answer: the bytes of the stream the client received, up to the cap;
# - GET /v1/models under a rule without `audit:`, and embeddings under `audit: bodies_hashed`:
#   no body members (the digests alone for the latter);
# - with response inspection on (`response: { email: redact }`, prompts not redacted): a JSON
#   answer held whole and a stream inspected piece by piece are recorded as the client got
#   them, masked; the request body, not redacted, is recorded as sent;
# - `custos audit verify` accepts the trail;
# - body_record_max above what an audit record holds: `custos config check` and `custos up`
#   both refuse it with file:line:col.
. "$(dirname "$0")/proxy_lib.bash"
command -v python3 >/dev/null || skip "python3 not installed"

make_pki
start_fixture model --tokens 4
cat >"$work/policy.yaml" <<POL
version: 1
principals:
  alice: { match: { api_key_sha256: "$(sha256hex $ALICE)" }, groups: [test] }
models:
  test-model: { isolation: none }
rules:
  - id: chat
    effect: allow
    when: { direction: ingress, principal: alice, route: "POST /v1/chat/completions", model: test-model }
    audit: bodies
    inspect: { prompt: { email: redact } }
    limits: { max_body: 64KiB }
  - id: upload
    effect: allow
    when: { direction: ingress, principal: alice, route: "POST /upload" }
    audit: bodies
  - id: embed
    effect: allow
    when: { direction: ingress, principal: alice, route: "POST /v1/embeddings", model: test-model }
    audit: bodies_hashed
  - id: list-models
    effect: allow
    when: { direction: ingress, route: "GET /v1/models", principal.groups: test }
POL
chmod 644 "$work/policy.yaml"
"$bin" policy check "$work/policy.yaml" >"$work/pcheck.out" 2>&1 || fail "policy check: $(cat "$work/pcheck.out")"
grep -q "bodies themselves are not" "$work/pcheck.out" && fail "policy check still warns that bodies are not written"
AUDIT_YAML="  body_record_max: 512" write_config "$work/custos.yaml" "$FX_PORT"
"$bin" config check "$work/custos.yaml" >"$work/ccheck.out" 2>&1 || fail "config check: $(cat "$work/ccheck.out")"
start_custos "$work/custos.yaml"
url="http://127.0.0.1:$PORT2"

# post NAME PATH CTYPE: POSTs $work/NAME.in to PATH as alice; the answer in $work/NAME.out;
# prints the request id.
post() {
	curl -sS --max-time 20 -H "Authorization: Bearer $ALICE" -H "Content-Type: $3" \
		--data-binary "@$work/$1.in" -D "$work/$1.hdr" -o "$work/$1.out" "$url$2" ||
		fail "$1: curl"
	tr -d '\r' <"$work/$1.hdr" | sed -n 's/^[Xx]-[Rr]equest-[Ii]d: //p'
}
chat() { printf '%s' "$2" >"$work/$1.in"; post "$1" /v1/chat/completions application/json; }
# event ID: the request's http.request event (waits for the asynchronous writer).
event() { wait_until 30 eval "audit_grep '\"request_id\":\"$1\"' | grep -q '\"type\":\"http.request\"'" &&
	audit_grep "\"request_id\":\"$1\"" | grep '"type":"http.request"' | tail -1; }
field() { python3 -c 'import json,sys; print(json.loads(sys.stdin.read()).get(sys.argv[1], "-"))' "$1"; }
# body KEY FILE: the event's KEY member (a body, decoded as its _encoding says) into FILE.
body() {
	python3 -c '
import base64, json, sys
e = json.loads(sys.stdin.read()); k = sys.argv[1]
v = e.get(k)
if v is None: sys.exit(1)
enc = e.get(k + "_encoding")
data = base64.b64decode(v, validate=True) if enc == "base64" else v.encode("utf-8")
if enc not in ("base64", "utf-8"): sys.exit(2)
open(sys.argv[2], "wb").write(data)' "$1" "$2"
}
sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }
same() { cmp -s "$2" "$3" && ok "$1" || fail "$1: $(head -c 200 "$2" | od -c | head -3) vs $(head -c 200 "$3" | od -c | head -3)"; }

# 1. A small JSON chat: both bodies verbatim.
id=$(chat plain '{"model":"test-model","messages":[{"role":"user","content":"record me \"quoted\"\tand tabbed, caf\u00e9 ünïcode"}]}')
ev=$(event "$id") || fail "plain: no event for $id"
check "plain: audit_level" "$(field audit_level <<<"$ev")" bodies
body request_body "$work/plain.rec" <<<"$ev" || fail "plain: no request_body"
same "plain: request_body is what curl sent" "$work/plain.rec" "$work/plain.in"
check "plain: request_body_encoding" "$(field request_body_encoding <<<"$ev")" utf-8
check "plain: request_body_length" "$(field request_body_length <<<"$ev")" "$(size "$work/plain.in")"
check "plain: not truncated" "$(field request_body_truncated <<<"$ev")" -
body response_body "$work/plain.resp" <<<"$ev" || fail "plain: no response_body"
same "plain: response_body is what curl received" "$work/plain.resp" "$work/plain.out"
check "plain: response_body_length" "$(field response_body_length <<<"$ev")" "$(size "$work/plain.out")"
check "plain: request_body_sha256 as bodies_hashed" "$(field request_body_sha256 <<<"$ev")" "$(sha "$work/plain.in")"
check "plain: response_body_sha256 as bodies_hashed" "$(field response_body_sha256 <<<"$ev")" "$(sha "$work/plain.out")"

# 2. A redacted prompt: the trail keeps the body as forwarded, never the address.
id=$(chat redact '{"model":"test-model","messages":[{"role":"user","content":"mail jane.doe@example.com now"}]}')
ev=$(event "$id") || fail "redact: no event for $id"
body request_body "$work/redact.rec" <<<"$ev" || fail "redact: no request_body"
grep -q 'jane.doe@example.com' "$work/redact.rec" && fail "redact: the address is in the recorded body"
grep -q 'mail .* now' "$work/redact.rec" && ok "redact: the recorded body is the forwarded prompt ($(cat "$work/redact.rec"))" ||
	fail "redact: recorded '$(cat "$work/redact.rec")'"
audit_grep 'jane\.doe@example\.com' >/dev/null && fail "redact: the address is somewhere in the trail"
check "redact: request_body_length is the forwarded length" "$(field request_body_length <<<"$ev")" "$(size "$work/redact.rec")"
check "redact: request_body_sha256 is still of the body as sent" "$(field request_body_sha256 <<<"$ev")" "$(sha "$work/redact.in")"
check "redact: the forwarded digest is of the recorded body" "$(field request_body_forwarded_sha256 <<<"$ev")" "$(sha "$work/redact.rec")"

# 3. Over the cap: the first 512 bytes, flagged, with the whole length.
long=$(python3 -c 'print("x" * 3000, end="")')
id=$(chat long "{\"model\":\"test-model\",\"messages\":[{\"role\":\"user\",\"content\":\"$long\"}]}")
ev=$(event "$id") || fail "long: no event for $id"
body request_body "$work/long.rec" <<<"$ev" || fail "long: no request_body"
head -c 512 "$work/long.in" >"$work/long.in512"
same "long: request_body is the first 512 bytes" "$work/long.rec" "$work/long.in512"
check "long: request_body_truncated" "$(field request_body_truncated <<<"$ev")" True
check "long: request_body_length is the whole length" "$(field request_body_length <<<"$ev")" "$(size "$work/long.in")"
body response_body "$work/long.resp" <<<"$ev" || fail "long: no response_body"
head -c 512 "$work/long.out" >"$work/long.out512"
same "long: response_body is the first 512 bytes received" "$work/long.resp" "$work/long.out512"
check "long: response_body_truncated" "$(field response_body_truncated <<<"$ev")" True
check "long: response_body_length" "$(field response_body_length <<<"$ev")" "$(size "$work/long.out")"
check "long: response digest of the whole body" "$(field response_body_sha256 <<<"$ev")" "$(sha "$work/long.out")"

# 4. Not UTF-8 text: base64 of the bytes.
python3 -c 'import sys; sys.stdout.buffer.write(bytes(range(256)))' >"$work/bin.in"
id=$(post bin /upload application/octet-stream)
ev=$(event "$id") || fail "bin: no event for $id"
check "bin: request_body_encoding" "$(field request_body_encoding <<<"$ev")" base64
body request_body "$work/bin.rec" <<<"$ev" || fail "bin: no request_body"
same "bin: request_body decodes to the bytes sent" "$work/bin.rec" "$work/bin.in"
check "bin: request_body_length" "$(field request_body_length <<<"$ev")" 256
check "bin: response recorded (the server's answer to /upload)" "$(field response_body_length <<<"$ev")" "$(size "$work/bin.out")"

# 5. A streamed answer: the stream as received, up to the cap.
id=$(chat sse '{"model":"test-model","stream":true,"messages":[{"role":"user","content":"stream me"}]}')
ev=$(event "$id") || fail "sse: no event for $id"
grep -q '^data: ' "$work/sse.out" && ok "sse: an event stream came back" || fail "sse: $(head -c 200 "$work/sse.out")"
body response_body "$work/sse.resp" <<<"$ev" || fail "sse: no response_body"
head -c 512 "$work/sse.out" >"$work/sse.out512"
same "sse: response_body is the stream received (first 512 bytes)" "$work/sse.resp" "$work/sse.out512"
check "sse: response_body_length" "$(field response_body_length <<<"$ev")" "$(size "$work/sse.out")"
[ "$(size "$work/sse.out")" -gt 512 ] && want=True || want=-
check "sse: response_body_truncated when over the cap" "$(field response_body_truncated <<<"$ev")" "$want"

# 6. A rule without audit: no bodies.
hid=$(curl -sS --max-time 20 -H "Authorization: Bearer $ALICE" -D - -o /dev/null "$url/v1/models" |
	tr -d '\r' | sed -n 's/^[Xx]-[Rr]equest-[Ii]d: //p')
ev=$(event "$hid") || fail "models: no event for $hid"
check "no audit obligation: no request_body" "$(field request_body <<<"$ev")" -
check "no audit obligation: no response_body" "$(field response_body <<<"$ev")" -

id=$(printf '%s' '{"model":"test-model","input":"hash only"}' >"$work/emb.in" && post emb /v1/embeddings application/json)
ev=$(event "$id") || fail "embeddings: no event for $id"
check "bodies_hashed: audit_level" "$(field audit_level <<<"$ev")" bodies_hashed
check "bodies_hashed: the request digest" "$(field request_body_sha256 <<<"$ev")" "$(sha "$work/emb.in")"
check "bodies_hashed: no request_body" "$(field request_body <<<"$ev")" -
check "bodies_hashed: no response_body" "$(field response_body <<<"$ev")" -

# 7. Response inspection: the bodies as the client received them.
sed -i 's/    inspect: { prompt: { email: redact } }/    inspect: { response: { email: redact } }/' "$work/policy.yaml"
grep -q 'inspect: { response: { email: redact } }' "$work/policy.yaml" || fail "policy not edited"
kill -HUP "$CU_PID"
wait_log 'reloaded' 1
for k in held stream; do
	case $k in
	held) b='{"model":"test-model","messages":[{"role":"user","content":"to carol@example.net"}]}' ;;
	stream) b='{"model":"test-model","stream":true,"messages":[{"role":"user","content":"to carol@example.net"}]}' ;;
	esac
	id=$(chat "rinsp-$k" "$b")
	ev=$(event "$id") || fail "response inspection $k: no event for $id"
	grep -q 'carol@example.net' "$work/rinsp-$k.out" && fail "response inspection $k: the client got the address"
	body response_body "$work/rinsp-$k.resp" <<<"$ev" || fail "response inspection $k: no response_body"
	head -c 512 "$work/rinsp-$k.out" >"$work/rinsp-$k.out512"
	same "response inspection $k: response_body is what the client received (masked)" "$work/rinsp-$k.resp" "$work/rinsp-$k.out512"
	grep -q 'carol@example.net' "$work/rinsp-$k.resp" && fail "response inspection $k: the address in response_body"
	body request_body "$work/rinsp-$k.rec" <<<"$ev" || fail "response inspection $k: no request_body"
	same "response inspection $k: the prompt (not redacted) recorded as sent" "$work/rinsp-$k.rec" "$work/rinsp-$k.in"
done

# 8. The trail verifies.
if "$bin" audit verify --live "$work/audit" >"$work/verify.out" 2>&1; then ok "audit verify (--live: custos runs)"; else fail "audit verify: $(cat "$work/verify.out")"; fi

# 9. A cap an audit record cannot hold: refused by config check and by up, at its line.
AUDIT_YAML="  body_record_max: 4KiB" write_config "$work/bad.yaml" "$FX_PORT"
chmod 600 "$work/bad.yaml"
line=$(grep -n 'body_record_max' "$work/bad.yaml" | cut -d: -f1)
want="bad.yaml:$line:20: error: 'body_record_max': 4096 bytes per body cannot fit an audit event (at most 1536)"
"$bin" config check "$work/bad.yaml" >"$work/bad.check" 2>&1 && fail "config check accepted body_record_max: 4KiB"
grep -qF "$want" "$work/bad.check" && ok "config check: $want" || fail "config check said: $(cat "$work/bad.check")"
"$bin" up -c "$work/bad.yaml" >"$work/bad.up" 2>&1 </dev/null && fail "up accepted body_record_max: 4KiB"
grep -qF "$want" "$work/bad.up" && ok "up refuses it the same way" || fail "up said: $(cat "$work/bad.up")"
[ "$fails" -eq 0 ]
