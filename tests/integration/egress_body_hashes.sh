#!/usr/bin/env bash
# Body hashes on egress (docs/EGRESS.md "Body hashes"): under a policy `audit: bodies_hashed`
# (or `bodies`) the egress.request event of a call carries the SHA-256 of the request body the
# model sent, of the body forwarded when inspection rewrote it, and of the response body the
# model received, with ingress's field names. End to end: the real custos binary (custos up),
# curl through the egress listener in the model's place, loopback data sources (the
# egress_upstream.py fixture: POST /echo... answers the body it received). Checked: each digest
# equals sha256sum of the bytes curl sent or received, over Content-Length and chunked bodies
# both ways; a request body redacted by `inspect: request:` (under `audit: bodies`) gets a
# forwarded digest, other than the sent body's and equal to the source's copy; a call inside an
# intercepted tunnel is hashed on its plaintext; a CONNECT tunnel (opaque bytes), a rule at
# `metadata` and a response cut by inspection carry no digest (a cut one keeps its request's);
# LEEF carries them under ingress's keys; `custos audit verify` passes; `custos policy check`
# no longer warns about the level on egress (it warns about a CONNECT-only rule, and about
# `bodies` on egress). With CUSTOS_EGRESS_FORWARD=threads set by the caller
# (egress_body_hashes_threads.sh) the same checks run on the thread path.
set -u
. "${CUSTOS_SRC:?}/tests/integration/egress_lib.bash"
eg_init eghash curl openssl python3 sha256sum
P_D=$(port); P_T=$(port); P_IN=$(port); P_EG=$(port)

cd "$W"
eg_upstream_pki

FX="$SRC/tests/integration/egress_upstream.py"
EGRESS_SINK="$W/sink.txt" python3 "$FX" data "$P_D" data & PIDS+=($!)
python3 "$FX" data "$P_T" tls srv.crt srv.key & PIDS+=($!)

SRCS=$(
	for s in h r m c; do
		eg_source_yaml "$s" "http://localhost:$P_D/$s/" internal
	done
	eg_source_yaml icpt "https://localhost:$P_T/" internal "intercept: true, ca_file: \"$W/upca.crt\""
	eg_source_yaml tun "https://127.0.0.1:$P_T/" internal
)
eg_m1_conf info "$SRCS" "  ca_dir: \"$W/ca\"
$EG_TIMEOUTS"
eg_m1_policy <<EOY
  h: { url: "http://localhost:$P_D/h/", classification: internal }
  r: { url: "http://localhost:$P_D/r/", classification: internal }
  m: { url: "http://localhost:$P_D/m/", classification: internal }
  c: { url: "http://localhost:$P_D/c/", classification: internal }
  icpt: { url: "https://localhost:$P_T/", classification: internal }
  tun: { url: "https://127.0.0.1:$P_T/", classification: internal }
rules:
  - id: hashed
    effect: allow
    when: { direction: egress, data: [h, icpt], method: [GET, POST] }
    audit: bodies_hashed
  - id: redacted
    effect: allow
    when: { direction: egress, data: r, method: POST }
    inspect:
      request: { email: redact }
    audit: bodies
  - id: metadata
    effect: allow
    when: { direction: egress, data: m, method: GET }
  - id: cut
    effect: allow
    when: { direction: egress, data: c, method: GET }
    inspect:
      response: { aws_access_key: deny }
    audit: bodies_hashed
  - id: tunnel
    effect: allow
    when: { direction: egress, data: tun, method: CONNECT }
    audit: bodies_hashed
EOY
chmod 600 custos.yaml policy.yaml

# --- custos policy check: the level is acted on on egress now; what still holds is said
"$BIN" policy check policy.yaml >check.out 2>check.err || { cat check.err; bad "policy check refused the policy"; }
check "policy check: no warning that the egress level is not acted on ($(tr '\n' ' ' <check.err))" \
	bash -c "! grep -q 'not acted on' check.err && ! grep -q \"rule 'hashed'\" check.err && ! grep -q \"rule 'cut'\" check.err"
check "policy check: 'audit: bodies' on egress records hashes only (warned at its line)" \
	grep -qF "policy.yaml:22:12: warning: rule 'redacted' applies to egress only, where 'audit: bodies' records the bodies' SHA-256" check.err
check "policy check: a CONNECT-only rule hashes nothing (warned at its line)" \
	grep -qF "policy.yaml:35:12: warning: rule 'tunnel' applies to CONNECT only, where 'audit: bodies_hashed' hashes nothing" check.err

eg_start "$P_D" "$P_T"

EMPTY=$(printf '' | sha256sum | cut -d' ' -f1)
sha() { sha256sum "$1" | cut -d' ' -f1; }
# field EVENT NAME: the value of the string member NAME of EVENT, or "-" when it has none
field() {
	local v
	v=$(sed -n "s/.*\"$2\":\"\\([^\"]*\\)\".*/\\1/p" <<<"$1")
	echo "${v:--}"
}
# event PATH: the audit event of the request for PATH (exactly), waiting for the batch writer
event() { eg_event "$1\""; }
# digests NAME EVENT REQ FWD RESP: the event's three digests are REQ, FWD and RESP ("-": none)
digests() {
	check "$1: request_body_sha256 $3" test "$(field "$2" request_body_sha256)" = "$3"
	check "$1: request_body_forwarded_sha256 $4" test "$(field "$2" request_body_forwarded_sha256)" = "$4"
	check "$1: response_body_sha256 $5" test "$(field "$2" response_body_sha256)" = "$5"
}

# --- a GET, the response with a Content-Length: the empty request body's digest
curl -s -x "$PX" -o get.out "http://localhost:$P_D/h/pii"; rc=$?
check "get: complete (exit $rc), the body there" bash -c "[ $rc = 0 ] && grep -q 'end of record' get.out"
ev=$(event /h/pii)
check "get: audit_level bodies_hashed" test "$(field "$ev" audit_level)" = bodies_hashed
digests get "$ev" "$EMPTY" - "$(sha get.out)"

# --- a chunked response (3-byte chunks): the digest of the content, without the framing
curl -s -x "$PX" -D split.hdr -o split.out "http://localhost:$P_D/h/pii-split"; rc=$?
check "split: complete (exit $rc), chunked" \
	bash -c "[ $rc = 0 ] && grep -qi '^transfer-encoding: chunked' split.hdr && grep -q 'end of record' split.out"
digests split "$(event /h/pii-split)" "$EMPTY" - "$(sha split.out)"

# --- a request body with a Content-Length, echoed back by the source
python3 -c 'import sys; sys.stdout.buffer.write(bytes(range(256)) * 300)' >len.in
curl -s -x "$PX" -H 'Content-Type: application/octet-stream' --data-binary @len.in \
	-D len.hdr -o len.out "http://localhost:$P_D/h/echo-len"; rc=$?
check "length: complete (exit $rc), the source got it whole with its length" \
	bash -c "[ $rc = 0 ] && cmp -s len.in len.out && grep -qi '^x-got-length: 76800' len.hdr"
digests length "$(event /h/echo-len)" "$(sha len.in)" - "$(sha len.out)"

# --- a chunked request body: the digest of its content
printf 'chunked request body line %d\n' $(seq 1 2000) >chunk.in
curl -s -x "$PX" -H 'Content-Type: text/plain' -H 'Transfer-Encoding: chunked' \
	--data-binary @chunk.in -D chunk.hdr -o chunk.out "http://localhost:$P_D/h/echo-chunked"; rc=$?
check "chunked: complete (exit $rc), the source got it chunked" \
	bash -c "[ $rc = 0 ] && cmp -s chunk.in chunk.out && grep -qi '^x-got-chunked: yes' chunk.hdr"
digests chunked "$(event /h/echo-chunked)" "$(sha chunk.in)" - "$(sha chunk.out)"

# --- a request body redacted by inspect: request: (audit: bodies records hashes only): the
# forwarded digest is of what the source got (echoed back), not of what the model sent
printf 'please mail jane.doe@example.com the record\n' >red.in
curl -s -x "$PX" -H 'Content-Type: text/plain' --data-binary @red.in -o red.out \
	"http://localhost:$P_D/r/echo-red"; rc=$?
check "redact: complete (exit $rc), the source got the mask" \
	bash -c "[ $rc = 0 ] && grep -q 'REDACTED:EMAIL' red.out && ! grep -q jane.doe red.out"
ev=$(event /r/echo-red)
check "redact: audit_level bodies" test "$(field "$ev" audit_level)" = bodies
digests redact "$ev" "$(sha red.in)" "$(sha red.out)" "$(sha red.out)"
check "redact: the forwarded digest differs from the sent body's" \
	test "$(field "$ev" request_body_forwarded_sha256)" != "$(sha red.in)"
check "redact: the trail holds no body" bash -c "! grep -rq 'jane.doe' '$W/audit'"

# --- a rule at the metadata level: no digest, no level
curl -s -x "$PX" -o meta.out "http://localhost:$P_D/m/pii"; rc=$?
ev=$(event /m/pii)
check "metadata: complete (exit $rc), audited without audit_level" \
	bash -c "[ $rc = 0 ] && [ '$(field "$ev" audit_level)' = - ]"
digests metadata "$ev" - - -

# --- a response cut by inspection after bytes went out: no response digest (the request's
# is there: its body, empty, was read whole)
curl -s -x "$PX" -o cut.out "http://localhost:$P_D/c/pii-late"; rc=$?
check "cut: the transfer is cut (curl exit $rc)" test $rc != 0
ev=$(event /c/pii-late)
check "cut: audited as a deny" test "$(field "$ev" decision)" = deny
digests cut "$ev" "$EMPTY" - -

# --- inside an intercepted tunnel: the plaintext bodies are hashed
printf '{"q":"intercepted body %s"}' "$(seq -s, 1 500)" >icpt.in
curl -s --cacert "$W/ca/ca.crt" -x "$PX" -H 'Content-Type: application/json' \
	--data-binary @icpt.in -o icpt.out "https://localhost:$P_T/echo-icpt"; rc=$?
check "intercepted: complete (exit $rc), echoed" bash -c "[ $rc = 0 ] && cmp -s icpt.in icpt.out"
ev=$(event /echo-icpt)
check "intercepted: kind intercepted" test "$(field "$ev" kind)" = intercepted
digests intercepted "$ev" "$(sha icpt.in)" - "$(sha icpt.out)"

# --- a CONNECT tunnel: its bytes are opaque, no digest (and no level) in its event
curl -s --cacert upca.crt -x "$PX" -o tun.out "https://127.0.0.1:$P_T/pii-tun"; rc=$?
check "tunnel: complete (exit $rc)" bash -c "[ $rc = 0 ] && grep -q 'end of record' tun.out"
tun_event() { eg_events | grep '"kind":"connect"' | grep -F '"host":"127.0.0.1"' | tail -1 | grep .; }
eg_wait 30 tun_event >/dev/null
ev=$(tun_event)
check "tunnel: audited, without audit_level" bash -c "[ -n '$ev' ] && [ '$(field "$ev" audit_level)' = - ]"
digests tunnel "$ev" - - -

# --- LEEF carries the digests under ingress's keys
leef=$("$BIN" audit export --format leef "$W"/audit/*.jsonl 2>/dev/null)
check "LEEF: requestBodySha256 of an egress call" grep -qF "requestBodySha256=$(sha len.in)" <<<"$leef"
check "LEEF: requestBodyForwardedSha256 of an egress call" grep -qF "requestBodyForwardedSha256=$(sha red.out)" <<<"$leef"
check "LEEF: responseBodySha256 of an egress call" grep -qF "responseBodySha256=$(sha split.out)" <<<"$leef"

eg_stop
"$BIN" audit verify "$W/audit" >verify.out 2>&1; rc=$?
check "custos audit verify passes (exit $rc: $(tail -1 verify.out))" test $rc = 0
eg_done
