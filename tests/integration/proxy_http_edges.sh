#!/usr/bin/env bash
# What custos itself writes on a client connection, through the real binary and a raw-bytes
# upstream (raw_upstream.py): answers to HEAD have no content (its own errors included, so a
# kept connection stays in step) and keep the upstream's Content-Length; a response body
# broken before any byte reached the client becomes a 502, one broken later a truncated
# message; HTTP/1.0 keep-alive is announced when kept; codec refusals (501, 505) are the
# client's (http.reject, invalid_request_error); limits.header_bytes, header_count and
# request_line from custos.yaml are enforced (431, 431, 414), and limits.json_depth bounds
# the nesting of a /v1/ JSON body (400, audited).
. "$(dirname "$0")/proxy_lib.bash"
command -v python3 >/dev/null || skip "python3 not installed"

make_pki
start_raw_upstream

cat >"$work/policy.yaml" <<POL
version: 1
principals:
  alice: { match: { api_key_sha256: "$(sha256hex $ALICE)" } }
  bob: { match: { api_key_sha256: "$(sha256hex $BOB)" } }
models:
  test-model: { isolation: none }
rules:
  - id: raw
    effect: allow
    when:
      direction: ingress
      principal: alice
      route: ["POST /v1/chat/completions", "GET /v1/models", "HEAD /v1/models"]
      model: test-model
POL
chmod 644 "$work/policy.yaml"
EXTRA_LIMITS="  header_bytes: 2KiB
  header_count: 10
  request_line: 512
  json_depth: 8
" write_config "$work/custos.yaml" "$RAW_PORT"
start_custos "$work/custos.yaml"

A="Authorization: Bearer $ALICE"
B="Authorization: Bearer $BOB"
chat='{"model":"test-model","messages":[{"role":"user","content":"hi"}]}'
# send: the bytes of printf's arguments on one plain connection; prints the answer.
send() {
	printf "$@" >"$work/req.http"
	raw_http "$PORT2" "$work/req.http"
}
statuses() { grep -ao 'HTTP/1.1 [0-9][0-9][0-9] ' | cut -d' ' -f2 | paste -sd' '; }
# field NAME: the value of the first field NAME in the answer on stdin.
field() { grep -ai -m1 "^$1:" | cut -d: -f2- | tr -d ' \r'; }

# ---- HEAD: custos' own answers carry Content-Length but no content; the connection stays in
# step (a second request on it is answered, and nothing of the JSON error is on the wire).
ans=$(send 'HEAD /v1/models HTTP/1.1\r\nHost: t\r\n%s\r\n\r\nGET /v1/models HTTP/1.1\r\nHost: t\r\n%s\r\nConnection: close\r\n\r\n' "$B" "$A")
check "HEAD refused (403), then GET on the same connection" "$(statuses <<<"$ans")" "403 200"
check "403 to HEAD has no content" "$(grep -c '"error"' <<<"$ans")" 0
[ "$(field Content-Length <<<"$ans")" -gt 0 ] 2>/dev/null && ok "403 to HEAD keeps its Content-Length" || fail "403 to HEAD without Content-Length"
ans=$(send 'HEAD /v1/models HTTP/1.1\r\nHost: t\r\n\r\n')
check "HEAD without credentials -> 401 without content" "$(statuses <<<"$ans") $(grep -c '"error"' <<<"$ans")" "401 0"
ans=$(send 'HEAD /v1/models HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n')
check "malformed HEAD -> 400 without content" "$(statuses <<<"$ans") $(grep -c '"error"' <<<"$ans")" "400 0"
# The upstream's Content-Length on its HEAD answer is kept (RFC 9110 9.3.2).
ans=$(send 'HEAD /v1/models HTTP/1.1\r\nHost: t\r\n%s\r\nX-Raw: head-length\r\n\r\nGET /v1/models HTTP/1.1\r\nHost: t\r\n%s\r\nConnection: close\r\n\r\n' "$A" "$A")
check "proxied HEAD, then GET" "$(statuses <<<"$ans")" "200 200"
check "proxied HEAD keeps the upstream's Content-Length" "$(field Content-Length <<<"$ans")" 1234

# ---- a response body broken before any byte reached the client: 502 with X-Request-Id;
# broken after: the client sees a truncated message (head and first chunk, then the end).
ans=$(send 'POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\n%s\r\nX-Raw: bad-chunk\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' "$A" ${#chat} "$chat")
check "malformed first chunk -> 502" "$(statuses <<<"$ans")" 502
bad_id=$(field X-Request-Id <<<"$ans")
[ ${#bad_id} -eq 32 ] && ok "502 carries X-Request-Id" || fail "502 without X-Request-Id"
ans=$(send 'POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\n%s\r\nX-Raw: bad-chunk-later\r\nContent-Length: %d\r\n\r\n%s' "$A" ${#chat} "$chat")
check "malformed later chunk: head sent, then truncated" "$(statuses <<<"$ans")" 200
late_id=$(field X-Request-Id <<<"$ans")
grep -q first <<<"$ans" && ok "bytes before the break reached the client" || fail "first chunk missing"
grep -q $'^0\r$' <<<"$ans" && fail "truncated body ended with a last chunk" || ok "no last chunk after the break"

# ---- HTTP/1.0 keep-alive: announced when kept, close otherwise
ans=$(send 'GET /v1/models HTTP/1.0\r\nConnection: keep-alive\r\n%s\r\n\r\nGET /v1/models HTTP/1.0\r\nConnection: keep-alive\r\n%s\r\n\r\nGET /v1/models HTTP/1.0\r\n%s\r\n\r\n' "$A" "$B" "$A")
check "HTTP/1.0 keep-alive: three answers on one connection" "$(statuses <<<"$ans")" "200 403 200"
check "HTTP/1.0 keep-alive announced (200, 403), then close" \
	"$(grep -ai '^Connection:' <<<"$ans" | tr -d '\r' | cut -d' ' -f2 | paste -sd' ')" "keep-alive keep-alive close"

# ---- codec refusals are the client's: invalid_request_error, audited http.reject / deny
ans=$(send 'POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\n%s\r\nTransfer-Encoding: xchunked\r\n\r\n' "$A")
check "unknown transfer coding -> 501" "$(statuses <<<"$ans")" 501
check "501 blames the request" "$(grep -o '"type":"[a-z_]*"' <<<"$ans")" '"type":"invalid_request_error"'
ans=$(send 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n')
check "h2 preface -> 505" "$(head -1 <<<"$ans" | cut -d' ' -f2)" 505
check "505 blames the request" "$(grep -o '"type":"[a-z_]*"' <<<"$ans")" '"type":"invalid_request_error"'

# ---- limits from custos.yaml: header_count 10, header_bytes 2 KiB, request_line 512
fields() { # N: N header fields in all (Host and Authorization included)
	local i
	printf 'Host: t\r\n%s' "$A"
	for ((i = 3; i <= $1; i++)); do printf '\r\nX-F%d: v' "$i"; done
}
ans=$(send 'GET /v1/models HTTP/1.1\r\n%s\r\nConnection: close\r\n\r\n' "$(fields 9)")
check "10 header fields (header_count 10) pass" "$(statuses <<<"$ans")" 200
ans=$(send 'GET /v1/models HTTP/1.1\r\n%s\r\nConnection: close\r\n\r\n' "$(fields 10)")
check "11 header fields -> 431" "$(statuses <<<"$ans")" 431
pad() { head -c "$1" /dev/zero | tr '\0' a; }
ans=$(send 'GET /v1/models HTTP/1.1\r\nHost: t\r\n%s\r\nX-Pad: %s\r\nConnection: close\r\n\r\n' "$A" "$(pad 1800)")
check "a 1.9 KiB head (header_bytes 2 KiB) passes" "$(statuses <<<"$ans")" 200
ans=$(send 'GET /v1/models HTTP/1.1\r\nHost: t\r\n%s\r\nX-Pad: %s\r\nConnection: close\r\n\r\n' "$A" "$(pad 2100)")
check "a 2.1 KiB head -> 431" "$(statuses <<<"$ans")" 431
line() { printf 'GET /v1/models?%s HTTP/1.1' "$(pad $(($1 - 24)))"; } # a request line of N bytes
ans=$(send '%s\r\nHost: t\r\n%s\r\nConnection: close\r\n\r\n' "$(line 512)" "$A")
check "a 512-byte request line (request_line 512) passes" "$(statuses <<<"$ans")" 200
ans=$(send '%s\r\nHost: t\r\n%s\r\nConnection: close\r\n\r\n' "$(line 513)" "$A")
check "a 513-byte request line -> 414" "$(statuses <<<"$ans")" 414

# ---- limits.json_depth 8: eight nested arrays and objects pass, nine are refused with 400
nested() { # N: a chat body whose "metadata" value makes the whole body N levels deep
	local i open="" close=""
	for ((i = 2; i <= $1; i++)); do open+='['; close+=']'; done
	printf '{"model":"test-model","messages":[{"role":"user","content":"hi"}],"metadata":%s1%s}' "$open" "$close"
}
body=$(nested 8)
ans=$(send 'POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\n%s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' "$A" ${#body} "$body")
check "a body 8 levels deep (json_depth 8) passes" "$(statuses <<<"$ans")" 200
body=$(nested 9)
ans=$(send 'POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\n%s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' "$A" ${#body} "$body")
check "a body 9 levels deep -> 400" "$(statuses <<<"$ans")" 400
deep_id=$(field X-Request-Id <<<"$ans")
check "the 400 blames the request" "$(grep -o '"type":"[a-z_]*"' <<<"$ans")" '"type":"invalid_request_error"'

kill -TERM "$CU_PID"
wait "$CU_PID"

# ---- the audit trail: what was actually sent
ev() { audit_grep "\"request_id\":\"$1\""; }
[ -n "$(ev "$bad_id" | grep '"status":502' | grep 'malformed upstream response body')" ] &&
	ok "malformed first chunk audited as the 502 sent" || fail "502 not audited: $(ev "$bad_id")"
[ -n "$(ev "$late_id" | grep '"status":200' | grep 'malformed upstream response body')" ] &&
	ok "malformed later chunk audited with the 200 sent" || fail "truncation not audited: $(ev "$late_id")"
check "501/505 audited as http.reject / deny" \
	"$(audit_grep '"status":50[15]' | grep -c '"type":"http.reject".*"decision":"deny"')" 2
[ -n "$(ev "$deep_id" | grep '"status":400' | grep 'nested deeper than 8')" ] &&
	ok "the too-deep body audited as the 400 sent" || fail "too-deep body not audited: $(ev "$deep_id")"
check "431/414 audited" "$(audit_grep '"status":4(31|14)' | wc -l | tr -d ' ')" 3
[ "$fails" -eq 0 ]
