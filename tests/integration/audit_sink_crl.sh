#!/usr/bin/env bash
# ctest: serial (waits on delivery through rsyslog across custos restarts)
# audit_sink_crl: audit.sinks[].tls.crl through the real `custos up` (the shipper is the confined
# proxy's child) against a real rsyslog over TLS (imtcp + ossl), certificates from a CA run by
# `openssl ca`:
# - rsyslog's certificate revoked in the sink's CRL: the sink refuses the server, the log says
#   "certificate revoked", nothing reaches rsyslog and the sink's lag stays;
# - the same CRL and a server certificate it does not list: every event arrives, the ones held
#   back before too (from the cursor);
# - a CRL past its nextUpdate fails closed: warned when loaded, "CRL has expired" on connect,
#   nothing more arrives;
# - `config check --host` names audit.sinks[0] (siem).tls.crl for an expired CRL (warning) and
#   for a file that holds a certificate (error), and `custos up` refuses that file at start.
# The CRL lives in a directory of its own outside $work: the proxy's Landlock view must name it
# for the shipper to read it.
. "$(dirname "$0")/proxy_lib.bash"
. "$(dirname "$0")/audit_lib.bash"

need_rsyslog_tls

make_pki
T=$work/tls
# crl, revoke: proxy_lib.bash.
# Two server certificates for localhost / 127.0.0.1; the first is revoked.
make_short_cert siem localhost srv.ext 86400
make_short_cert siem2 localhost srv.ext 86400
revoke siem
crl crl1 -crldays 1
crl crlx -crl_lastupdate 20200101000000Z -crl_nextupdate 20200102000000Z
R=$(mktemp -d /tmp/custos-sink-crl.XXXXXX)
trap 'cleanup; rm -rf "$R"' EXIT
cp "$T/crl1.pem" "$R/siem.crl"

start_fixture model --tokens 4
write_policy "$work/policy.yaml"
ctl() { "$bin" ctl --socket "$work/admin.sock" "$@"; }
chat='{"model":"test-model","messages":[{"role":"user","content":"to the SIEM"}]}'
send() { # send N: N allowed requests through the plain listener
	local i
	for i in $(seq "$1"); do
		curl -sS -o /dev/null --max-time 10 -H "Authorization: Bearer $ALICE" -d "$chat" \
			"http://127.0.0.1:$PORT2/v1/chat/completions" || fail "request $i"
	done
}

# -- rsyslog over TLS; its certificate is $work/rs/server.crt, swapped between runs.
rsyslog_tls_conf "$T/ca.crt" "$work/rs/server.crt" "$work/rs/server.key" anon
start_siem() { # start_siem CERT: rsyslog serving $T/CERT.crt
	cp "$T/$1.crt" "$work/rs/server.crt"
	cp "$T/$1.key" "$work/rs/server.key"
	start_rsyslog
}
stop_custos() {
	kill -TERM "$CU_PID"
	wait "$CU_PID" 2>/dev/null || true
}
# lag: the sink's lag_events from `custos ctl audit-status` (empty when it did not answer).
lag() {
	ctl audit-status 2>/dev/null | python3 -c 'import json,sys
print([x["lag_events"] for x in json.load(sys.stdin)["sinks"] if x["id"] == "siem"][0])' 2>/dev/null
}
lag0() { [ "$(lag)" = 0 ]; }

AUDIT_YAML="  sinks:
    - id: siem
      type: syslog
      address: \"127.0.0.1:$RPORT\"
      tls: { ca: $T/ca.crt, crl: $R/siem.crl }
      retry: { initial: 100ms, max: 500ms }" write_config "$work/custos.yaml" "$FX_PORT"
out=$("$bin" config check --host "$work/custos.yaml" 2>&1) &&
	ok "config check --host accepts the sink's CRL" || fail "config check --host: $out"

# 1. rsyslog's certificate is revoked: refused, said why, nothing delivered.
start_siem siem
start_custos "$work/custos.yaml"
send 3
wait_log "warn: audit sink siem: .*certificate revoked; retrying" 2
grep -q "audit sink siem: .*certificate revoked" "$work/custos.log" &&
	ok "revoked: $(grep -m1 -o 'audit sink siem: .*certificate revoked' "$work/custos.log")"
l=$(lag)
[ -n "$l" ] && [ "$l" -gt 0 ] && ok "revoked: the sink's lag stays ($l events)" ||
	fail "revoked: lag should stay above 0, got '$l'"
stop_custos
stop_rsyslog
check "revoked: rsyslog received nothing" "$(wc -l <"$work/rs/out.log" | tr -d ' ')" 0

# 2. The same CRL, a server certificate it does not list: delivery works, from the cursor.
start_siem siem2
start_custos "$work/custos.yaml"
send 2
wait_until 60 lag0 && ok "not revoked: the sink caught up (lag 0)" ||
	fail "not revoked: lag $(lag) after 60 s"
msg=$(wait_complete "$work/rs/out.log") && ok "not revoked: $msg, the ones held back included" || fail "not revoked: $msg"
stop_custos
# At its stop the shipper delivers the shutdown seal too, and rsyslog writes it a moment
# later: count once the file holds the whole log, or a late seal would count as "more" below.
msg=$(wait_complete "$work/rs/out.log") || fail "not revoked, after the stop: $msg"
got=$(wc -l <"$work/rs/out.log" | tr -d ' ')

# 3. A CRL past its nextUpdate fails closed, even for the certificate it does not list.
cp "$T/crlx.pem" "$R/siem.crl"
start_custos "$work/custos.yaml"
grep -q "warn: tls: tls.crl $R/siem.crl: 1 of its 1 CRL(s) past their nextUpdate" "$work/custos.log" &&
	ok "expired: warned when loaded" || fail "expired: no warning when the CRL was loaded"
send 2
wait_log "warn: audit sink siem: .*CRL has expired; retrying" 2
l=$(lag)
[ -n "$l" ] && [ "$l" -gt 0 ] && ok "expired: the sink's lag stays ($l events)" ||
	fail "expired: lag should stay above 0, got '$l'"
stop_custos
stop_rsyslog
check "expired: nothing more reached rsyslog" "$(wc -l <"$work/rs/out.log" | tr -d ' ')" "$got"

# 4. config check --host and the start name the sink's CRL setting.
out=$("$bin" config check --host "$work/custos.yaml" 2>&1)
printf '%s\n' "$out" | grep -q 'warning.*audit.sinks\[0\] (siem).tls.crl.*past its nextUpdate' &&
	ok "config check --host warns of the expired CRL" || fail "config check --host, expired: $out"
cat "$T/crl1.pem" "$T/ca.crt" >"$R/siem.crl"
out=$("$bin" config check --host "$work/custos.yaml" 2>&1)
rc=$?
[ "$rc" -ne 0 ] && printf '%s\n' "$out" | grep -q 'error.*audit.sinks\[0\] (siem).tls.crl.*holds a certificate' &&
	ok "config check --host refuses a certificate in the CRL file (rc $rc)" ||
	fail "config check --host, certificate in the CRL: rc $rc: $out"
rc=0
timeout 60 "$bin" --log-format text up -c "$work/custos.yaml" 2>"$work/bad.log" || rc=$?
if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] &&
	grep -q "audit sink siem: tls.crl $R/siem.crl: holds a certificate" "$work/bad.log"; then
	ok "custos up refuses it at start: $(grep -m1 -o 'audit sink siem: .*' "$work/bad.log")"
else
	fail "custos up (exit $rc) did not refuse the CRL file: $(tail -5 "$work/bad.log")"
fi

[ "$fails" -eq 0 ] || exit 1
echo "PASS"
