#!/usr/bin/env bash
# OCSP stapling from files (listeners[].tls ocsp) through the real binary, with a CA run by
# `openssl ca`, OCSP responses made offline by `openssl ocsp` (as an operator's refresh job would),
# real openssl s_client -status and curl --cert-status:
# - an ECDSA and an RSA certificate on one listener, each with its own response: the one for the
#   certificate chosen by the handshake is stapled ("successful", "good", its serial), only when
#   the client asks (no CertificateStatus without status_request); curl --cert-status accepts it;
# - config check --host accepts the files; a response for another certificate, a revoked, an
#   expired and an unknown status are errors naming the setting and file; with a response for
#   another certificate `custos up` refuses to start, naming the file;
# - a SIGHUP reload with a refreshed response staples the new one (its thisUpdate); a reload with
#   a malformed file, a response for another certificate, one signed by neither the issuer nor
#   a responder it authorised (OCSPSigning), or one saying our certificate is revoked, is
#   refused, naming the file, and the staple in force stays; a delegated responder's is stapled;
# - a response whose nextUpdate passes while it is loaded stops being stapled at the handshake
#   (curl --cert-status then fails, as a Must-Staple client would), and a reload with it loads it
#   with a warning and staples nothing.
. "$(dirname "$0")/proxy_lib.bash"
. "$(dirname "$0")/ocsp_lib.bash"

make_pki
ocsp_setup
ocsp_cert web                                 # ECDSA, serial 01 (openssl ca: in cadb/index.txt)
make_short_cert other localhost srv.ext 86400 # serial 02: its responses are not the listener's
printf 'extendedKeyUsage=OCSPSigning\n' >"$T/ocsp.ext"
make_short_cert responder ocsp-responder ocsp.ext 86400 # a responder the CA authorised
(
	cd "$T" || exit 1
	openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout rsa.key -out rsa.csr &&
		openssl ca -batch -config ca.cnf -cert ca.crt -keyfile ca.key -in rsa.csr \
			-out rsa.crt -notext -extfile srv.ext -days 1 && chmod 600 rsa.key
) >/dev/null 2>&1 || skip "openssl ca could not make the RSA certificate"
# The served chain: the leaf, then its issuer (custos needs the issuer to check the response).
cat "$T/rsa.crt" "$T/ca.crt" >"$T/rsa.chain"
ocsp_resp web web.ocsp -ndays 2
ocsp_resp rsa rsa.ocsp -ndays 2
ocsp_resp other other.ocsp -ndays 2

start_fixture model --tokens 4
write_policy "$work/policy.yaml"
EXTRA_CERTS="      ocsp: $R/web.ocsp
      certificates:
        - { cert: $T/rsa.chain, key: $T/rsa.key, ocsp: $R/rsa.ocsp }" write_config "$work/custos.yaml" "$FX_PORT"
perl -i -pe "s|cert: $T/srv.crt|cert: $T/web.chain|; s|key: $T/srv.key|key: $T/web.key|" "$work/custos.yaml"
"$bin" config check --host "$work/custos.yaml" >"$work/check.out" 2>&1 &&
	ok "config check --host accepts the OCSP responses" || fail "config check --host: $(cat "$work/check.out")"
start_custos "$work/custos.yaml"
grep -q "info: tls: listener 127.0.0.1:$PORT: OCSP response $R/web.ocsp for $T/web.chain loaded (status good, produced .*, nextUpdate " "$work/custos.log" &&
	ok "the loaded response is logged with its nextUpdate" || fail "no log line for the loaded response"

# sc ARGS...: one handshake (and nothing sent), openssl s_client's report.
sc() { tls_sc "$PORT" "$@"; }
EC=(-sigalgs ecdsa_secp256r1_sha256)
RSA=(-sigalgs rsa_pss_rsae_sha256:rsa_pkcs1_sha256)
# staple ARGS...: "STATUS CERT-STATUS SERIAL" of the stapled response, "none" without one.
staple() { ocsp_staple "$PORT" "$@"; }
served_this_update() { ocsp_this_update "$PORT" "${EC[@]}"; }
for v in -tls1_2 -tls1_3; do
	check "$v ECDSA: its own response stapled" "$(staple "$v" "${EC[@]}")" "successful good $(ocsp_serial web)"
	check "$v RSA: its own response stapled" "$(staple "$v" "${RSA[@]}")" "successful good $(ocsp_serial rsa)"
done
# Without status_request the server sends no CertificateStatus (TLS 1.2 shows it as a message).
n=$(sc -tls1_2 -msg "${EC[@]}" | grep -c 'CertificateStatus')
check "no status_request: no CertificateStatus sent" "$n" 0
n=$(sc -tls1_2 -status -msg "${EC[@]}" | grep -c 'CertificateStatus')
[ "$n" -ge 1 ] && ok "status_request: a CertificateStatus sent ($n)" || fail "status_request: no CertificateStatus message"
C=(curl -sS --cacert "$T/ca.crt" --max-time 20 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $ALICE")
url="https://localhost:$PORT/v1/models"
check "curl --cert-status accepts the staple" "$("${C[@]}" --cert-status "$url" 2>"$work/curl.err")" 200

# A refreshed response (a later thisUpdate; 12 hours left, under a day: warned about): served
# after the reload.
old=$(ocsp_field "$R/web.ocsp" 'This Update')
check "the first staple is the file's" "$(served_this_update)" "$old"
fresher() {
	ocsp_resp web web.ocsp -nmin 720
	[ "$(ocsp_field "$R/web.ocsp" 'This Update')" != "$old" ]
}
wait_until 30 fresher || fail "openssl ocsp made no response with a later thisUpdate"
new=$(ocsp_field "$R/web.ocsp" 'This Update')
kill -HUP "$CU_PID"
wait_log 'proxy: reloaded' 1
check "reload with a refreshed response: the new one is stapled" "$(served_this_update)" "$new"
grep -q "warn: tls: listener 127.0.0.1:$PORT: OCSP response $R/web.ocsp for $T/web.chain (status good, produced .*) expires in [0-9]* min" "$work/custos.log" &&
	ok "a response less than a day from its nextUpdate is warned about" || fail "no warning for the response near its nextUpdate"

# refused NTH TEXT: the NTH refused reload, its message holding TEXT; the staple in force stays.
refused() {
	kill -HUP "$CU_PID"
	wait_log 'reload failed' "$1"
	grep 'reload failed' "$work/custos.log" | tail -1 | grep -qF -- "$2" &&
		ok "reload refused: $2" || fail "reload failure without '$2': $(grep 'reload failed' "$work/custos.log" | tail -1)"
	check "... and the staple in force stays" "$(served_this_update)" "$new"
}
cp "$R/web.ocsp" "$R/good.ocsp"
printf 'not DER at all\n' >"$R/web.ocsp.new" && mv "$R/web.ocsp.new" "$R/web.ocsp"
refused 1 "ocsp $R/web.ocsp: not a DER OCSP response"
cp "$R/other.ocsp" "$R/web.ocsp.new" && mv "$R/web.ocsp.new" "$R/web.ocsp"
refused 2 "ocsp $R/web.ocsp: not a response for this certificate"
# Signed by a certificate of the CA not authorised for OCSP (no OCSPSigning usage), or by
# another CA: refused. Signed by a responder the CA authorised: stapled.
RSIGNER=other ocsp_resp web web.ocsp -ndays 1
refused 3 "ocsp $R/web.ocsp: its signature does not verify against the certificate's issuer"
RSIGNER=rogue ocsp_resp web web.ocsp -ndays 1
refused 4 "ocsp $R/web.ocsp: its signature does not verify against the certificate's issuer"
RSIGNER=responder ocsp_resp web web.ocsp -ndays 1
kill -HUP "$CU_PID"
wait_log 'proxy: reloaded' 2
check "a response from a responder the CA authorised is stapled" "$(staple -tls1_3 "${EC[@]}")" "successful good $(ocsp_serial web)"
check "... it is the delegated responder's" "$(sc -status "${EC[@]}" | sed -n 's/^ *Responder Id: //p' | head -1)" "CN = ocsp-responder"
# A response whose nextUpdate comes in a minute: stapled while fresh.
ocsp_resp web web.ocsp -nmin 1
next=$(date -d "$(ocsp_field "$R/web.ocsp" 'Next Update')" +%s) || fail "no nextUpdate in the short response"
cp "$R/web.ocsp" "$R/short.ocsp"
kill -HUP "$CU_PID"
wait_log 'proxy: reloaded' 3
check "a response with a minute left is stapled" "$(staple -tls1_3 "${EC[@]}")" "successful good $(ocsp_serial web)"
# Our own certificate revoked: the reload is refused, loudly (the short response stays).
ocsp_revoke web
ocsp_resp web web.ocsp -ndays 1
check "the CA's responder says revoked" "$(ocsp_field "$R/web.ocsp" 'Cert Status')" revoked
kill -HUP "$CU_PID"
wait_log 'reload failed' 5
grep 'reload failed' "$work/custos.log" | tail -1 | grep -qF "ocsp $R/web.ocsp: the CERTIFICATE IS REVOKED" &&
	ok "a response saying our certificate is revoked is refused" || fail "revoked: $(grep 'reload failed' "$work/custos.log" | tail -1)"
out=$("$bin" config check --host "$work/custos.yaml" 2>&1) &&
	fail "config check --host accepts the revoked response" ||
	{ printf '%s\n' "$out" | grep -q "error.*listeners\[0\] (tls).tls ocsp: ocsp $R/web.ocsp: the CERTIFICATE IS REVOKED" &&
		ok "config check --host refuses the revoked response" || fail "config check --host, revoked: $out"; }

# The short response's nextUpdate passes while it is loaded: no longer stapled, said once.
past() { [ "$(date +%s)" -gt "$next" ]; }
wait_until 120 past || fail "the short response's nextUpdate did not pass"
check "past its nextUpdate: not stapled" "$(staple -tls1_3 "${EC[@]}")" none
check "... the RSA certificate's response still is" "$(staple -tls1_3 "${RSA[@]}")" "successful good $(ocsp_serial rsa)"
wait_log "warn: tls: OCSP response $R/web.ocsp is past its nextUpdate: no longer stapled" 1
check "curl --cert-status refuses the handshake without a staple" "$("${C[@]}" --cert-status "$url" 2>/dev/null)" 000
check "curl without --cert-status still gets in" "$("${C[@]}" "$url" 2>/dev/null)" 200
# A reload with the expired file: loaded, with a warning, and not stapled.
cp "$R/short.ocsp" "$R/web.ocsp"
kill -HUP "$CU_PID"
wait_log 'proxy: reloaded' 4
grep -q "warn: tls: listener 127.0.0.1:$PORT: OCSP response $R/web.ocsp for $T/web.chain is past its nextUpdate (.*): loaded but NOT stapled" "$work/custos.log" &&
	ok "an expired response at load: loaded with a warning" || fail "no warning for the expired response at load"
check "an expired response at load: not stapled" "$(staple -tls1_2 "${EC[@]}")" none
out=$("$bin" config check --host "$work/custos.yaml" 2>&1)
printf '%s\n' "$out" | grep -q "error.*listeners\[0\] (tls).tls ocsp '$R/web.ocsp': past its nextUpdate" &&
	ok "config check --host refuses the expired response" || fail "config check --host, expired: $out"
kill -TERM "$CU_PID"
wait "$CU_PID"

# A response for another certificate at start: config check --host and up refuse, naming it.
cp "$R/other.ocsp" "$R/web.ocsp"
out=$("$bin" config check --host "$work/custos.yaml" 2>&1)
rc=$?
[ "$rc" -ne 0 ] && printf '%s\n' "$out" | grep -q "error.*listeners\[0\] (tls).tls ocsp: ocsp $R/web.ocsp: not a response for this certificate" &&
	ok "config check --host refuses a response for another certificate (rc $rc)" ||
	fail "config check --host, another certificate's response: rc $rc: $out"
timeout 60 "$bin" --log-format text up -c "$work/custos.yaml" 2>"$work/bad.log"
check "a response for another certificate: up refuses to start" "$?" 1
grep -q "ocsp $R/web.ocsp: not a response for this certificate" "$work/bad.log" &&
	ok "the refusal names the file" || fail "no reason naming the file: $(grep -i error "$work/bad.log" | head -3)"
# A certificate the responder does not know (srv.crt, made by openssl x509 -req, is not in
# cadb/index.txt): status unknown, refused.
cat "$T/srv.crt" "$T/ca.crt" >"$T/srv.chain"
ocsp_resp srv srv.ocsp -ndays 1
check "the responder does not know srv.crt" "$(ocsp_field "$R/srv.ocsp" 'Cert Status')" unknown
perl -pe "s|$T/web.chain|$T/srv.chain|; s|$T/web.key|$T/srv.key|; s|$R/web.ocsp|$R/srv.ocsp|" \
	"$work/custos.yaml" >"$work/unknown.yaml"
out=$("$bin" config check --host "$work/unknown.yaml" 2>&1)
printf '%s\n' "$out" | grep -q "error.*listeners\[0\] (tls).tls ocsp: ocsp $R/srv.ocsp: the responder does not know the certificate (status unknown)" &&
	ok "config check --host refuses a response with status unknown" || fail "config check --host, unknown: $out"
[ "$fails" -eq 0 ]
