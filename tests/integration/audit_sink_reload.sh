#!/usr/bin/env bash
# ctest: serial (waits on delivery through rsyslog across reloads)
# audit_sink_reload: a reload (SIGHUP to `custos up`) makes the audit shipper read its TLS sinks'
# files again, the CA, client certificate and key, and CRL, from the paths it started with,
# against a real rsyslog over TLS (imtcp + ossl), certificates from a CA run by `openssl ca`:
# - delivery works with the files custos started with;
# - a CRL that is not PEM, one past its nextUpdate and a client key that does not match the
#   certificate are each refused at the reload, the log names the sink, the file and the reason,
#   and delivery goes on with the files read before;
# - a CRL that now revokes rsyslog's certificate, put in place and followed by SIGHUP: the open
#   connection is closed (the log says its server certificate is revoked), the reconnection is
#   refused ("certificate revoked"), and no event made after that reaches rsyslog;
# - a reload that changes a sink's file path is refused as a whole, naming the setting.
# The files live in a directory of their own outside $work: the shipper's Landlock view must
# hold it for a reload to read them (the confined `custos up`, as in production).
. "$(dirname "$0")/proxy_lib.bash"
. "$(dirname "$0")/audit_lib.bash"

need_rsyslog_tls

make_pki
T=$work/tls
# crl, revoke: proxy_lib.bash. crl0 lists nothing; crl1, made after the revocation, lists
# rsyslog's certificate; crlx is past its nextUpdate.
make_short_cert siem localhost srv.ext 86400
crl crl0 -crldays 1
revoke siem
crl crl1 -crldays 1
crl crlx -crl_lastupdate 20200101000000Z -crl_nextupdate 20200102000000Z
R=$(mktemp -d /tmp/custos-sink-reload.XXXXXX)
trap 'cleanup; rm -rf "$R"' EXIT
cp "$T/ca.crt" "$R/ca.crt"
cp "$T/crl0.pem" "$R/siem.crl"
cp "$T/cli.crt" "$R/cli.crt"
cp "$T/cli.key" "$R/cli.key"
chmod 600 "$R/cli.key"
# put FILE SRC: replaces $R/FILE by a rename, as a rotation does (a new inode).
put() {
	cp "$2" "$R/.$1.new" && chmod 600 "$R/.$1.new" && mv -f "$R/.$1.new" "$R/$1"
}

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
# lag: the sink's lag_events from `custos ctl audit-status` (empty when it did not answer).
lag() {
	ctl audit-status 2>/dev/null | python3 -c 'import json,sys
print([x["lag_events"] for x in json.load(sys.stdin)["sinks"] if x["id"] == "siem"][0])' 2>/dev/null
}
lag0() { [ "$(lag)" = 0 ]; }
# max_seq FILE: the highest seq among rsyslog's lines (0 when none).
max_seq() {
	sed -n 's/^ *{"v":1,"seq":\([0-9]*\),.*/\1/p' "$1" | sort -n | tail -1 | grep . || echo 0
}

rsyslog_tls_conf "$T/ca.crt" "$T/siem.crt" "$T/siem.key" anon
sink_yaml() { # sink_yaml CRL
	printf '%s\n' "  sinks:
    - id: siem
      type: syslog
      address: \"127.0.0.1:$RPORT\"
      tls: { ca: $R/ca.crt, crl: $1, cert: $R/cli.crt, key: $R/cli.key }
      retry: { initial: 100ms, max: 500ms }"
}
AUDIT_YAML=$(sink_yaml "$R/siem.crl") write_config "$work/custos.yaml" "$FX_PORT"
start_rsyslog
start_custos "$work/custos.yaml"
# The sink's files have a directory of their own: no warning that the shipper can read a key.
grep -q "the audit shipper can read" "$work/custos.log" &&
	fail "warned: $(grep "the audit shipper can read" "$work/custos.log")" ||
	ok "sink files in a directory of their own: no warning at start"

# 1. Delivered with the files custos started with.
send 2
wait_until 60 lag0 && ok "start: the sink caught up (lag 0)" || fail "start: lag $(lag) after 60 s"

# 2. Files that do not load at a reload: each refused, said why, the old context stays in use.
# reload_keeps WHAT PATTERN: SIGHUP, the log line PATTERN (once more than before), then events
# still arrive.
reload_keeps() {
	local n
	n=$(grep -c -- "$2" "$work/custos.log")
	kill -HUP "$CU_PID"
	wait_log "$2" $((n + 1))
	grep -q -- "$2" "$work/custos.log" &&
		ok "$1: refused at the reload: $(grep -o -- "audit sink siem: reload: .*" "$work/custos.log" | tail -1)"
	send 2
	wait_until 60 lag0 && ok "$1: delivery goes on with the files read before (lag 0)" ||
		fail "$1: lag $(lag) after 60 s"
}
printf 'not a CRL\n' >"$R/bad.pem"
put siem.crl "$R/bad.pem"
reload_keeps "CRL not PEM" \
	"warn: audit sink siem: reload: tls.crl $R/siem.crl: no PEM CRL in it .*the TLS files read before stay in use"
put siem.crl "$T/crlx.pem"
reload_keeps "expired CRL" \
	"warn: audit sink siem: reload: tls.crl $R/siem.crl: past its nextUpdate.*the TLS files read before stay in use"
# ... and only that: not the start-time warning that the expired CRL now refuses every server.
grep -q "until a newer CRL is loaded" "$work/custos.log" &&
	fail "expired CRL at a reload: warned as if loaded: $(grep "until a newer CRL" "$work/custos.log")" ||
	ok "expired CRL at a reload: no warning that it is in force"
put siem.crl "$T/crl0.pem"
put cli.key "$T/rogue.key"
reload_keeps "client key not matching the certificate" \
	"warn: audit sink siem: reload: client key $R/cli.key: .*the TLS files read before stay in use"
put cli.key "$T/cli.key"
msg=$(wait_complete "$work/rs/out.log") && ok "bad files: $msg" || fail "bad files: $msg"

# 3. The CRL now revokes rsyslog's certificate: the open connection is closed, the new one is
# refused, and nothing made after that is delivered.
put siem.crl "$T/crl1.pem"
n=$(grep -c "audit sink siem: reload: TLS files read again" "$work/custos.log")
kill -HUP "$CU_PID"
wait_log "audit sink siem: reload: TLS files read again" $((n + 1))
wait_log "warn: audit sink siem: reload: the server certificate of 127.0.0.1:$RPORT does not verify with the TLS files read again (certificate revoked): closing the connection" 1
wait_log "warn: audit sink siem: TLS handshake with 127.0.0.1:$RPORT: server certificate: certificate revoked; retrying" 1
grep -q "closing the connection" "$work/custos.log" &&
	ok "revoked: $(grep -m1 -o 'audit sink siem: reload: the server certificate.*' "$work/custos.log")"
before=$(last_seq)
send 3
newer() { [ "$(last_seq)" -gt "$before" ]; }
wait_until 60 newer || fail "revoked: no new events in the log"
# (checked once rsyslog has stopped and written everything it received: see the end)

# 4. A reload that changes a sink's path is refused as a whole, naming the setting.
cp "$R/siem.crl" "$R/other.crl"
sed -i "s|crl: $R/siem.crl,|crl: $R/other.crl,|" "$work/custos.yaml"
kill -HUP "$CU_PID"
wait_log "error: proxy: reload failed, the previous configuration stays in force: .*audit.sinks\[0\] (siem).tls.crl ($R/siem.crl -> $R/other.crl) changed: custos reads it at start only" 1
grep -q "audit.sinks\[0\] (siem).tls.crl ($R/siem.crl -> $R/other.crl) changed" "$work/custos.log" &&
	ok "path changed: the reload is refused, naming audit.sinks[0] (siem).tls.crl"

kill -TERM "$CU_PID"
wait "$CU_PID" 2>/dev/null || true
stop_rsyslog
got=$(max_seq "$work/rs/out.log")
[ "$got" -gt 0 ] && [ "$got" -le "$before" ] && ok "revoked: no event after seq $before reached rsyslog (last $got)" ||
	fail "revoked: rsyslog received seq $got, after the revocation (seq $before)"

[ "$fails" -eq 0 ] || exit 1
echo "PASS"
