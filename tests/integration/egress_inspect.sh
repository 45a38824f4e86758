#!/usr/bin/env bash
# ctest: cost=60 (seconds, about: started first)
# Egress response inspection end to end: the real custos binary (custos up), curl through the
# egress listener, loopback data sources serving an e-mail address, a card number and an AWS
# key id. Rules with inspect: response: redact (the client gets the masks, the body is
# complete), deny (a 403 before any byte, or a cut-off transfer when the value comes late), log
# (body unchanged, findings audited); values split over many 3-byte chunks; the same inside
# intercepted HTTPS; a CONNECT tunnel that cannot be inspected is refused; the audit trail
# holds types and counts, never a value. JSON responses (application/json, NDJSON) inspected on
# their decoded values (JSON escapes), whole or line by line, invalid or oversized JSON refused
# with 502. Request bodies (inspect: request:): deny (403, the source sees nothing), redact (the
# source gets the masks with a fixed Content-Length), chunked, Expect: 100-continue, over the
# limit (413), invalid JSON (400), inside intercepted HTTPS; policy check of bad values. With
# CUSTOS_EGRESS_FORWARD=threads set by the caller (egress_inspect_threads.sh) the same checks
# run on the thread path.
set -u
. "${CUSTOS_SRC:?}/tests/integration/egress_lib.bash"
eg_init egins curl openssl python3 timeout
P_D=$(port); P_T=$(port); P_IN=$(port); P_EG=$(port)

cd "$W"
eg_upstream_pki

FX="$SRC/tests/integration/egress_upstream.py"
EGRESS_SINK="$W/sink.txt" python3 "$FX" data "$P_D" data & PIDS+=($!)
EGRESS_SINK="$W/sink_tls.txt" python3 "$FX" data "$P_T" tls srv.crt srv.key & PIDS+=($!)

SRCS=$(
	for s in red:redact den:deny lg:log plain:plain upd:up-deny upr:up-redact; do
		eg_source_yaml "${s%%:*}" "http://localhost:$P_D/${s#*:}/" internal
	done
	eg_source_yaml icpt "https://localhost:$P_T/" internal "intercept: true, ca_file: \"$W/upca.crt\""
	eg_source_yaml tun "https://127.0.0.1:$P_T/" internal
)
eg_m1_conf info "$SRCS" "  ca_dir: \"$W/ca\"
$EG_TIMEOUTS"
eg_m1_policy <<EOY
  red: { url: "http://localhost:$P_D/redact/", classification: internal }
  den: { url: "http://localhost:$P_D/deny/", classification: internal }
  lg: { url: "http://localhost:$P_D/log/", classification: internal }
  plain: { url: "http://localhost:$P_D/plain/", classification: internal }
  upd: { url: "http://localhost:$P_D/up-deny/", classification: internal }
  upr: { url: "http://localhost:$P_D/up-redact/", classification: internal }
  icpt: { url: "https://localhost:$P_T/", classification: internal }
  tun: { url: "https://127.0.0.1:$P_T/", classification: internal }
rules:
  - id: read-redacted
    effect: allow
    when: { direction: egress, data: [red, icpt], method: GET }
    inspect:
      response: { email: redact, payment_card: redact, aws_access_key: redact }
  - id: read-denied
    effect: allow
    when: { direction: egress, data: den, method: GET }
    inspect:
      response: { aws_access_key: deny, email: redact }
  - id: read-logged
    effect: allow
    when: { direction: egress, data: lg, method: GET }
    inspect:
      response: { email: log, payment_card: log }
  - id: read-plain
    effect: allow
    when: { direction: egress, data: plain, method: GET }
  - id: tunnel-inspected
    effect: allow
    when: { direction: egress, data: tun, method: CONNECT }
    inspect:
      response: { email: redact }
  - id: upload-denied
    effect: allow
    when: { direction: egress, data: [upd, icpt], method: [POST, PUT] }
    inspect:
      request: { aws_access_key: deny, email: redact }
  - id: upload-redacted
    effect: allow
    when: { direction: egress, data: upr, method: POST }
    inspect:
      request: { email: redact, payment_card: redact, aws_access_key: redact }
EOY
chmod 600 custos.yaml policy.yaml

eg_start "$P_D" "$P_T"

# event PATH: the (last) audit event of the request for PATH (exactly), waiting (30 s) for the
# batch writer
event() { eg_event "$1\""; }
# decisions EVENT: how many egress.decision events carry the request id of the completion
# EVENT (the decision, when there is one, is submitted before the completion, so it is in the
# trail once the completion is)
decisions() {
	local id
	id=$(sed -n 's/.*"request_id":"\(eg-[0-9a-f]*\)".*/\1/p' <<<"$1")
	[ -n "$id" ] || { echo none; return; }
	{ cat "$W"/audit/* 2>/dev/null; grep -h '"egress.decision' up.log | sed 's/.*audit: //'; } |
		sed 's/\\"/"/g' | grep '"egress.decision"' | grep -cF "\"request_id\":\"$id\""
}
has() { case "$1" in *"$2"*) return 0 ;; *) return 1 ;; esac; }
hasnt() { ! has "$1" "$2"; }
MAIL=jane.doe@example.com CARD="4111 1111 1111 1111" AKEY=AKIAIOSFODNN7EXAMPLE
EXPECT_RED=$(printf 'record 17\nmail: [REDACTED:EMAIL]\ncard: [REDACTED:PAYMENT_CARD]\nkey: [REDACTED:AWS_ACCESS_KEY]\nend of record')

# --- the fixture itself serves the values (else the checks below prove nothing)
direct=$(curl -s "http://localhost:$P_D/plain/pii-split")
check "fixture: the split body carries the values" \
	bash -c "[[ '$direct' == *'$MAIL'* && '$direct' == *'$CARD'* && '$direct' == *'$AKEY'* ]]"
check "no rule inspection: the body passes unchanged" \
	test "$(curl -s -x "$PX" "http://localhost:$P_D/plain/pii")" = "$direct"

# --- redact
got=$(curl -s -x "$PX" -D hdr.txt "http://localhost:$P_D/redact/pii"); rc=$?
check "redact: curl completes (exit $rc)" test $rc = 0
check "redact: the client receives the masks, the body complete" test "$got" = "$EXPECT_RED"
check "redact: re-framed chunked (the upstream's Content-Length dropped)" \
	bash -c "grep -qi '^transfer-encoding: chunked' hdr.txt && ! grep -qi '^content-length' hdr.txt"
ev=$(event /redact/pii)
check "redact: audited with inspect response:redact" has "$ev" '"inspect":"response:redact"'
check "redact: findings are types and counts" \
	bash -c "echo '$ev' | grep -q '\"type\":\"email\",\"count\":1' && echo '$ev' | grep -q '\"type\":\"payment_card\",\"count\":1'"
check "redact: decision allow" has "$ev" '"decision":"allow"'

# --- a value split over many chunks (3-byte pieces on the wire)
got=$(curl -s -x "$PX" "http://localhost:$P_D/redact/pii-split"); rc=$?
check "split: complete (exit $rc)" test $rc = 0
check "split: every value caught across chunk boundaries" test "$got" = "$EXPECT_RED"

# --- Unicode obfuscation (fullwidth @ and dot, no-break spaces, zero-width characters), the
# body in 3-byte chunks that cut through UTF-8 sequences: the same masks, the rest unchanged
curl -s -o uni.direct "http://localhost:$P_D/plain/pii-uni-split"
check "fixture: the obfuscated values are there, in Unicode" \
	bash -c "grep -q \$'jane.doe\xef\xbc\xa0example' uni.direct && grep -q \$'4111\xc2\xa01111' uni.direct && ! grep -q '$MAIL' uni.direct"
check "fixture: a 3-byte chunk boundary falls inside a UTF-8 sequence" \
	python3 -c "import sys; b=open('uni.direct','rb').read(); sys.exit(not any(0x80 <= b[i] < 0xC0 for i in range(0, len(b), 3)))"
got=$(curl -s -x "$PX" "http://localhost:$P_D/redact/pii-uni-split"); rc=$?
check "unicode split: complete (exit $rc)" test $rc = 0
check "unicode split: every obfuscated value masked, whole characters" test "$got" = "$EXPECT_RED"
ev=$(event /redact/pii-uni-split)
check "unicode split: audited with the findings" \
	bash -c "echo '$ev' | grep -q '\"type\":\"email\",\"count\":1' && echo '$ev' | grep -q '\"type\":\"aws_access_key\",\"count\":1'"

# --- deny: the value comes early, nothing had been sent: a 403
code=$(curl -s -o body.txt -D hdr.txt -w '%{http_code}' -x "$PX" "http://localhost:$P_D/deny/pii")
check "deny: 403 before any byte of the response" test "$code" = 403
check "deny: the value never reaches the client" bash -c "! grep -q '$AKEY' body.txt hdr.txt"
check "deny: the reason names the detector" grep -qi '^x-custos-reason: .*aws_access_key' hdr.txt
ev=$(event /deny/pii)
check "deny: audited as deny with the reason" \
	bash -c "echo '$ev' | grep -q '\"decision\":\"deny\"' && echo '$ev' | grep -q 'content inspection: aws_access_key'"
# Split, the first line is released before the key arrives: the head went out, the transfer
# is cut (curl reports it) and carries nothing of the key.
code=$(curl -s -o body.txt -w '%{http_code}' -x "$PX" "http://localhost:$P_D/deny/pii-split"); rc=$?
check "deny split over chunks: refused or cut (code $code, curl exit $rc), key withheld" \
	bash -c "{ [ $code = 403 ] || [ $rc -ne 0 ]; } && ! grep -q AKIA body.txt && ! grep -q '$MAIL' body.txt"

# --- deny, the value after more than the proxy buffers: the transfer is cut
curl -s -o late.txt -x "$PX" "http://localhost:$P_D/deny/pii-late"; rc=$?
check "late deny: the transfer is cut, not completed (curl exit $rc)" test $rc -ne 0
check "late deny: the client got the data before the value" grep -q 'filler line' late.txt
check "late deny: the value never reaches the client" bash -c "! grep -q '$AKEY' late.txt"
check "late deny: the e-mail before it was redacted" bash -c "! grep -q '$MAIL' late.txt"
ev=$(event /deny/pii-late)
check "late deny: audited as deny" has "$ev" '"decision":"deny"'

# --- an encoding that cannot be inspected: refused (fail closed)
code=$(curl -s -o body.txt -w '%{http_code}' -x "$PX" "http://localhost:$P_D/redact/pii-gzip")
check "content-encoding: refused with 403, nothing passed" \
	bash -c "[ $code = 403 ] && ! grep -q '$MAIL' body.txt"

# --- log: unchanged, audited
got=$(curl -s -x "$PX" "http://localhost:$P_D/log/pii")
check "log: body unchanged" test "$got" = "$direct"
ev=$(event /log/pii)
check "log: audited with inspect response:log and the findings" \
	bash -c "echo '$ev' | grep -q '\"inspect\":\"response:log\"' && echo '$ev' | grep -q '\"type\":\"email\",\"count\":1'"

# --- intercepted HTTPS: the same treatment
got=$(curl -s --cacert "$W/ca/ca.crt" -x "$PX" "https://localhost:$P_T/pii-split"); rc=$?
check "intercepted HTTPS: redacted, complete (exit $rc)" test "$got" = "$EXPECT_RED"
ev=$(event /pii-split)
check "intercepted HTTPS: audited as intercepted with findings" \
	bash -c "echo '$ev' | grep -q '\"kind\":\"intercepted\"' && echo '$ev' | grep -q '\"inspect\":\"response:redact\"'"

# --- a tunnel that is not intercepted cannot be inspected: the CONNECT is refused
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert upca.crt -x "$PX" "https://127.0.0.1:$P_T/pii")
hdr=$(curl -s -o /dev/null -D - --cacert upca.crt -x "$PX" "https://127.0.0.1:$P_T/pii" 2>/dev/null | tr -d '\r')
check "CONNECT without interception under inspect: response: refused" \
	bash -c "echo '$hdr' | grep -qi '^x-custos-reason: .*interception'"
check "CONNECT refused: curl gets no body (code $code)" bash -c "[ '$code' != 200 ]"

# --- JSON responses: the values written with JSON escapes are found in the decoded strings,
# the masks replace the escaped bytes, the card written as a number too; valid JSON comes out
EXPECT_JSON='{"id":17,"mail":"[REDACTED:EMAIL]","card":"[REDACTED:PAYMENT_CARD]","url":"https:\/\/x.example\/r\/17","num":"[REDACTED:PAYMENT_CARD]","key":"[REDACTED:AWS_ACCESS_KEY]"}'
direct=$(curl -s "http://localhost:$P_D/plain/pii-jsonesc")
check "fixture: the JSON body carries the values behind escapes" \
	bash -c "[[ '$direct' == *'jane.doe\\u0040example.com'* && '$direct' == *'4111\\u00201111'* && '$direct' == *'AKIA\\u0049OSF'* ]]"
for p in pii-jsonesc pii-jsonesc-split; do
	got=$(curl -s -x "$PX" -D hdr.txt "http://localhost:$P_D/redact/$p"); rc=$?
	check "JSON $p: complete (exit $rc)" test $rc = 0
	check "JSON $p: escaped values masked, the rest as sent" test "$got" = "$EXPECT_JSON"
	check "JSON $p: the result is JSON" python3 -c "import json,sys; json.loads(sys.argv[1])" "$got"
done
ev=$(event /redact/pii-jsonesc)
check "JSON: audited with the findings (two cards: the string and the number)" \
	bash -c "echo '$ev' | grep -q '\"type\":\"email\",\"count\":1' && echo '$ev' | grep -q '\"type\":\"payment_card\",\"count\":2' && echo '$ev' | grep -q '\"inspect\":\"response:redact\"'"
code=$(curl -s -o body.txt -D hdr.txt -w '%{http_code}' -x "$PX" "http://localhost:$P_D/deny/pii-jsonesc-split")
check "JSON deny: the escaped key found, 403 before any byte (code $code)" test "$code" = 403
check "JSON deny: nothing of the body, the reason names the detector" \
	bash -c "! grep -q -e AKIA -e jane body.txt && grep -qi '^x-custos-reason: .*aws_access_key' hdr.txt"
# a JSON body larger than the proxy's client buffer goes out whole once decided
curl -s -o large.json -x "$PX" "http://localhost:$P_D/redact/pii-jsonlarge"; rc=$?
check "JSON 1 MB: complete (exit $rc), the escaped value at its end masked, all rows there" \
	python3 -c "import json,sys; d=json.load(open('large.json')); sys.exit(not (d['mail'] == '[REDACTED:EMAIL]' and len(d['rows']) == 40000))"
curl -s -o large.json --cacert "$W/ca/ca.crt" -x "$PX" "https://localhost:$P_T/pii-jsonlarge"; rc=$?
check "JSON 1 MB, intercepted HTTPS: complete (exit $rc), masked" \
	python3 -c "import json,sys; d=json.load(open('large.json')); sys.exit(not (d['mail'] == '[REDACTED:EMAIL]' and len(d['rows']) == 40000))"
# NDJSON: line by line (the first lines go out before the last arrives)
got=$(curl -s -x "$PX" "http://localhost:$P_D/redact/pii-ndjson-split"); rc=$?
check "NDJSON: every line's escaped values masked (exit $rc)" test "$got" = "$(printf '%s\n' \
	'{"n":1,"mail":"[REDACTED:EMAIL]"}' '{"n":2,"card":"[REDACTED:PAYMENT_CARD]"}' \
	'{"n":3,"key":"[REDACTED:AWS_ACCESS_KEY]"}')"
curl -s -o body.txt -x "$PX" "http://localhost:$P_D/deny/pii-ndjson-split"; rc=$?
check "NDJSON deny on the third line: cut (curl exit $rc), key withheld, earlier lines masked" \
	bash -c "[ $rc -ne 0 ] && ! grep -q -e AKIA -e 'jane' body.txt && grep -q 'REDACTED:EMAIL' body.txt"
# invalid or oversized JSON under a JSON media type: refused (fail closed), never passed raw
code=$(curl -s -o body.txt -D hdr.txt -w '%{http_code}' -x "$PX" "http://localhost:$P_D/redact/pii-jsonbad")
check "invalid JSON: 502, nothing of the body (code $code)" \
	bash -c "[ $code = 502 ] && ! grep -q -e jane -e AKIA body.txt && grep -qi '^x-custos-reason: .*not valid JSON' hdr.txt"
ev=$(event /redact/pii-jsonbad)
check "invalid JSON: audited as error with the reason" \
	bash -c "echo '$ev' | grep -q '\"decision\":\"error\"' && echo '$ev' | grep -q 'not valid JSON'"
code=$(curl -s -o body.txt -D hdr.txt -w '%{http_code}' -x "$PX" "http://localhost:$P_D/redact/pii-jsonbig")
check "JSON past the inspection limit: 502 (code $code), reason names the limit" \
	bash -c "[ $code = 502 ] && grep -qi '^x-custos-reason: .*over 8388608 bytes' hdr.txt"

# --- request bodies (inspect: request:): what the model sends to a source
: >sink.txt
code=$(curl -s -o body.txt -D hdr.txt -w '%{http_code}' -x "$PX" -H 'Content-Type: text/plain' \
	--data-binary "exfil: $AKEY" "http://localhost:$P_D/up-deny/echo")
check "request deny: 403 (code $code), the reason names the detector" \
	bash -c "[ $code = 403 ] && grep -qi '^x-custos-reason: request body denied .*aws_access_key' hdr.txt"
ev=$(event /up-deny/echo)
check "request deny: audited as deny with the finding kind, no value" \
	bash -c "echo '$ev' | grep -q '\"decision\":\"deny\"' && echo '$ev' | grep -q '\"type\":\"aws_access_key\",\"count\":1' && echo '$ev' | grep -q '\"inspect\":\"request:deny response:off\"' && ! echo '$ev' | grep -q AKIA"
# the same key JSON-escaped, chunked, with Expect: 100-continue
code=$(printf '{"note":"AKIA\\u0049OSFODNN7EXAMPLE"}' | curl -s -o body.txt -w '%{http_code}' -x "$PX" \
	-H 'Content-Type: application/json' -H 'Transfer-Encoding: chunked' -H 'Expect: 100-continue' \
	--data-binary @- "http://localhost:$P_D/up-deny/echo-chunked")
check "request deny: an escaped key in a chunked JSON body, 403 (code $code)" test "$code" = 403
code=$(curl -s -o /dev/null -w '%{http_code}' -x "$PX" -X PUT -H 'Content-Type: text/plain' \
	--data-binary "put: $AKEY" "http://localhost:$P_D/up-deny/echo-put")
check "request deny: PUT too (code $code)" test "$code" = 403
check "request deny: the source never saw a denied body" bash -c "! grep -q -e AKIA -e up-deny sink.txt"

got=$(printf '{"to":"jane.doe\\u0040example.com","card":"4111 1111 1111 1111","n":4111111111111111}' |
	curl -s -D hdr.txt -x "$PX" -H 'Content-Type: application/json' --data-binary @- \
	"http://localhost:$P_D/up-redact/echo-json")
want='{"to":"[REDACTED:EMAIL]","card":"[REDACTED:PAYMENT_CARD]","n":"[REDACTED:PAYMENT_CARD]"}'
check "request redact: the source got the masks (escaped e-mail, card string and number)" test "$got" = "$want"
check "request redact: Content-Length fixed to the rewritten body" \
	grep -qi "^x-got-length: ${#want}"$'\r' hdr.txt
got=$(printf 'mail jane.doe@example.com key %s end' "$AKEY" | curl -s -D hdr.txt -x "$PX" \
	-H 'Content-Type: text/plain' -H 'Transfer-Encoding: chunked' --data-binary @- \
	"http://localhost:$P_D/up-redact/echo-chunked")
want='mail [REDACTED:EMAIL] key [REDACTED:AWS_ACCESS_KEY] end'
check "request redact, chunked: re-sent with a Content-Length, masks in place" \
	bash -c "[ '$got' = '$want' ] && grep -qi '^x-got-chunked: no' hdr.txt && grep -qi '^x-got-length: ${#want}'$'\r' hdr.txt"
ev=$(event /up-redact/echo-chunked)
check "request redact: audited with request:redact and the kinds" \
	bash -c "echo '$ev' | grep -q '\"inspect\":\"request:redact response:off\"' && echo '$ev' | grep -q '\"type\":\"email\",\"count\":1' && echo '$ev' | grep -q '\"decision\":\"allow\"'"
head -c 300000 /dev/zero | tr '\0' 'a' >clean.bin
check "request: a clean 300 KB body passes unchanged" \
	test "$(curl -s -x "$PX" -H 'Content-Type: text/plain' --data-binary @clean.bin "http://localhost:$P_D/up-redact/echo" | md5sum)" = "$(md5sum <clean.bin)"
got=$(curl -s -D hdr.txt -x "$PX" -H 'Content-Type: application/json' --data-binary '' "http://localhost:$P_D/up-redact/echo-empty")
check "request: an empty body goes with Content-Length: 0" grep -qi '^x-got-length: 0'$'\r' hdr.txt
code=$(printf '{"to": jane.doe@example.com' | curl -s -o /dev/null -w '%{http_code}' -x "$PX" \
	-H 'Content-Type: application/json' --data-binary @- "http://localhost:$P_D/up-redact/echo-bad")
check "request: invalid JSON under application/json refused with 400 (code $code)" test "$code" = 400
head -c $((9 << 20)) /dev/zero | tr '\0' 'b' >big.bin
code=$(curl -s -o /dev/null -D hdr.txt -w '%{http_code}' -x "$PX" --data-binary @big.bin "http://localhost:$P_D/up-redact/echo-big")
check "request over the inspection limit (Content-Length): 413 (code $code)" \
	bash -c "[ $code = 413 ] && grep -qi '^x-custos-reason: .*over 8388608 bytes' hdr.txt"
code=$(curl -s -o /dev/null -w '%{http_code}' -x "$PX" -H 'Transfer-Encoding: chunked' \
	--data-binary @big.bin "http://localhost:$P_D/up-redact/echo-bigchunked")
check "request over the inspection limit (chunked): 413 (code $code)" test "$code" = 413
# form bodies (application/x-www-form-urlencoded): names and values percent-decoded for
# inspection, the masks percent-encoded over the encoded bytes, invalid encoding 400
FORM=application/x-www-form-urlencoded
code=$(curl -s -o /dev/null -D hdr.txt -w '%{http_code}' -x "$PX" -H "Content-Type: $FORM" \
	--data-binary 'note=AKIA%49OSFODNN7EXAMPLE&x=1' "http://localhost:$P_D/up-deny/echo-form")
check "form deny: a key behind %49 found, 403 (code $code)" \
	bash -c "[ $code = 403 ] && grep -qi '^x-custos-reason: request body denied .*aws_access_key' hdr.txt"
got=$(curl -s -D hdr.txt -x "$PX" -H "Content-Type: $FORM" \
	--data-binary 'to=jane.doe%40example.com&c=%34%31%31%31+1111+1111+1111&ok=a+b%26c' \
	"http://localhost:$P_D/up-redact/echo-form")
want='to=%5BREDACTED%3AEMAIL%5D&c=%5BREDACTED%3APAYMENT_CARD%5D&ok=a+b%26c'
check "form redact: %40 and %34%31... decoded and masked, the masks percent-encoded ($got)" test "$got" = "$want"
check "form redact: the source decodes the masks, the other fields as sent" \
	python3 -c "import sys, urllib.parse as u; q=dict(u.parse_qsl(sys.argv[1])); sys.exit(not (q['to']=='[REDACTED:EMAIL]' and q['c']=='[REDACTED:PAYMENT_CARD]' and q['ok']=='a b&c'))" "$got"
check "form redact: Content-Length fixed" grep -qi "^x-got-length: ${#want}"$'\r' hdr.txt
code=$(curl -s -o /dev/null -D hdr.txt -w '%{http_code}' -x "$PX" -H "Content-Type: $FORM" \
	--data-binary 'to=jane.doe%4' "http://localhost:$P_D/up-redact/echo-form-bad")
check "form: invalid percent-encoding refused with 400 (code $code), the reason says so" \
	bash -c "[ $code = 400 ] && grep -qi '^x-custos-reason: .*not valid percent-encoding' hdr.txt"
# a body with a content-encoding cannot be inspected: 415
code=$(curl -s -o /dev/null -w '%{http_code}' -x "$PX" -H 'Content-Type: text/plain' \
	-H 'Content-Encoding: gzip' --data-binary 'not really gzip' "http://localhost:$P_D/up-redact/echo-gz")
check "request with a content-encoding: 415 (code $code)" test "$code" = 415
# audit order (docs/EGRESS.md "Audit events"): a refused body leaves its egress.request alone,
# no egress.decision (allow) before it; a body that went upstream has exactly one decision
for pth in /up-deny/echo /up-deny/echo-form /up-redact/echo-form-bad /up-redact/echo-bad /up-redact/echo-big /up-redact/echo-bigchunked \
	/up-redact/echo-gz; do
	ev=$(event "$pth")
	n=$(decisions "$ev")
	check "audit order: $pth refused, its completion alone (decisions: $n)" \
		bash -c "[ '$n' = 0 ] && echo '$ev' | grep -q '\"decision\":\"deny\"'"
done
n=$(decisions "$(event /up-redact/echo-chunked)")
check "audit order: a redacted body that went upstream has its decision (decisions: $n)" test "$n" = 1
check "request: the source saw no e-mail, no key, nothing refused" \
	bash -c "! grep -q -e jane -e AKIA -e echo-bad -e echo-big -e echo-form-bad sink.txt && grep -q 'REDACTED:EMAIL' sink.txt && grep -q 'REDACTED%3AEMAIL' sink.txt"
# intercepted HTTPS (the connection-thread path)
: >sink_tls.txt
code=$(curl -s -o body.txt -w '%{http_code}' --cacert "$W/ca/ca.crt" -x "$PX" -H 'Content-Type: text/plain' \
	--data-binary "exfil: $AKEY" "https://localhost:$P_T/echo-deny")
check "intercepted request deny: 403 (code $code)" test "$code" = 403
got=$(curl -s -D hdr.txt --cacert "$W/ca/ca.crt" -x "$PX" -H 'Content-Type: application/json' \
	-H 'Transfer-Encoding: chunked' --data-binary '{"m":"jane.doe\u0040example.com"}' "https://localhost:$P_T/echo-redact")
check "intercepted request redact: masks, Content-Length fixed" \
	bash -c "[ '$got' = '{\"m\":\"[REDACTED:EMAIL]\"}' ] && grep -qi '^x-got-length: 24' hdr.txt"
got=$(curl -s --cacert "$W/ca/ca.crt" -x "$PX" -H "Content-Type: $FORM" \
	--data-binary 'm=jane.doe%40example.com' "https://localhost:$P_T/echo-form")
check "intercepted form redact: decoded, masked percent-encoded ($got)" test "$got" = 'm=%5BREDACTED%3AEMAIL%5D'
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$W/ca/ca.crt" -x "$PX" -H "Content-Type: $FORM" \
	--data-binary 'm=%zz' "https://localhost:$P_T/echo-form-bad")
check "intercepted form: invalid percent-encoding 400 (code $code)" test "$code" = 400
# multipart parts decoded and the query string inspected there too (egress_inspect_decode.sh
# has the plain-HTTP checks)
printf 'key %s\n' "$AKEY" >mpkey.txt
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$W/ca/ca.crt" -x "$PX" \
	-F "doc=@mpkey.txt;encoder=base64" "https://localhost:$P_T/echo-mp-deny")
check "intercepted multipart: a key in a base64 part denied (code $code)" test "$code" = 403
code=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$W/ca/ca.crt" -x "$PX" -H 'Content-Type: text/plain' \
	--data-binary 'x' "https://localhost:$P_T/echo-q?to=jane.doe%40example.com&n=1")
check "intercepted query: the source got the mask percent-encoded (code $code)" \
	bash -c "[ $code = 200 ] && grep -qF 'POST /echo-q?to=%5BREDACTED%3AEMAIL%5D&n=1' sink_tls.txt"
check "intercepted: the source never saw the key or the address" bash -c "! grep -q -e AKIA -e jane sink_tls.txt"
n=$(decisions "$(event /echo-deny)")
check "audit order, intercepted: the refused body's completion alone (decisions: $n)" test "$n" = 0
n=$(decisions "$(event /echo-redact)")
check "audit order, intercepted: the redacted body's call has its decision (decisions: $n)" test "$n" = 1
# policy check: the request direction's values are checked at file:line:col
sed 's/request: { email: redact, payment_card: redact, aws_access_key: redact }/request: { email: block, payment_crd: redact }/' policy.yaml >bad.yaml
out=$("$BIN" policy check bad.yaml 2>&1); rc=$?
check "policy check: bad request: values are errors at file:line:col (exit $rc)" \
	bash -c "[ $rc = 1 ] && echo '$out' | grep -q 'bad.yaml:[0-9]*:[0-9]*: error:.*block' && echo '$out' | grep -q 'bad.yaml:[0-9]*:[0-9]*: error:.*payment_crd'"
cat >cases.yaml <<'EOY'
cases:
  - name: uploads to upd are inspected
    request: { direction: egress, model: m1, data: upd, method: POST }
    expect: allow
    obligations:
      request: { aws_access_key: deny, email: redact, payment_card: none }
      response: { email: none }
  - name: a wrong expectation fails
    request: { direction: egress, model: m1, data: upd, method: POST }
    expect: allow
    obligations:
      request: { email: deny }
  - name: an egress case written with the ingress key of the slot
    request: { direction: egress, model: m1, data: upd, method: POST }
    expect: allow
    obligations:
      prompt: { aws_access_key: redact }
EOY
out=$("$BIN" policy test policy.yaml cases.yaml 2>&1); rc=$?
check "policy test: request: obligations compared (exit $rc)" \
	bash -c "[ $rc = 1 ] && echo '$out' | grep -q '1 passed, 2 failed' && echo '$out' | grep -q 'request email: redact (want deny)'"
names_request() { grep -q "$2" <<<"$1" && ! grep -q "$3" <<<"$1"; } # TEXT WANT UNWANTED
check "policy test: an egress mismatch names the request direction, never prompt" \
	names_request "$out" 'request aws_access_key: deny (want redact)' prompt
out=$("$BIN" policy explain policy.yaml --request '{"direction":"egress","model":"m1","data":"upd","method":"POST"}' 2>&1)
check "policy explain: an egress rule's request obligations say request, not prompt" \
	names_request "$out" 'inspect request aws_access_key: deny' 'inspect prompt'

# --- SIGHUP: a new policy brings its own engine; the logged source is now redacted
sed -i 's/response: { email: log, payment_card: log }/response: { email: redact, payment_card: redact, aws_access_key: redact }/' policy.yaml
kill -HUP $UP
redacted() { got=$(curl -s -x "$PX" "http://localhost:$P_D/log/pii-split") && [ "$got" = "$EXPECT_RED" ]; }
eg_wait 60 redacted
check "SIGHUP: the reloaded rule's inspection applies (log -> redact)" test "$got" = "$EXPECT_RED"
check "SIGHUP: the other rules still apply" \
	test "$(curl -s -o /dev/null -w '%{http_code}' -x "$PX" "http://localhost:$P_D/deny/pii")" = 403

# --- the audit trail never holds a value (checked once the last request's event, the second
# for /deny/pii, is written)
denied_twice() { [ "$(eg_events | grep -c -F '"path":"/deny/pii"')" -ge 2 ]; }
check "audit trail: the second /deny/pii request is audited" eg_wait 30 denied_twice
check "audit trail: no e-mail, card number or key" \
	bash -c "! { cat $W/audit/* 2>/dev/null; grep egress.request $W/up.log; } | grep -q -e '$MAIL' -e '$CARD' -e '4111111111111111' -e '$AKEY'"
check "audit trail: the events are there" bash -c "[ \$({ cat $W/audit/* 2>/dev/null; grep egress.request $W/up.log; } | grep -c egress.request) -ge 10 ]"

eg_stop
if [ $FAILS -ne 0 ]; then
	echo "--- custos log (tail)"; grep -v '"egress.request' up.log | tail -40 | cut -c1-400
	echo "--- egress events"; eg_events | cut -c1-600
	echo "$FAILS check(s) failed"; exit 1
fi
echo "all egress inspection checks passed"
