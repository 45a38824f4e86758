#!/usr/bin/env bash
# Every refusal of the egress proxy leaves an audit event (docs/EGRESS.md "Refusals and their
# events"), end to end: the real custos binary (custos up), a raw client (egress_refusals_client.py:
# heads curl cannot send) through the egress listener, a loopback HTTPS data source intercepted
# with custos' CA. Checked here, the refusals that were once silent: a plain request head the
# client cut off (audited, 400, nothing answered), one that stalls for
# egress.timeouts.idle (408 answered, audited), and inside an intercepted tunnel a malformed
# head (400 answered, audited) and a head cut off by the client (audited). With
# CUSTOS_EGRESS_FORWARD=threads set by the caller (egress_refusals_audited_threads.sh) the same
# checks run on the thread path. Then refusals that were audited already but whose events no
# test read: a malformed plain head (400), a head past 32 KiB (431), an origin-form target and
# an https:// target in absolute form (400), a source whose port refuses the connection (502),
# bytes sent behind a CONNECT before its answer (400), an absolute-form target inside an
# intercepted tunnel (400); and a source that fails (egress_refusals_origin.py): a response
# head cut off or past 32 KiB (502), a body cut short, with a malformed chunk or stalled past
# the source's timeout (cut: the client gets a short body; audited as error, once allow); a
# client without custos' CA refusing the interception handshake (403, error); a call refused by
# policy for the sandbox's taint (403, the rule and the taint in the event).
set -u
. "${CUSTOS_SRC:?}/tests/integration/egress_lib.bash"
eg_init egrefusals curl openssl python3
P_IN=$(port); P_EG=$(port); P_CLOSED=$(port)

cd "$W"
eg_upstream_pki
eg_record_source
python3 "$SRC/tests/integration/egress_refusals_origin.py" "$W/origin.port" &
PIDS+=($!)
P_R=$(eg_port_file "$W/origin.port") || exit 1

SRCS="$(eg_source_yaml icpt "https://localhost:$P_T/" internal "intercept: true, ca_file: \"$W/upca.crt\"")
$(eg_source_yaml dead "http://localhost:$P_CLOSED/" internal)
$(eg_source_yaml raw "http://localhost:$P_R/" internal "timeout: 1s")
$(eg_source_yaml conf "http://localhost:$P_D/conf/" confidential)
$(eg_source_yaml pub "http://localhost:$P_D/pub/" public)"
eg_m1_conf info "$SRCS" "  ca_dir: \"$W/ca\"
  timeouts: { connect: 2s, read: 10s, idle: 2s }"
eg_m1_policy <<EOY
  icpt: { url: "https://localhost:$P_T/", classification: internal }
  dead: { url: "http://localhost:$P_CLOSED/", classification: internal }
  raw: { url: "http://localhost:$P_R/", classification: internal }
  conf: { url: "http://localhost:$P_D/conf/", classification: confidential }
  pub: { url: "http://localhost:$P_D/pub/", classification: public }
rules:
  - { id: icpt, effect: allow, when: { direction: egress, data: [icpt, dead, raw, conf, pub], method: GET } }
  - { id: no-public-after-conf, effect: deny, when: { direction: egress, data: [pub], taint: { at_least: confidential } } }
EOY
chmod 600 policy.yaml custos.yaml

eg_start "$P_D" "$P_T" "$P_R"

CL="$SRC/tests/integration/egress_refusals_client.py"
# audited DESC TEXT...: within 30 s one event holds every TEXT
audited() {
	local desc=$1
	shift
	check "$desc: audited ($*)" eg_wait 30 eg_at_least 1 "$@"
}

out=$(python3 "$CL" "$P_EG" cut)
check "plain head cut by the client: nothing answered ($out)" test "$out" = closed
audited "plain head cut by the client" '"kind":"http"' '"decision":"deny"' \
	'"reason":"client closed inside the request head"' '"status":400'

out=$(python3 "$CL" "$P_EG" slow)
check "plain head not ended within the idle timeout: 408 ($out)" \
	grep -q '^HTTP/1.1 408' <<<"$out"
audited "plain head not ended in time" '"kind":"http"' '"decision":"deny"' \
	'"reason":"request head not received in time"' '"status":408'

# A head whose bytes trickle in (one every 0.2 s, each well within the 2 s idle timeout) must
# still be whole within the idle timeout of its first byte: 408 while the client still sends.
out=$(python3 "$CL" "$P_EG" trickle)
check "plain head trickling in: 408 before it ends ($out)" \
	grep -q '^HTTP/1.1 408 .* while trickling$' <<<"$out"
# (its head never ended: no path in the event; the second such 408, after the slow one)
check "plain head trickling in: audited" eg_wait 30 eg_at_least 2 '"kind":"http"' \
	'"decision":"deny"' '"reason":"request head not received in time"' '"status":408'

out=$(python3 "$CL" "$P_EG" icpt-send 'GET /x HTTP/1.1\r\nHost: localhost\r\nBad Header: y\r\n\r\n' \
	localhost "$P_T" "$W/ca/ca.crt")
check "intercepted, malformed head: 400 ($out)" grep -q '^HTTP/1.1 400' <<<"$out"
audited "intercepted, malformed head" '"kind":"intercepted"' '"decision":"deny"' \
	'"reason":"malformed request: ' '"status":400' '"host":"localhost"'

out=$(python3 "$CL" "$P_EG" icpt-cut localhost "$P_T" "$W/ca/ca.crt")
check "intercepted, head cut by the client: nothing answered ($out)" test "$out" = closed
audited "intercepted, head cut by the client" '"kind":"intercepted"' '"decision":"deny"' \
	'"reason":"client closed inside the request head"' '"status":400' '"host":"localhost"'

# --- refusals audited before, their events read here
out=$(python3 "$CL" "$P_EG" send "GET http://localhost:$P_CLOSED/m HTTP/1.1\\r\\nBad Header: y\\r\\n\\r\\n")
check "plain malformed head: 400 ($out)" grep -q '^HTTP/1.1 400' <<<"$out"
audited "plain malformed head" '"kind":"http"' '"decision":"deny"' '"reason":"malformed request: ' \
	'"status":400'

out=$(python3 "$CL" "$P_EG" send "GET http://localhost:$P_CLOSED/m HTTP/1.1\\r\\nHost: localhost\\r\\n{big}\\r\\n")
check "plain head past 32 KiB: 431 ($out)" grep -q '^HTTP/1.1 431' <<<"$out"
audited "plain head past 32 KiB" '"kind":"http"' '"decision":"deny"' '"status":431' \
	'"reason":"malformed request: header section too large"'

out=$(python3 "$CL" "$P_EG" send 'GET /origin-form-mark HTTP/1.1\r\nHost: localhost\r\n\r\n')
check "origin-form target: 400 ($out)" grep -q '^HTTP/1.1 400' <<<"$out"
audited "origin-form target" '"path":"/origin-form-mark"' '"decision":"deny"' '"status":400' \
	'"reason":"a forward proxy takes absolute URIs'

out=$(python3 "$CL" "$P_EG" send 'GET https://localhost/abs-https-mark HTTP/1.1\r\nHost: localhost\r\n\r\n')
check "https:// in absolute form: 400 ($out)" grep -q '^HTTP/1.1 400' <<<"$out"
audited "https:// in absolute form" 'abs-https-mark' '"decision":"deny"' '"status":400' \
	'"reason":"https:// targets go through CONNECT"'

code=$(curl -s -o /dev/null -w '%{http_code}' -x "$PX" "http://localhost:$P_CLOSED/dead-mark")
check "a source whose port refuses the connection: 502 ($code)" test "$code" = 502
audited "a source whose port refuses the connection" '"path":"/dead-mark"' '"decision":"error"' \
	'"status":502' '"reason":"cannot connect upstream: '

out=$(python3 "$CL" "$P_EG" early localhost "$P_T")
audited "bytes sent behind a CONNECT before its answer" '"kind":"intercept-tunnel"' \
	'"decision":"deny"' '"status":400' '"reason":"bytes sent before the CONNECT answer"'

out=$(python3 "$CL" "$P_EG" icpt-send "GET https://localhost:$P_T/abs-in-tunnel HTTP/1.1\\r\\nHost: localhost:$P_T\\r\\n\\r\\n" \
	localhost "$P_T" "$W/ca/ca.crt")
check "intercepted, absolute-form target: 400 ($out)" grep -q '^HTTP/1.1 400' <<<"$out"
audited "intercepted, absolute-form target" '"kind":"intercepted"' '"decision":"deny"' \
	'"status":400' '"reason":"origin-form expected inside a tunnel"'

# --- a source that fails after the connect: 502 before any byte of a response, else cut
for p in cut-head big-head; do
	code=$(curl -s -o /dev/null -w '%{http_code}' -x "$PX" "http://localhost:$P_R/$p")
	check "source: $p: 502 ($code)" test "$code" = 502
	audited "source: $p" "\"path\":\"/$p\"" '"decision":"error"' '"status":502' '"data_source":"raw"'
done
for p in cut-body:'upstream closed mid-body' bad-chunk:'upstream body: ' \
	stall-body:'upstream read timed out mid-body'; do
	curl -s -o /dev/null -x "$PX" "http://localhost:$P_R/${p%%:*}"
	rc=$?
	check "source: ${p%%:*}: the client's transfer is cut (curl exit $rc)" test "$rc" -ne 0
	audited "source: ${p%%:*}" "\"path\":\"/${p%%:*}\"" '"decision":"error"' \
		"\"reason\":\"${p#*:}"
done

# --- the sandbox does not trust custos' CA: the interception handshake fails (curl exit 60)
curl -s -o /dev/null -x "$PX" "https://localhost:$P_T/no-ca"
rc=$?
check "intercepted, client without the custos CA: handshake refused (curl exit $rc)" test "$rc" = 60
audited "intercepted, client without the custos CA" '"kind":"intercept-tunnel"' '"decision":"error"' \
	'"status":403' '"reason":"client TLS handshake with the interception certificate failed'

# --- taint: once the sandbox read confidential data, the public source is refused (policy)
code=$(curl -s -o /dev/null -w '%{http_code}' -x "$PX" "http://localhost:$P_D/pub/before")
check "taint: public source readable before ($code)" test "$code" = 200
code=$(curl -s -o /dev/null -w '%{http_code}' -x "$PX" "http://localhost:$P_D/conf/read")
check "taint: confidential source read ($code)" test "$code" = 200
code=$(curl -s -o /dev/null -w '%{http_code}' -x "$PX" "http://localhost:$P_D/pub/after")
check "taint: public source refused after it (403, $code)" test "$code" = 403
audited "taint: the refusal" '"path":"/pub/after"' '"decision":"deny"' '"status":403' \
	'"rules":"no-public-after-conf"' '"taint":2'

# an idle connection that never began a head is no refusal: closed at the idle timeout, and
# no event for it (the count of refusals stays what it was)
n=$(eg_count '"decision":"deny"')
out=$(python3 -c "import socket; s=socket.create_connection(('127.0.0.1',$P_EG)); s.settimeout(30); print(s.recv(1) or 'closed')")
check "an idle connection without a head: closed at the idle timeout ($out)" test "$out" = closed
check "an idle connection without a head is not audited as a refusal" \
	test "$(eg_count '"decision":"deny"')" = "$n"

eg_stop
eg_done
