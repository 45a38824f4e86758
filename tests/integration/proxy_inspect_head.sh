#!/usr/bin/env bash
# Answers without a body under a rule that inspects prompts and responses (RFC 9112 §6.3),
# through the real proxy with curl and a raw-bytes upstream (raw_upstream.py): a HEAD answer
# (a JSON head with Content-Length, one past the 4 MiB a JSON body is held up to, one under
# Content-Encoding: gzip, a stream's chunked head) is forwarded at once with the upstream's head, Content-Length as the upstream sent it, never
# held for a body that does not come, never refused (502/403); a 304 and a 204 to GET the same.
# Each is audited once (allow, its status) and the client connection stays in step: the GET
# after it on the same connection (curl --next, and raw pipelined bytes) is answered, its JSON
# body held and inspected as usual.
. "$(dirname "$0")/proxy_lib.bash"
command -v python3 >/dev/null || skip "python3 not installed"

make_pki
start_raw_upstream

cat >"$work/policy.yaml" <<POL
version: 1
principals:
  alice: { match: { api_key_sha256: "$(sha256hex $ALICE)" } }
models:
  test-model: { isolation: none }
rules:
  - id: inspected
    effect: allow
    when:
      direction: ingress
      principal: alice
      route: ["POST /v1/chat/completions", "GET /v1/models", "HEAD /v1/models"]
      model: test-model
    inspect:
      prompt: { email: redact, us_ssn: deny }
      response: { payment_card: redact, email: redact, aws_access_key: deny }
POL
chmod 644 "$work/policy.yaml"
write_config "$work/custos.yaml" "$RAW_PORT"
start_custos "$work/custos.yaml"

URL="http://127.0.0.1:$PORT2/v1/models"
A="Authorization: Bearer $ALICE"
# --max-time only bounds a hang (a proxy waiting for a body that never comes): such a curl
# fails with 28 and its check with it.
C=(curl -sS --max-time 20 -H "$A")
# hdr FILE NAME: the value of the first field NAME in a curl -D file ("" when none).
hdr() { sed -n "s/^$2: *//Ip" "$1" | head -1 | tr -d '\r'; }
rid() { hdr "$1" X-Request-Id; }
# audit_lines ID: the number of audit events of request ID, once the first is written.
audit_lines() {
	wait_until 30 audit_grep "\"request_id\":\"$1\"" >/dev/null || { echo 0; return; }
	audit_grep "\"request_id\":\"$1\"" | wc -l
}
# audited ID STATUS: one event for request ID, an allowed http.request with STATUS.
audited() {
	local n line
	n=$(audit_lines "$1")
	line=$(audit_grep "\"request_id\":\"$1\"")
	[ "$n" = 1 ] && grep -q '"type":"http.request"' <<<"$line" && grep -q '"decision":"allow"' <<<"$line" &&
		grep -q "\"status\":$2[,}]" <<<"$line" && return 0
	echo "    $n event(s): $line"
	return 1
}
# body_len FILE: its size in bytes (curl writes no file for an empty body: 0).
body_len() { if [ -f "$1" ]; then wc -c <"$1" | tr -d ' '; else echo 0; fi; }

# ---- HEAD, JSON head with Content-Length (curl -I), then GET on the same connection
out=$("${C[@]}" -I -D "$work/h1.hdr" -o /dev/null -w '%{http_code} %{num_connects}\n' -H 'X-Raw: head-length' "$URL" \
	--next -sS --max-time 20 -H "$A" -D "$work/g1.hdr" -o "$work/g1.json" -w '%{http_code} %{num_connects}\n' "$URL")
check "HEAD (JSON head) then GET on one connection" "$(echo $out)" "200 1 200 0"
check "HEAD: the upstream's Content-Length kept" "$(hdr "$work/h1.hdr" Content-Length)" 1234
check "HEAD: the upstream's Content-Type" "$(hdr "$work/h1.hdr" Content-Type)" application/json
check "HEAD: not chunked" "$(hdr "$work/h1.hdr" Transfer-Encoding)" ""
check "HEAD: one status line" "$(grep -c '^HTTP/' "$work/h1.hdr")" 1
audited "$(rid "$work/h1.hdr")" 200 && ok "HEAD audited once (allow, 200)" || fail "HEAD audit"
check "the GET after it: its JSON body, held and inspected, with its Content-Length" \
	"$(hdr "$work/g1.hdr" Content-Length) $(grep -c '"raw ok"' "$work/g1.json")" "$(body_len "$work/g1.json") 1"
audited "$(rid "$work/g1.hdr")" 200 && ok "the GET after it audited once" || fail "GET audit"
grep -q '^HEAD /v1/models head-length$' "$work/raw.log" && ok "the upstream got HEAD" ||
	fail "the upstream's requests: $(cat "$work/raw.log")"

# ---- the same as raw pipelined bytes: nothing between the HEAD answer's head and the next
# status line (no body, no chunk), and the GET's answer follows
printf 'HEAD /v1/models HTTP/1.1\r\nHost: t\r\n%s\r\nX-Raw: head-length\r\n\r\nGET /v1/models HTTP/1.1\r\nHost: t\r\n%s\r\nConnection: close\r\n\r\n' \
	"$A" "$A" >"$work/pipe.http"
raw_http "$PORT2" "$work/pipe.http" >"$work/pipe.out"
check "raw HEAD + GET: the two answers" "$(grep -ao '^HTTP/1.1 [0-9]*' "$work/pipe.out" | cut -d' ' -f2 | paste -sd' ')" "200 200"
check "raw HEAD + GET: the HEAD answer's head ends where the GET's starts" \
	"$(perl -0777 -ne 'print /\A(HTTP\/1\.1 200 [^\r]*\r\n(?:[^\r\n]+\r\n)*)\r\nHTTP\/1\.1 200 / ? "adjacent" : "not adjacent"' "$work/pipe.out")" adjacent
check "raw HEAD + GET: the GET's body complete" "$(grep -c '"raw ok"' "$work/pipe.out")" 1

# ---- HEAD whose head says Content-Encoding: gzip: nothing to inspect, forwarded as it came
# (not the 502 a content-encoded body gets), then GET on the same connection
out=$("${C[@]}" -I -D "$work/h2.hdr" -o /dev/null -w '%{http_code} %{num_connects}\n' -H 'X-Raw: head-gzip' "$URL" \
	--next -sS --max-time 20 -H "$A" -o "$work/g2.json" -w '%{http_code} %{num_connects}\n' "$URL")
check "HEAD (gzip head) then GET on one connection" "$(echo $out)" "200 1 200 0"
check "HEAD (gzip head): Content-Encoding and Content-Length kept" \
	"$(hdr "$work/h2.hdr" Content-Encoding) $(hdr "$work/h2.hdr" Content-Length)" "gzip 1234"
audited "$(rid "$work/h2.hdr")" 200 && ok "HEAD (gzip head) audited once (allow, 200)" || fail "HEAD (gzip head) audit"

# ---- HEAD whose Content-Length is past the 4 MiB a JSON body is held up to: no body to hold,
# so no 502
out=$("${C[@]}" -I -D "$work/hb.hdr" -o /dev/null -w '%{http_code} %{num_connects}\n' -H 'X-Raw: head-big' "$URL" \
	--next -sS --max-time 20 -H "$A" -o "$work/gb.json" -w '%{http_code} %{num_connects}\n' "$URL")
check "HEAD (Content-Length past 4 MiB) then GET on one connection" "$(echo $out)" "200 1 200 0"
check "HEAD (Content-Length past 4 MiB): the upstream's Content-Length" "$(hdr "$work/hb.hdr" Content-Length)" 5242880
audited "$(rid "$work/hb.hdr")" 200 && ok "HEAD (Content-Length past 4 MiB) audited once (allow, 200)" || fail "HEAD (big) audit"

# ---- HEAD whose head is a stream's (text/event-stream, chunked): no body, no chunk
out=$("${C[@]}" -I -D "$work/h3.hdr" -o /dev/null -w '%{http_code} %{num_connects}\n' -H 'X-Raw: head-sse' "$URL" \
	--next -sS --max-time 20 -H "$A" -o "$work/g3.json" -w '%{http_code} %{num_connects}\n' "$URL")
check "HEAD (stream head) then GET on one connection" "$(echo $out)" "200 1 200 0"
check "HEAD (stream head): its Content-Type" "$(hdr "$work/h3.hdr" Content-Type)" text/event-stream
audited "$(rid "$work/h3.hdr")" 200 && ok "HEAD (stream head) audited once (allow, 200)" || fail "HEAD (stream head) audit"
printf 'HEAD /v1/models HTTP/1.1\r\nHost: t\r\n%s\r\nX-Raw: head-sse\r\n\r\nGET /v1/models HTTP/1.1\r\nHost: t\r\n%s\r\nConnection: close\r\n\r\n' \
	"$A" "$A" >"$work/pipe3.http"
raw_http "$PORT2" "$work/pipe3.http" >"$work/pipe3.out"
check "raw HEAD (stream head) + GET: adjacent answers" \
	"$(perl -0777 -ne 'print /\A(HTTP\/1\.1 200 [^\r]*\r\n(?:[^\r\n]+\r\n)*)\r\nHTTP\/1\.1 200 / ? "adjacent" : "not adjacent"' "$work/pipe3.out")" adjacent

# ---- GET answered 304 (conditional), then GET on the same connection: forwarded, no body,
# never a Content-Length of 0 (RFC 9110 §8.6: only the length a 200 would have, or none)
out=$("${C[@]}" -D "$work/nm.hdr" -o "$work/nm.body" -w '%{http_code} %{num_connects}\n' -H 'X-Raw: not-modified' \
	-H 'If-None-Match: "raw-1"' "$URL" \
	--next -sS --max-time 20 -H "$A" -o "$work/g4.json" -w '%{http_code} %{num_connects}\n' "$URL")
check "GET answered 304, then GET on one connection" "$(echo $out)" "304 1 200 0"
check "304: no body" "$(body_len "$work/nm.body")" 0
check "304: the ETag kept" "$(hdr "$work/nm.hdr" ETag)" '"raw-1"'
cl=$(hdr "$work/nm.hdr" Content-Length)
[ -z "$cl" ] || [ "$cl" = 1234 ] && ok "304: Content-Length absent or the upstream's ('$cl')" ||
	fail "304: Content-Length '$cl'"
audited "$(rid "$work/nm.hdr")" 304 && ok "304 audited once (allow, 304)" || fail "304 audit"
check "the GET after the 304: the upstream's answer" "$(grep -c '"raw ok"' "$work/g4.json")" 1

# ---- GET answered 204 with a JSON Content-Type: no body to hold, forwarded
out=$("${C[@]}" -D "$work/nc.hdr" -o "$work/nc.body" -w '%{http_code} %{num_connects}\n' -H 'X-Raw: no-content' "$URL" \
	--next -sS --max-time 20 -H "$A" -o "$work/g5.json" -w '%{http_code} %{num_connects}\n' "$URL")
check "GET answered 204, then GET on one connection" "$(echo $out)" "204 1 200 0"
check "204: no body, no Content-Length" "$(body_len "$work/nc.body") $(hdr "$work/nc.hdr" Content-Length)" "0 "
audited "$(rid "$work/nc.hdr")" 204 && ok "204 audited once (allow, 204)" || fail "204 audit"

# ---- HTTP/1.0 client: HEAD answered with the upstream's Content-Length
out=$("${C[@]}" -0 -I -D "$work/h10.hdr" -o /dev/null -w '%{http_code}' -H 'X-Raw: head-length' "$URL")
check "HTTP/1.0 HEAD: 200 with the upstream's Content-Length" "$out $(hdr "$work/h10.hdr" Content-Length)" "200 1234"

# ---- clean stop: no sanitizer report (sanitized builds) in custos' log
kill -TERM "$CU_PID"
wait "$CU_PID" 2>/dev/null
check "custos exit status after SIGTERM" "$?" 0
check "no sanitizer report" "$(grep -cE 'AddressSanitizer|LeakSanitizer|runtime error' "$work/custos.log")" 0

[ "$fails" -eq 0 ] || exit 1
echo "all bodiless answers under inspection passed"
