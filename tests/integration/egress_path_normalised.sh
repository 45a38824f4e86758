#!/usr/bin/env bash
# The path a data source receives is the path the policy judged (docs/EGRESS.md "The path
# forwarded", docs/HTTP.md section 5a), end to end: the real custos binary (custos up), curl
# through the egress listener, a loopback data source over HTTP and HTTPS that records the
# request-target of every request line byte for byte. The egress proxy picks the source and
# evaluates the policy on the path as policy_path_normalize spells it (unreserved %XX decoded,
# runs of '/' merged); a source that neither decodes nor merges must get that spelling, not
# the model's: `//api//x1`, `/api/%78%32` and `/%61pi/x3?q=%2F//` arrive as `/api/x1`,
# `/api/x2` and `/api/x3?q=%2F//` (the query as sent), a reserved `%3a` as `%3A`; a query
# value redacted by content inspection arrives masked behind the normalised path; a value
# under a redact rule in an oddly spelled path is still refused and never reaches the source;
# a log finding passes normalised. The audited `path` stays the one the model sent (masked
# where inspection masks). The same inside an intercepted HTTPS tunnel. With
# CUSTOS_EGRESS_FORWARD=threads set by the caller (egress_path_normalised_threads.sh) the plain
# requests take the thread path.
set -u
. "${CUSTOS_SRC:?}/tests/integration/egress_lib.bash"
eg_init egnorm curl openssl python3
P_IN=$(port); P_EG=$(port)

cd "$W"
eg_upstream_pki
eg_record_source

SRCS="$(eg_source_yaml api "http://localhost:$P_D/api/" internal)
$(eg_source_yaml icpt "https://localhost:$P_T/t/" internal "intercept: true, ca_file: \"$W/upca.crt\"")"
eg_m1_conf debug "$SRCS" "  ca_dir: \"$W/ca\"
$EG_TIMEOUTS"
chmod 600 custos.yaml
cat >policy.yaml <<EOY
version: 1
mode: enforce
models:
  m1: { isolation: process }
data:
  api: { url: "http://localhost:$P_D/api/", classification: internal }
  icpt: { url: "https://localhost:$P_T/t/", classification: internal }
rules:
  - id: reads
    effect: allow
    when: { direction: egress, data: [api, icpt], method: GET }
    inspect:
      request: { email: redact, ipv4: log }
EOY
chmod 600 policy.yaml

eg_start "$P_D" "$P_T"

# got TARGET: the source's request line carried exactly TARGET
got() { grep -qxF -- "$1" lines.txt 2>/dev/null; }
# never TEXT: no request line the source received holds TEXT
never() { ! grep -qF -- "$1" lines.txt 2>/dev/null; }
# arrived TARGET: the last call was answered 200 and the source's request line carried TARGET
arrived() { [ "$code" = 200 ] && got "$1"; }
get() { curl -s --path-as-is -o body.txt -D hdr.txt -w '%{http_code}' -x "$PX" "$@"; }
MMAIL=%5BREDACTED%3AEMAIL%5D MIP=%5BREDACTED%3AIPV4%5D

# --- plain HTTP (the forward loops, or the thread path)
code=$(get "http://localhost:$P_D//api//x1")
check "'//api//x1': 200 (code $code), the source got /api/x1" \
	arrived /api/x1
check "'//api//x1': the source never saw the '//' spelling" never '//api//x1'
ev=$(eg_event //api//x1)
check "'//api//x1': audited allow with the path as sent" \
	bash -c "grep -q '\"decision\":\"allow\"' <<<\"\$1\" && grep -qF '\"path\":\"//api//x1\"' <<<\"\$1\"" _ "$ev"

code=$(get "http://localhost:$P_D/api/%78%32")
check "'/api/%78%32': 200 (code $code), the source got /api/x2" \
	arrived /api/x2
check "'/api/%78%32': the source never saw the encoded spelling" never '%78%32'

code=$(get "http://localhost:$P_D/%61pi/x3?q=%2F//")
check "'/%61pi/x3?q=%2F//': 200 (code $code), the source got /api/x3, the query as sent" \
	arrived '/api/x3?q=%2F//'
ev=$(eg_event /%61pi/x3)
check "'/%61pi/x3?q=...': audited with the path as sent" \
	grep -qF '"path":"/%61pi/x3?q=' <<<"$ev"

code=$(get "http://localhost:$P_D/api//y%7e%3a")
check "'/api//y%7e%3a': 200 (code $code), the source got /api/y~%3A" \
	arrived '/api/y~%3A'

code=$(get "http://localhost:$P_D//api//m1?to=jane.doe%40example.com&n=1")
check "redacted query value behind '//api//m1': the source got /api/m1 with the mask (code $code)" \
	arrived "/api/m1?to=$MMAIL&n=1"
check "redacted query value: the source never saw the address" never 'jane.doe'
ev=$(eg_event //api//m1)
check "redacted query value: audited with the path as sent, never the address" \
	bash -c "grep -qF '\"path\":\"//api//m1?to=' <<<\"\$1\" && grep -q 'request:redact' <<<\"\$1\" && ! grep -q 'jane.doe' <<<\"\$1\"" _ "$ev"

code=$(get "http://localhost:$P_D/%61pi//mail/jane.doe%40example.com")
check "redact rule, value in '/%61pi//mail/...': refused 403 (code $code), the source saw nothing" \
	bash -c "[ $code = 403 ] && grep -qi '^x-custos-reason: request path: email detected under a redact rule' hdr.txt && ! grep -qF /mail/ lines.txt"
ev=$(eg_event /%61pi//mail/)
check "redact rule in the path: audited deny with the segment masked, spelled as sent" \
	bash -c "grep -q '\"decision\":\"deny\"' <<<\"\$1\" && grep -qF '\"path\":\"/%61pi//mail/$MMAIL\"' <<<\"\$1\"" _ "$ev"

code=$(get "http://localhost:$P_D//api/hosts/10.1.2.3")
check "log rule, value in '//api/hosts/...': passed normalised (code $code)" \
	arrived /api/hosts/10.1.2.3
ev=$(eg_event //api/hosts/)
check "log rule in the path: audited with the path as sent, the segment masked" \
	bash -c "grep -qF '\"path\":\"//api/hosts/$MIP\"' <<<\"\$1\" && ! grep -q '10.1.2.3' <<<\"\$1\"" _ "$ev"

CLEAN='/api/items/abc-123/x+y%20z/~n?q=a%20b&n=1'
code=$(get "http://localhost:$P_D$CLEAN")
check "a path already in its one spelling: byte for byte (code $code)" \
	arrived "$CLEAN"

# --- inside an intercepted HTTPS tunnel (the connection-thread path)
code=$(get --cacert "$W/ca/ca.crt" "https://localhost:$P_T//t//x1")
check "intercepted '//t//x1': 200 (code $code), the source got /t/x1" \
	arrived /t/x1
ev=$(eg_event //t//x1)
check "intercepted '//t//x1': audited as intercepted, the path as sent" \
	bash -c "grep -q '\"kind\":\"intercepted\"' <<<\"\$1\" && grep -qF '\"path\":\"//t//x1\"' <<<\"\$1\"" _ "$ev"
code=$(get --cacert "$W/ca/ca.crt" "https://localhost:$P_T/t/%78%32")
check "intercepted '/t/%78%32': 200 (code $code), the source got /t/x2" \
	arrived /t/x2
code=$(get --cacert "$W/ca/ca.crt" "https://localhost:$P_T/%74/x3?q=%2F//")
check "intercepted '/%74/x3?q=%2F//': 200 (code $code), the source got /t/x3, the query as sent" \
	arrived '/t/x3?q=%2F//'
code=$(get --cacert "$W/ca/ca.crt" "https://localhost:$P_T//t//m1?to=jane.doe%40example.com&n=1")
check "intercepted: redacted query value behind '//t//m1' arrives masked (code $code)" \
	arrived "/t/m1?to=$MMAIL&n=1"
code=$(get --cacert "$W/ca/ca.crt" "https://localhost:$P_T//t/mail/jane.doe%40example.com")
check "intercepted: redact rule, value in '//t/mail/...': 403 (code $code)" test "$code" = 403
check "intercepted: the source never saw the address" never 'jane.doe'

eg_stop
if [ $FAILS -ne 0 ]; then
	echo "--- custos log (tail)"; grep -v '"egress.request' up.log | tail -30 | cut -c1-400
	echo "--- egress events"; eg_events | cut -c1-600
	echo "--- request lines the source received"; cat lines.txt
	echo "$FAILS check(s) failed"; exit 1
fi
echo "all egress normalised-path checks passed"
