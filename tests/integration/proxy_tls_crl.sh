#!/usr/bin/env bash
# Certificate revocation lists through the real binary, with a CA run by `openssl ca`, real curl
# and openssl s_client / s_server:
# - listeners[].tls.client_crl: a revoked client certificate is refused (handshake fails, logged
#   and audited as tls.reject "client certificate: certificate revoked"), one not revoked gets
#   in; a SIGHUP reload with a malformed CRL (or a certificate in the file, or no CRL in it) is
#   refused, saying why, and the CRL in force stays; a reload with a newer CRL that revokes the
#   second certificate refuses it from then on, and its TLS 1.2 and 1.3 sessions made before
#   the reload do not resume (full handshake, refused); a CRL past its nextUpdate refuses every
#   certificate it covers ("CRL has expired");
# - admin.tls.client_crl: the admin API refuses the revoked client certificate, takes the other
#   one, and follows the reload as the listener does;
# - models[].upstream.crl_file: an https upstream whose certificate is not revoked serves; once a
#   reload brings a CRL that revokes it, the request is a 502, audited, and the log names the
#   verify error;
# - `config check --host` refuses a malformed CRL file naming the setting, and warns about one
#   past its nextUpdate and about a CA of client_ca without a CRL in the file.
. "$(dirname "$0")/proxy_lib.bash"

make_pki
T=$work/tls
# crl, revoke: proxy_lib.bash.
# Three client certificates with the analytics SPIFFE ID (the policy lets it list models).
make_short_cert one analytics-one cli.ext 86400
make_short_cert two analytics-two cli.ext 86400
make_short_cert three analytics-three cli.ext 86400
crl crl0 -crldays 1 # nothing revoked
revoke one
revoke srv # the upstream's certificate (openssl x509 -req made it; -revoke takes it all the same)
crl crl1 -crldays 1
# The CRL files in a directory of their own, outside $work (which the proxy's Landlock view holds
# for the policy file): the view must name them for the proxy to read them.
R=$(mktemp -d /tmp/custos-crl-test.XXXXXX)
trap 'cleanup; rm -rf "$R"' EXIT
# install SRC DST: replaces $R/DST by $T/SRC's bytes with a rename (a reload never reads half a
# file).
install() { cp "$T/$1" "$R/$2.new" && mv "$R/$2.new" "$R/$2"; }
install crl1.pem client.crl

start_fixture model --tokens 4
write_policy "$work/policy.yaml"
TOKEN=admin-token-$RANDOM$RANDOM
APORT=$(free_port)
NO_DEFAULT_ADMIN=1 EXTRA_CERTS="      client_crl: $R/client.crl" write_config "$work/custos.yaml" "$FX_PORT"
cat >>"$work/custos.yaml" <<CFG
admin:
  socket: $work/admin.sock
  tls:
    cert: $T/srv.crt
    key: $T/srv.key
    client_ca: $T/ca.crt
    client_crl: $R/client.crl
  tcp:
    address: "127.0.0.1:$APORT"
    token_sha256: "$(sha256hex "$TOKEN")"
CFG
"$bin" config check --host "$work/custos.yaml" >"$work/check.out" 2>&1 &&
	ok "config check --host accepts the CRLs" || fail "config check --host: $(cat "$work/check.out")"
start_custos "$work/custos.yaml"

url="https://localhost:$PORT/v1/models"
C=(curl -sS --cacert "$T/ca.crt" --max-time 20 -o /dev/null -w '%{http_code}')
code() { "${C[@]}" --cert "$T/$1.crt" --key "$T/$1.key" "$url" 2>/dev/null; }
acode() {
	"${C[@]}" --cert "$T/$1.crt" --key "$T/$1.key" -H "Authorization: Bearer $TOKEN" \
		"https://127.0.0.1:$APORT/healthz" 2>/dev/null
}
rejected() { wait_log "info: tls: handshake with 127.0.0.1:[0-9]* failed: client certificate: $1" "$2"; }

check "listener: the revoked client certificate is refused" "$(code one)" 000
rejected "certificate revoked" 1
check "listener: a client certificate not revoked gets in" "$(code two)" 200
check "admin: the revoked client certificate is refused" "$(acode one)" 000
check "admin: a client certificate not revoked gets in" "$(acode two)" 200

# Sessions of "two" (TLS 1.2 and 1.3), made before the CRL that revokes it.
# sess VERSION OUT [IN]: one handshake with the client certificate "two" (resuming IN when
# given) and GET /v1/models; prints "New|Reused|none STATUS|none".
sess() {
	local o how status
	o=$(printf 'GET /v1/models HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' |
		timeout 10 openssl s_client -connect "127.0.0.1:$PORT" -servername localhost \
			-CAfile "$T/ca.crt" "-$1" -ign_eof -sess_out "$work/$2" ${3:+-sess_in "$work/$3"} \
			-cert "$T/two.crt" -key "$T/two.key" 2>&1)
	how=$(printf '%s\n' "$o" | sed -n 's/^\(New\|Reused\), TLS.*/\1/p' | head -1)
	status=$(printf '%s\n' "$o" | sed -n 's/^HTTP\/1\.1 \([0-9]*\).*/\1/p' | head -1)
	echo "${how:-none} ${status:-none}"
}
for v in tls1_2 tls1_3; do
	check "$v: a session of the certificate not revoked" "$(sess $v s-$v.pem)" "New 200"
	check "$v: ... resumes" "$(sess $v x.pem s-$v.pem)" "Reused 200"
done

reloads() { grep -c "$1" "$work/custos.log"; }
# A malformed CRL: the reload is refused, saying why, and the CRL in force stays.
printf -- '-----BEGIN X509 CRL-----\nnot base64 at all\n-----END X509 CRL-----\n' >"$R/client.crl.new"
mv "$R/client.crl.new" "$R/client.crl"
kill -HUP "$CU_PID"
wait_log 'reload failed' 1
grep 'reload failed' "$work/custos.log" | tail -1 | grep -q 'client_crl' &&
	ok "the refused reload names client_crl" ||
	fail "reload failure without client_crl: $(grep 'reload failed' "$work/custos.log" | tail -1)"
# A certificate in the file (it would be a trust anchor), a file with no CRL: refused alike.
cp "$T/ca.crt" "$R/client.crl.new" && mv "$R/client.crl.new" "$R/client.crl"
kill -HUP "$CU_PID"
wait_log 'reload failed' 2
grep 'reload failed' "$work/custos.log" | tail -1 | grep -q "client_crl $R/client.crl: holds a certificate" &&
	ok "a reload with a certificate in the CRL file is refused" ||
	fail "certificate in the CRL file: $(grep 'reload failed' "$work/custos.log" | tail -1)"
printf 'no PEM here\n' >"$R/client.crl.new" && mv "$R/client.crl.new" "$R/client.crl"
kill -HUP "$CU_PID"
wait_log 'reload failed' 3
grep 'reload failed' "$work/custos.log" | tail -1 | grep -q "client_crl $R/client.crl: no PEM CRL in it" &&
	ok "a reload with no CRL in the file is refused" ||
	fail "no CRL in the file: $(grep 'reload failed' "$work/custos.log" | tail -1)"
check "after the refused reload: the revoked certificate is still refused" "$(code one)" 000
check "after the refused reload: the other one still gets in" "$(code two)" 200

# A newer CRL that also revokes "two": refused after the reload, on the listener and the admin
# API, and its sessions made before do not resume.
revoke two
crl crl2 -crldays 1
install crl2.pem client.crl
kill -HUP "$CU_PID"
wait_log 'proxy: reloaded' 1
check "reload with a newer CRL: the certificate it revokes is refused" "$(code two)" 000
rejected "certificate revoked" 2
check "reload: the certificate not revoked still gets in" "$(code three)" 200
wait_log "admin: tls: the certificate of the reload is served from now on" 1
check "admin, after the reload: the newly revoked certificate is refused" "$(acode two)" 000
check "admin, after the reload: the one not revoked gets in" "$(acode three)" 200
for v in tls1_2 tls1_3; do
	r=$(sess $v x.pem s-$v.pem)
	case $r in
	"New none" | "none none") ok "$v: the session made before the new CRL does not resume ($r)" ;;
	*) fail "$v: the session made before the new CRL: got '$r', want no resumption and no response" ;;
	esac
done

# A CRL past its nextUpdate (fail closed): even a certificate it does not list is refused.
crl crlx -crl_lastupdate 20200101000000Z -crl_nextupdate 20200102000000Z
install crlx.pem client.crl
kill -HUP "$CU_PID"
wait_log 'proxy: reloaded' 2
grep -q "warn: tls: client_crl $R/client.crl: 1 of its 1 CRL(s) past their nextUpdate" "$work/custos.log" &&
	ok "the expired CRL is logged as such when loaded" || fail "no warning for the expired CRL"
check "expired CRL: a certificate it does not revoke is refused" "$(code three)" 000
rejected "CRL has expired" 1
kill -TERM "$CU_PID"
wait "$CU_PID"
for r in "certificate revoked" "CRL has expired"; do
	[ -n "$(audit_grep '"type":"tls.reject"' | grep '"decision":"deny"' | grep "\"reason\":\"client certificate: $r\"")" ] &&
		ok "tls.reject audited: client certificate: $r" || fail "no tls.reject event for '$r'"
done

# config check --host: a malformed CRL file is an error naming the setting; an expired one a
# warning.
out=$("$bin" config check --host "$work/custos.yaml" 2>&1)
printf '%s\n' "$out" | grep -q 'warning.*listeners\[0\] (tls).tls.client_crl.*past its nextUpdate' &&
	ok "config check --host warns of the expired CRL" || fail "config check --host, expired CRL: $out"
# A CRL of another CA only: the test CA's certificates would all be refused.
(cd "$T" && openssl ca -config ca.cnf -cert rogue.crt -keyfile rogue.key -gencrl -crldays 1 \
	-out "$R/client.crl") >/dev/null 2>&1 || skip "openssl ca could not make the rogue CA's CRL"
out=$("$bin" config check --host "$work/custos.yaml" 2>&1)
printf '%s\n' "$out" | grep -q "warning.*client_crl '$R/client.crl': no CRL from the CA /CN=test CA (in $T/ca.crt)" &&
	ok "config check --host warns of a CA without a CRL" || fail "config check --host, CA without a CRL: $out"
printf 'not a CRL\n' >"$R/client.crl"
out=$("$bin" config check --host "$work/custos.yaml" 2>&1)
rc=$?
[ "$rc" -ne 0 ] && printf '%s\n' "$out" | grep -q 'error.*listeners\[0\] (tls).tls.client_crl.*no CRL in it' &&
	ok "config check --host refuses a file without a CRL (rc $rc)" || fail "config check --host, no CRL: rc $rc: $out"
printf '%s\n' "$out" | grep -q 'error.*admin.tls.client_crl' &&
	ok "config check --host names admin.tls.client_crl too" || fail "config check --host, admin: $out"

# An https upstream (openssl s_server -WWW) checked against crl_file: served while its
# certificate is not revoked; a 502 once a reload brings the CRL that revokes it.
mkdir -p "$work/www/v1"
printf '{"object":"list","data":[{"id":"test-model"}]}' >"$work/www/v1/models"
up_port=$(free_port)
(cd "$work/www" && exec openssl s_server -quiet -accept "127.0.0.1:$up_port" \
	-cert "$T/srv.crt" -key "$T/srv.key" -WWW) >"$work/s_server.log" 2>&1 &
pids+=($!)
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$up_port") 2>/dev/null; }
wait_until 60 listening || skip "openssl s_server did not listen"
install crl0.pem up.crl
install crl2.pem client.crl
write_config "$work/custos.yaml" 1
perl -0777 -i -pe 's|url: "http://127.0.0.1:1/"|url: "https://localhost:'"$up_port"'/"\n      ca_file: '"$T"'/ca.crt\n      crl_file: '"$R"'/up.crl|' "$work/custos.yaml"
start_custos "$work/custos.yaml"
U=(curl -sS --cacert "$T/ca.crt" --max-time 20 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $ALICE")
check "upstream: a certificate the CRL does not revoke serves" "$("${U[@]}" "https://localhost:$PORT/v1/models")" 200
install crl2.pem up.crl
kill -HUP "$CU_PID"
wait_log 'proxy: reloaded' 1
check "upstream: its certificate revoked by the reloaded CRL -> 502" "$("${U[@]}" "https://localhost:$PORT/v1/models")" 502
grep -q "info: upstream test-model: certificate verification failed: certificate revoked" "$work/custos.log" &&
	ok "the upstream's revoked certificate is logged as such" || fail "no log line naming the revoked upstream certificate"
kill -TERM "$CU_PID"
wait "$CU_PID"
check "the 502 audited" "$(audit_grep '"status":502' | wc -l | tr -d ' ')" 1
[ "$fails" -eq 0 ]
