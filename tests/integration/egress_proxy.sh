#!/usr/bin/env bash
# Egress proxy end to end: the real custos binary (custos up) with real clients (curl,
# openssl s_client, raw requests over bash's /dev/tcp, Python urllib in a model server) against
# real HTTP and TLS data sources on loopback. Covers allowed and denied sources, every SSRF
# form, non-canonical IPv4 literals, port and scheme confusion, redirects passed back unfollowed,
# CONNECT with SNI checks, interception with custos' CA (method/path policy inside HTTPS),
# certificate errors, response caps, the per-sandbox connection limit, and request-scoped
# attribution (the audit event names the ingress request and principal).
set -u
. "${CUSTOS_SRC:?}/tests/integration/egress_lib.bash"
eg_init egress curl openssl python3 timeout

P_HTTP=$(port); P_TLS=$(port); P_ICPT=$(port); P_SELF=$(port); P_HR=$(port); P_MODEL=$(port)
P_IN=$(port); P_EG=$(port); P_CLOSED=$(port)

# --- certificates: an upstream CA with a localhost server cert, a self-signed one, custos' CA
cd "$W"
eg_upstream_pki
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
	-addext subjectAltName=DNS:localhost -keyout self.key -out self.crt 2>/dev/null
check "ca init: key is 0600" test "$(stat -c %a "$W/ca/ca.key")" = 600
"$BIN" ca init "$W/ca" >/dev/null 2>&1
check "ca init refuses to overwrite" test $? -ne 0

# --- data sources and the model server
FX="$SRC/tests/integration/egress_upstream.py"
python3 "$FX" data "$P_HTTP" plain & PIDS+=($!)
python3 "$FX" data "$P_TLS" tls-direct srv.crt srv.key & PIDS+=($!)
python3 "$FX" data "$P_ICPT" tls-icpt srv.crt srv.key & PIDS+=($!)
python3 "$FX" data "$P_SELF" self-signed self.crt self.key & PIDS+=($!)
python3 "$FX" data "$P_HR" hr & PIDS+=($!)
python3 "$FX" model "$P_MODEL" "http://127.0.0.1:$P_EG" "http://localhost:$P_HR/employees" & PIDS+=($!)

KEY=test-key-alice
KEYSHA=$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)
HAVE_IP6LH=0
getent hosts ip6-localhost >/dev/null && HAVE_IP6LH=1

cat >custos.yaml <<EOY
version: 1
log: { level: info, format: json }
listeners:
  - id: local
    address: "127.0.0.1:$P_IN"
auth:
  api_keys:
    - { id: alice, sha256: "$KEYSHA" }
models:
  - id: m1
    upstream: { url: "http://127.0.0.1:$P_MODEL" }
data_sources:
  - { id: web, url: "http://localhost:$P_HTTP/", classification: internal, allow_private_addresses: true }
  - { id: capped, url: "http://127.0.0.1:$P_HTTP/big", classification: public, allow_private_addresses: true, max_response: 1KiB }
  - { id: slow, url: "http://localhost:$P_HTTP/hang", classification: public, allow_private_addresses: true, timeout: 1s }
  - { id: tls-direct, url: "https://localhost:$P_TLS/", classification: internal, allow_private_addresses: true }
  - { id: tls-icpt, url: "https://localhost:$P_ICPT/", classification: confidential, allow_private_addresses: true, intercept: true, ca_file: "$W/upca.crt" }
  - { id: self-signed, url: "https://localhost:$P_SELF/", classification: public, allow_private_addresses: true, intercept: true }
  - { id: hr, url: "http://localhost:$P_HR/", classification: confidential, allow_private_addresses: true }
  - { id: s-localhost, url: "http://localhost:$P_CLOSED/", classification: public }
  - { id: s-ip6lh, url: "http://ip6-localhost:$P_CLOSED/", classification: public }
  - { id: s-v6lo, url: "http://[::1]:$P_CLOSED/", classification: public }
  - { id: s-mapped, url: "http://[::ffff:127.0.0.1]:$P_CLOSED/", classification: public }
  - { id: s-compat, url: "http://[::127.0.0.1]:$P_CLOSED/", classification: public }
  - { id: s-nat64, url: "http://[64:ff9b::7f00:1]:$P_CLOSED/", classification: public }
  - { id: s-6to4, url: "http://[2002:7f00:1::1]:$P_CLOSED/", classification: public }
  - { id: s-lit, url: "http://127.0.0.1:$P_CLOSED/", classification: public }
  - { id: s-private, url: "http://10.1.2.3/", classification: public }
  - { id: s-meta, url: "http://169.254.169.254/", classification: public, allow_private_addresses: true }
  - { id: s-meta6, url: "http://[fd00:ec2::254]/", classification: public, allow_private_addresses: true }
  - { id: s-meta-mapped, url: "http://[::ffff:169.254.169.254]/", classification: public, allow_private_addresses: true }
  - { id: s-zero, url: "http://0.0.0.0:$P_CLOSED/", classification: public, allow_private_addresses: true }
  - { id: s-tls, url: "https://127.0.0.1:$P_TLS/", classification: public }
egress:
  port: $P_EG
  ca_dir: "$W/ca"
  max_connections_per_sandbox: 16
  timeouts: { connect: 2s, read: 10s, idle: 10s }
audit:
  dir: "$W/audit"
policy:
  file: "$W/policy.yaml"
EOY
cat >policy.yaml <<EOY
version: 1
mode: enforce
principals:
  alice: { match: { api_key_sha256: "$KEYSHA" }, groups: [hr] }
models:
  m1: { isolation: process }
data:
  web: { url: "http://localhost:$P_HTTP/", classification: internal }
  capped: { url: "http://127.0.0.1:$P_HTTP/big", classification: public }
  slow: { url: "http://localhost:$P_HTTP/hang", classification: public }
  tls-direct: { url: "https://localhost:$P_TLS/", classification: internal }
  tls-icpt: { url: "https://localhost:$P_ICPT/", classification: confidential }
  self-signed: { url: "https://localhost:$P_SELF/", classification: public }
  hr: { url: "http://localhost:$P_HR/", classification: confidential }
  s-localhost: { url: "http://localhost:$P_CLOSED/", classification: public }
  s-ip6lh: { url: "http://ip6-localhost:$P_CLOSED/", classification: public }
  s-v6lo: { url: "http://[::1]:$P_CLOSED/", classification: public }
  s-mapped: { url: "http://[::ffff:127.0.0.1]:$P_CLOSED/", classification: public }
  s-compat: { url: "http://[::127.0.0.1]:$P_CLOSED/", classification: public }
  s-nat64: { url: "http://[64:ff9b::7f00:1]:$P_CLOSED/", classification: public }
  s-6to4: { url: "http://[2002:7f00:1::1]:$P_CLOSED/", classification: public }
  s-lit: { url: "http://127.0.0.1:$P_CLOSED/", classification: public }
  s-private: { url: "http://10.1.2.3/", classification: public }
  s-meta: { url: "http://169.254.169.254/", classification: public }
  s-meta6: { url: "http://[fd00:ec2::254]/", classification: public }
  s-meta-mapped: { url: "http://[::ffff:169.254.169.254]/", classification: public }
  s-zero: { url: "http://0.0.0.0:$P_CLOSED/", classification: public }
  s-tls: { url: "https://127.0.0.1:$P_TLS/", classification: public }
rules:
  - id: chat
    effect: allow
    when: { direction: ingress, principal: alice, model: m1 }
  - id: read-web
    effect: allow
    when: { direction: egress, data: [web, capped, slow, self-signed], method: [GET, HEAD] }
  - id: upload-web
    effect: allow
    when: { direction: egress, data: web, method: POST, path: { prefix: /upload/ } }
  - id: tunnel-tls-direct
    effect: allow
    when: { direction: egress, data: [tls-direct, s-tls], method: CONNECT }
  - id: icpt-api-read
    effect: allow
    when: { direction: egress, data: tls-icpt, method: GET, path: { prefix: /api/ } }
  - id: hr-for-hr
    effect: allow
    when: { direction: egress, data: hr, method: GET, principal.groups: hr }
  - id: ssrf-targets-allowed-by-policy
    effect: allow
    when: { direction: egress, data: [s-localhost, s-ip6lh, s-v6lo, s-mapped, s-compat, s-nat64, s-6to4, s-lit, s-private, s-meta, s-meta6, s-meta-mapped, s-zero] }
EOY
chmod 600 custos.yaml policy.yaml

eg_start "$P_IN" "$P_TLS" "$P_MODEL"
# status URL [curl args...]: the HTTP status custos (or the source) answered
status() { local u=$1; shift; curl -s -o /dev/null -w '%{http_code}' -x "$PX" "$@" "$u"; }
reason() { local u=$1; shift; curl -s -o /dev/null -D - -x "$PX" "$@" "$u" | tr -d '\r' | sed -n 's/^X-Custos-Reason: //p'; }
# raw HOSTPORT: a request with exactly this authority (curl would normalise it)
raw() {
	exec 3<>/dev/tcp/127.0.0.1/$P_EG
	printf 'GET http://%s/ HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$1" "$1" >&3
	timeout 30 cat <&3 | tr -d '\r'
	exec 3<&-
}
# The audit writer batches: an event may land a while after the response.
# audited TEXT DECISION: waits (30 s) for an egress event holding TEXT with that decision.
audited_now() { eg_events | grep -F "$1" | grep -q "\"decision\":\"$2\""; }
audited() { eg_wait 30 audited_now "$1" "$2"; }
# events_reach N REGEX: waits (30 s) until at least N egress events match REGEX (before
# counting them, or before checking that some event is absent).
events_at_least() { [ "$(eg_events | grep -c -- "$2")" -ge "$1" ]; }
events_reach() { eg_wait 30 events_at_least "$1" "$2"; }

# --- plain HTTP
check "allowed source: 200 with the source's body" \
	test "$(curl -s -x "$PX" "http://localhost:$P_HTTP/hello")" = "hello from plain /hello"
hello_audited() { audited_now '"path":"/hello"' allow && eg_events | grep -F '/hello' | grep -q '"data_source":"web","classification":"internal"'; }
check "allowed source audited as allow with data source and classification" eg_wait 30 hello_audited
check "method outside the rule (POST) denied 403" test "$(status "http://localhost:$P_HTTP/x" -d a=b)" = 403
check "unknown host denied 403 with reason" \
	bash -c "[ \"\$(curl -s -o /dev/null -D - -x $PX http://unknown.example/ | tr -d '\r' | sed -n 's/^X-Custos-Reason: //p')\" = 'no data source for http://unknown.example:80' ]"
check "unknown destination audited" audited '"host":"unknown.example"' deny
# redirects: passed back unchanged, never followed
R=$(curl -s -D - -o /dev/null -x "$PX" "http://localhost:$P_HTTP/redirect" | tr -d '\r')
check "3xx passed back to the client" grep -q '^HTTP/1.1 302' <<<"$R"
check "Location unchanged (metadata URL not fetched by custos)" \
	grep -q '^Location: http://169.254.169.254/latest/meta-data/' <<<"$R"
# The redirect's own event is written after any fetch custos would have made for it.
check "the redirect audited" audited '"path":"/redirect"' allow
check "no egress event for the redirect target" bash -c "! ( $(declare -f eg_events); W=$W; eg_events | grep -q '\"host\":\"169.254.169.254\",\"port\":80,\"path\":\"/latest' )"
check "proxy headers are not forwarded" \
	bash -c "! curl -s -x $PX -H 'X-Custos-Request-Id: abc' -H 'Proxy-Authorization: Basic eDp5' http://localhost:$P_HTTP/echo-headers | grep -qi -e proxy-authorization -e x-custos-request-id"
check "chunked response relayed" test "$(curl -s -x "$PX" "http://localhost:$P_HTTP/chunked")" = "hello world"
check "close-delimited response relayed (re-framed chunked)" \
	test "$(curl -s -x "$PX" "http://localhost:$P_HTTP/close")" = "close-delimited body"
head -c 300000 /dev/zero | tr '\0' x >body.bin
check "request body (300 kB) forwarded to an allowed POST path" \
	test "$(curl -s -x "$PX" --data-binary @body.bin "http://localhost:$P_HTTP/upload/x")" = "posted 300000"
check "a kept upstream connection the source closed is replaced (bodyless request retried once)" \
	test "$(curl -s -x "$PX" "http://localhost:$P_HTTP/drop" "http://localhost:$P_HTTP/after-drop")" = "$(printf 'dropping\nhello from plain /after-drop')"
check "keep-alive: two requests on one connection" \
	test "$(curl -s -x "$PX" "http://localhost:$P_HTTP/a" "http://localhost:$P_HTTP/b" | wc -l)" = 2

# --- port and scheme confusion
check "port confusion: allowed name, other port -> 403" \
	bash -c "curl -s -D - -o /dev/null -x $PX http://localhost:$P_TLS/ | tr -d '\r' | grep -q 'X-Custos-Reason: port $P_TLS (http) is not a data source.s port on localhost'"
check "port confusion audited" audited "\"port\":$P_TLS,\"path\":\"/\"" deny
check "scheme confusion: CONNECT to the plain source's port -> 403" \
	test "$(curl -s -o /dev/null -w '%{http_connect}' -x "$PX" -p "http://localhost:$P_HTTP/")" = 403
check "path outside the source's prefix -> 403" test "$(status "http://127.0.0.1:$P_HTTP/other")" = 403
check "origin-form request to the proxy -> 400" \
	bash -c "exec 3<>/dev/tcp/127.0.0.1/$P_EG; printf 'GET / HTTP/1.1\r\nHost: localhost:$P_HTTP\r\n\r\n' >&3; timeout 30 head -1 <&3 | grep -q ' 400 '"
check "https:// in absolute form -> 400 (CONNECT only)" \
	bash -c "exec 3<>/dev/tcp/127.0.0.1/$P_EG; printf 'GET https://localhost:$P_TLS/ HTTP/1.1\r\nHost: localhost:$P_TLS\r\n\r\n' >&3; timeout 30 head -1 <&3 | grep -q ' 400 '"

# --- SSRF: every form denied with an SSRF reason and audited, although policy allows them
ssrf() { # ssrf DESC URL CLASS
	local r; r=$(reason "$2")
	if grep -q "^SSRF: .* a $3 address" <<<"$r" && [ "$(status "$2")" = 403 ]; then ok "SSRF $1 -> 403 ($r)"; else bad "SSRF $1: got '$r'"; fi
}
ssrf "localhost" "http://localhost:$P_CLOSED/" loopback
if [ $HAVE_IP6LH = 1 ]; then ssrf "ip6-localhost" "http://ip6-localhost:$P_CLOSED/" loopback
else echo "ok   - SSRF ip6-localhost # SKIP: not in /etc/hosts"; fi
ssrf "[::1]" "http://[::1]:$P_CLOSED/" loopback
ssrf "IPv4-mapped [::ffff:127.0.0.1]" "http://[::ffff:127.0.0.1]:$P_CLOSED/" loopback
ssrf "IPv4-compatible [::127.0.0.1]" "http://[::127.0.0.1]:$P_CLOSED/" loopback
ssrf "NAT64 [64:ff9b::7f00:1]" "http://[64:ff9b::7f00:1]:$P_CLOSED/" loopback
ssrf "6to4 [2002:7f00:1::1]" "http://[2002:7f00:1::1]:$P_CLOSED/" loopback
ssrf "127.0.0.1" "http://127.0.0.1:$P_CLOSED/" loopback
ssrf "10.1.2.3" "http://10.1.2.3/" private
ssrf "metadata 169.254.169.254 (even with allow_private)" "http://169.254.169.254/" metadata
ssrf "metadata [fd00:ec2::254] (even with allow_private)" "http://[fd00:ec2::254]/" metadata
ssrf "mapped metadata [::ffff:169.254.169.254]" "http://[::ffff:169.254.169.254]/" metadata
ssrf "0.0.0.0 (even with allow_private)" "http://0.0.0.0:$P_CLOSED/" unspecified
check "SSRF over CONNECT (127.0.0.1, loopback) -> 403" \
	test "$(curl -s -o /dev/null -w '%{http_connect}' -x "$PX" "https://127.0.0.1:$P_TLS/")" = 403
check "SSRF over CONNECT audited" audited '"kind":"connect","method":"CONNECT","scheme":"https","host":"127.0.0.1"' deny
for h in 2130706433 0177.0.0.1 0x7f.1 127.1 0x7f000001 127.0.0.1. 017700000001; do
	R=$(raw "$h:$P_HTTP")
	if grep -q '^HTTP/1.1 403' <<<"$R" && grep -q "X-Custos-Reason: non-canonical IPv4 literal" <<<"$R"; then
		ok "non-canonical literal $h -> 403"
	else bad "non-canonical literal $h: $(head -1 <<<"$R")"; fi
done
exec 3<>/dev/tcp/127.0.0.1/$P_EG
printf 'CONNECT 2130706433:%s HTTP/1.1\r\nHost: 2130706433:%s\r\n\r\n' $P_TLS $P_TLS >&3
check "non-canonical literal in CONNECT -> 403" bash -c "timeout 30 head -1 <&3 | grep -q ' 403 '"
exec 3<&-
events_reach 22 '"reason":"SSRF: '
N_SSRF=$(eg_events | grep -c '"reason":"SSRF: ')
check "every SSRF denial audited ($N_SSRF events)" test "$N_SSRF" -ge 22
check "every non-canonical literal audited" events_reach 8 'non-canonical IPv4 literal'

# --- TLS without interception: CONNECT decided on host:port, SNI must match
check "CONNECT tunnel to an allowed TLS source (client verifies the source's cert)" \
	test "$(curl -s --cacert upca.crt -x "$PX" "https://localhost:$P_TLS/t")" = "hello from tls-direct /t"
check "tunnel audited as allow, status 200" audited '"kind":"connect","method":"CONNECT","scheme":"https","host":"localhost","port":'"$P_TLS" allow
check "HTTPS_PROXY environment variable works the same" \
	bash -c "HTTPS_PROXY=$PX curl -s --cacert upca.crt https://localhost:$P_TLS/env | grep -q 'hello from tls-direct /env'"
timeout 10 openssl s_client -proxy 127.0.0.1:$P_EG -connect localhost:$P_TLS -servername evil.example \
	-CAfile upca.crt </dev/null >sni.out 2>&1
check "SNI different from the CONNECT host: handshake refused (alert unrecognized_name)" \
	bash -c "grep -q 'no peer certificate available' sni.out && grep -q 'unrecognized name' sni.out"
check "SNI mismatch audited" events_reach 1 "TLS SNI 'evil.example' does not match CONNECT host 'localhost'"
check "CONNECT to an unknown port -> 403" test "$(curl -s -o /dev/null -w '%{http_connect}' -x "$PX" -p "http://localhost:$P_CLOSED/")" = 403
check "CONNECT port and scheme confusion audited" \
	events_reach 2 '"kind":"connect".*is not a data source.s port on localhost'

# --- TLS interception: custos' CA in the client's trust store
check "intercepted: allowed path readable with the custos CA" \
	test "$(curl -s --cacert "$W/ca/ca.crt" -x "$PX" "https://localhost:$P_ICPT/api/x")" = "hello from tls-icpt /api/x"
check "intercepted: the client sees custos' leaf, not the source's" \
	bash -c "curl -sv --cacert $W/ca/ca.crt -x $PX https://localhost:$P_ICPT/api/x 2>&1 | grep -q 'issuer: CN=custos egress interception CA'"
check "intercepted: path policy applies inside HTTPS (403)" \
	test "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$W/ca/ca.crt" -x "$PX" "https://localhost:$P_ICPT/private")" = 403
check "intercepted: method policy applies inside HTTPS (POST 403)" \
	test "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$W/ca/ca.crt" -x "$PX" -d x=1 "https://localhost:$P_ICPT/api/x")" = 403
check "intercepted requests audited with kind intercepted" audited '"kind":"intercepted","method":"GET","scheme":"https","host":"localhost","port":'"$P_ICPT"',"path":"/api/x"' allow
check "intercepted denial audited with its reason" audited '"kind":"intercepted","method":"GET","scheme":"https","host":"localhost","port":'"$P_ICPT"',"path":"/private"' deny
curl -s -o /dev/null --cacert upca.crt -x "$PX" "https://localhost:$P_ICPT/api/x"
check "intercepted: a client without the custos CA refuses the leaf (curl exit 60)" test $? = 60
# Only tls-icpt is confidential so far: no event carries taint 2 (confidential) before its read.
check "sandbox taint raised to confidential after the read" events_reach 1 '"taint":2'

# --- certificate errors upstream: 502 with the reason, audited
R=$(curl -s -D - -o /dev/null --cacert "$W/ca/ca.crt" -x "$PX" "https://localhost:$P_SELF/" | tr -d '\r')
check "self-signed upstream without its CA configured -> 502" grep -q '^HTTP/1.1 502' <<<"$R"
check "502 names the certificate failure" grep -q 'X-Custos-Reason: upstream certificate verification failed: self.signed certificate' <<<"$R"
check "certificate failure audited" audited 'upstream certificate verification failed' error

# --- limits
check "response above max_response -> 502" test "$(status "http://127.0.0.1:$P_HTTP/big")" = 502
check "response cap audited" audited 'exceeds max_response 1024' error
check "a source that does not answer within its timeout -> 502" \
	test "$(curl -s -o /dev/null -w '%{http_code}' -x "$PX" "http://localhost:$P_HTTP/hang")" = 502
check "timeout audited against the slow source" \
	events_reach 1 '"path":"/hang".*"data_source":"slow".*"decision":"error"'
exec 5<>/dev/tcp/127.0.0.1/$P_EG 6<>/dev/tcp/127.0.0.1/$P_EG 7<>/dev/tcp/127.0.0.1/$P_EG 8<>/dev/tcp/127.0.0.1/$P_EG
FDS=()
for i in $(seq 1 12); do exec {fd}<>/dev/tcp/127.0.0.1/$P_EG; FDS+=($fd); done
# The 16 connections count once custos has accepted them: until then a 17th may still pass.
status_is() { [ "$(status "http://localhost:$P_HTTP/")" = "$1" ]; }
check "connection 17 from one sandbox -> 503" eg_wait 30 status_is 503
check "connection limit audited" audited 'too many connections from this sandbox' deny
exec 5<&- 6<&- 7<&- 8<&-
for fd in "${FDS[@]}"; do exec {fd}<&-; done
# ... and stop counting once custos has seen them closed.
check "below the limit again -> 200" eg_wait 30 status_is 200

# --- request-scoped egress: attribution to the ingress request and its principal
check "hr denied to the model alone (no end user in flight)" test "$(status "http://localhost:$P_HR/employees")" = 403
OUT=$(curl -s -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
	-d '{"model":"m1","messages":[{"role":"user","content":"who works here?"}]}' \
	"http://127.0.0.1:$P_IN/v1/chat/completions")
check "ingress request answered with the hr data the model read" grep -q 'hello from hr /employees' <<<"$OUT"
HR_ALLOW='"host":"localhost","port":'"$P_HR"'.*"decision":"allow"'
check "the model's read of hr audited" events_reach 1 "$HR_ALLOW"
EV=$(eg_events | grep '"host":"localhost","port":'"$P_HR" | grep '"decision":"allow"' | tail -1)
check "egress event carries the ingress request id" grep -q '"ingress_request_id":"[0-9a-zA-Z-]\{8,\}"' <<<"$EV"
check "egress event carries the principal (alice)" grep -q '"attribution":"sole-in-flight","ingress_request_id":"[^"]*","principal":"alice"' <<<"$EV"
IID=$(sed -n 's/.*"ingress_request_id":"\([^"]*\)".*/\1/p' <<<"$EV")
# The ingress event is submitted when the ingress request ends, after the egress one: wait for it.
ingress_event_has_iid() { { cat "$W"/audit/* 2>/dev/null; cat "$W/up.log"; } | grep -v egress.request | grep -q "$IID"; }
check "the ingress event has the same request id" eg_wait 30 ingress_event_has_iid
OUT=$(curl -s -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
	-d '{"model":"m1","messages":[{"role":"user","content":"forward-request-id please"}]}' \
	"http://127.0.0.1:$P_IN/v1/chat/completions")
check "the model's second read of hr audited" events_reach 2 "$HR_ALLOW"
EV=$(eg_events | grep '"host":"localhost","port":'"$P_HR" | grep '"decision":"allow"' | tail -1)
check "a model forwarding X-Custos-Request-Id is attributed by header" \
	grep -q '"attribution":"header","ingress_request_id":"[^"]*","principal":"alice"' <<<"$EV"

# --- SIGHUP reloads the egress policy; a broken policy never replaces the one in force
sed -i 's/data: \[web, capped, slow, self-signed\], method: \[GET, HEAD\]/data: [capped, slow, self-signed], method: [GET, HEAD]/' policy.yaml
kill -HUP $UP
web_status_is() { [ "$(status "http://localhost:$P_HTTP/r")" = "$1" ]; }
check "SIGHUP: the new egress policy is in force (web no longer readable)" eg_wait 60 web_status_is 403
cp policy.yaml policy.good
printf 'rules: [ { id: broken\n' >>policy.yaml
NF=$(grep -c 'reload failed' up.log)
kill -HUP $UP
failed_reloads_above() { [ "$(grep -c 'reload failed' up.log)" -gt "$1" ]; }
check "SIGHUP with a broken policy: the reload fails (log)" eg_wait 60 failed_reloads_above "$NF"
check "SIGHUP with a broken policy: the policy in force stays" \
	test "$(status "http://localhost:$P_HTTP/r")" = 403 -a "$(status "http://127.0.0.1:$P_HTTP/big")" = 502
cp policy.good policy.yaml

eg_stop "on SIGTERM"
if [ $FAILS -ne 0 ]; then
	echo "--- custos log (tail)"; grep -v '"egress.request' up.log | tail -60 | cut -c1-400
	echo "$FAILS check(s) failed"; exit 1
fi
echo "all egress checks passed"
