#!/usr/bin/env bash
# Egress inspection of the request path (docs/EGRESS.md "Content inspection", "The path"), end
# to end: the real custos binary (custos up), curl through the egress listener, a loopback data
# source over HTTP and HTTPS that records every target it receives. Under a rule with
# inspect: request:, each path segment is percent-decoded and inspected: a card number in a
# segment denied with 403 (the source sees nothing, the audited path carries the mask, never
# the number, and not the query), a key written %41KIA... found, a value under a redact rule
# refused with 403 (it cannot be masked without changing the resource), a log finding passed
# unchanged but masked in the audit, a clean path passed byte for byte; the same inside an
# intercepted HTTPS tunnel; then, reloaded to mode: shadow, the card passes as sent and is
# audited as a finding, shadow: true, the audited path masked. The audit trail and the log never
# hold a value. With CUSTOS_EGRESS_FORWARD=threads set by the caller
# (egress_inspect_path_threads.sh) the same checks run on the thread path.
set -u
. "${CUSTOS_SRC:?}/tests/integration/egress_lib.bash"
eg_init egpath curl openssl python3
P_IN=$(port); P_EG=$(port)

cd "$W"
eg_upstream_pki
eg_record_source

SRCS="$(eg_source_yaml up "http://localhost:$P_D/up/" internal)
$(eg_source_yaml icpt "https://localhost:$P_T/" internal "intercept: true, ca_file: \"$W/upca.crt\"")"
eg_m1_conf debug "$SRCS" "  ca_dir: \"$W/ca\"
$EG_TIMEOUTS"
# write_policy MODE: both sources under one rule that inspects requests
write_policy() {
	cat >policy.yaml <<EOY
version: 1
mode: $1
models:
  m1: { isolation: process }
data:
  up: { url: "http://localhost:$P_D/up/", classification: internal }
  icpt: { url: "https://localhost:$P_T/", classification: internal }
rules:
  - id: lookup
    effect: allow
    when: { direction: egress, data: [up, icpt], method: GET }
    inspect:
      request: { payment_card: deny, aws_access_key: deny, email: redact, ipv4: log }
EOY
	chmod 600 policy.yaml
}
write_policy enforce
chmod 600 custos.yaml

eg_start "$P_D" "$P_T"

# got TARGET: the source received exactly TARGET
got() { grep -qxF "$1" targets.txt 2>/dev/null; }
CARD=4111111111111111 AKEY=AKIAIOSFODNN7EXAMPLE MAIL=jane.doe@example.com
MCARD=%5BREDACTED%3APAYMENT_CARD%5D MKEY=%5BREDACTED%3AAWS_ACCESS_KEY%5D
MMAIL=%5BREDACTED%3AEMAIL%5D MIP=%5BREDACTED%3AIPV4%5D
get() { curl -s -o body.txt -D hdr.txt -w '%{http_code}' -x "$PX" "$@"; }

# --- plain HTTP
code=$(get "http://localhost:$P_D/up/v1/users/$CARD/orders?n=1")
check "card number in a path segment: 403 (code $code), the source saw nothing" \
	bash -c "[ $code = 403 ] && grep -qi '^x-custos-reason: request path denied by content inspection: payment_card detected' hdr.txt && ! grep -qF '$CARD' targets.txt"
ev=$(eg_event /up/v1/users/)
check "card in the path: audited deny, the segment masked, no query, no number" \
	bash -c "grep -q '\"decision\":\"deny\"' <<<\"\$1\" && grep -qF '\"path\":\"/up/v1/users/$MCARD/orders\"' <<<\"\$1\" && grep -q '\"type\":\"payment_card\"' <<<\"\$1\" && ! grep -q '$CARD' <<<\"\$1\"" _ "$ev"

code=$(get "http://localhost:$P_D/up/lookup/%41KIAIOSFODNN7EXAMPLE")
check "key written %41KIA... in the path: found, 403 (code $code), the source saw nothing" \
	bash -c "[ $code = 403 ] && grep -qi '^x-custos-reason: request path denied by content inspection: aws_access_key detected' hdr.txt && ! grep -qF 'KIAIOSFODNN7' targets.txt"
ev=$(eg_event /up/lookup/)
check "key in the path: audited with the mask, never the key" \
	bash -c "grep -qF '\"path\":\"/up/lookup/$MKEY\"' <<<\"\$1\" && ! grep -q 'KIAIOSFODNN7' <<<\"\$1\"" _ "$ev"

code=$(get "http://localhost:$P_D/up/mail/jane.doe%40example.com/inbox")
check "redact rule, value in the path: refused 403 (code $code), it cannot be masked; the source saw nothing" \
	bash -c "[ $code = 403 ] && grep -qi '^x-custos-reason: request path: email detected under a redact rule; a value in the request path cannot be masked without changing the resource' hdr.txt && ! grep -qF 'jane.doe' targets.txt"
ev=$(eg_event /up/mail/)
check "redact rule in the path: audited deny with the mask, inspect request:redact" \
	bash -c "grep -q '\"decision\":\"deny\"' <<<\"\$1\" && grep -qF '\"path\":\"/up/mail/$MMAIL/inbox\"' <<<\"\$1\" && grep -q 'request:redact' <<<\"\$1\"" _ "$ev"

code=$(get "http://localhost:$P_D/up/hosts/10.1.2.3/status")
check "log rule, value in the path: passed as sent (code $code)" \
	bash -c "[ $code = 200 ] && grep -qxF '/up/hosts/10.1.2.3/status' targets.txt"
ev=$(eg_event /up/hosts/)
check "log rule in the path: the finding audited, the audited path masked" \
	bash -c "grep -qF '\"path\":\"/up/hosts/$MIP/status\"' <<<\"\$1\" && grep -q '\"type\":\"ipv4\"' <<<\"\$1\" && ! grep -q '10.1.2.3' <<<\"\$1\"" _ "$ev"

CLEAN='/up/v1/items/abc-123/x+y%20z/~n?q=a%20b&n=1'
code=$(get "http://localhost:$P_D$CLEAN")
check "clean path: 200 (code $code), the source got it byte for byte" \
	bash -c "[ $code = 200 ] && grep -qxF '$CLEAN' targets.txt"

# --- inside an intercepted HTTPS tunnel (the connection-thread path)
code=$(get --cacert "$W/ca/ca.crt" "https://localhost:$P_T/t/users/$CARD")
check "intercepted HTTPS: card in the path 403 (code $code), the source saw nothing" \
	bash -c "[ $code = 403 ] && grep -qi '^x-custos-reason: request path denied by content inspection: payment_card' hdr.txt && ! grep -qF '/t/users/$CARD' targets.txt"
ev=$(eg_event /t/users/)
check "intercepted HTTPS: audited as intercepted, the segment masked" \
	bash -c "grep -q '\"kind\":\"intercepted\"' <<<\"\$1\" && grep -qF '\"path\":\"/t/users/$MCARD\"' <<<\"\$1\"" _ "$ev"
code=$(get --cacert "$W/ca/ca.crt" "https://localhost:$P_T/t/key/%41KIAIOSFODNN7EXAMPLE")
check "intercepted HTTPS: %41KIA... in the path 403 (code $code)" test "$code" = 403
code=$(get --cacert "$W/ca/ca.crt" "https://localhost:$P_T/t/clean/a%20b")
check "intercepted HTTPS: clean path passed as sent (code $code)" \
	bash -c "[ $code = 200 ] && grep -qxF '/t/clean/a%20b' targets.txt"

# --- shadow mode: nothing refused or changed, the path's findings audited, the path masked
write_policy shadow
kill -HUP $UP
shadow_on() { [ "$(get "http://localhost:$P_D/up/shadow/$CARD?k=v")" = 200 ]; }
eg_wait 60 shadow_on
check "shadow mode: the card in the path passes (200), sent as it came" got "/up/shadow/$CARD?k=v"
ev=$(eg_event /up/shadow/)
check "shadow mode: audited shadow, the finding counted, the audited path masked" \
	bash -c "grep -q '\"shadow\":true' <<<\"\$1\" && grep -q '\"type\":\"payment_card\"' <<<\"\$1\" && grep -qF '\"path\":\"/up/shadow/$MCARD?' <<<\"\$1\" && ! grep -q '$CARD' <<<\"\$1\"" _ "$ev"

eg_stop
check "the audit trail and the debug log never hold a value found in a path" \
	bash -c "! { cat $W/audit/* up.log 2>/dev/null | grep -q -e '$CARD' -e 'KIAIOSFODNN7' -e 'jane.doe' -e '10.1.2.3'; }"
if [ $FAILS -ne 0 ]; then
	echo "--- custos log (tail)"; grep -v '"egress.request' up.log | tail -30 | cut -c1-400
	echo "--- egress events"; eg_events | cut -c1-600
	echo "--- targets"; cat targets.txt
	echo "$FAILS check(s) failed"; exit 1
fi
echo "all egress path checks passed"
