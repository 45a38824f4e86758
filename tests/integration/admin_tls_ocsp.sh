#!/usr/bin/env bash
# OCSP stapling on the admin API's TLS listener (admin.tls ocsp, docs/ADMIN.md "TLS"): the
# listeners' code (proxy_tls_ocsp.sh covers its checks in depth), with responses made offline by
# `openssl ocsp` (ocsp_lib.bash), real openssl s_client -status and curl --cert-status:
# - config check --host accepts admin.tls.ocsp; the admin port staples the response ("successful",
#   "good", the certificate's serial) in TLS 1.2 and 1.3, only when the client asks; curl
#   --cert-status gets GET /healthz answered through it;
# - a SIGHUP reload with a refreshed response staples the new one (its thisUpdate); a reload with
#   a response for another certificate, or one saying the certificate is revoked, is refused,
#   naming the file, and the staple in force stays;
# - with the revoked response, config check --host is an error at admin.tls.ocsp
#   (file:line:col), and `custos up` does not start the admin API (the error names the file and
#   says REVOKED; the admin port takes no connection).
. "$(dirname "$0")/proxy_lib.bash"
. "$(dirname "$0")/ocsp_lib.bash"

ocsp_setup
admin_tcp_setup "  tls:" "    cert: $T/adm.chain" "    key: $T/adm.key" "    ocsp: $R/adm.ocsp"
ocsp_cert adm
ocsp_cert other # another certificate of the same CA: its responses are not the admin's
ocsp_resp adm adm.ocsp -ndays 2
ocsp_resp other other.ocsp -ndays 2

"$bin" config check --host "$work/custos.yaml" >"$work/check.out" 2>&1 &&
	ok "config check --host accepts admin.tls.ocsp" || fail "config check --host: $(cat "$work/check.out")"
start_admin_custos
wait_log "info: tls: listener admin: OCSP response $R/adm.ocsp for $T/adm.chain loaded (status good, produced .*, nextUpdate " 1

for v in -tls1_2 -tls1_3; do
	check "$v: the admin port staples its response" "$(ocsp_staple "$APORT" "$v")" "successful good $(ocsp_serial adm)"
done
n=$(tls_sc "$APORT" -tls1_2 -msg | grep -c 'CertificateStatus')
check "no status_request: no CertificateStatus sent" "$n" 0
C=(curl -sS --cacert "$T/ca.crt" --max-time 20 -H "Authorization: Bearer $TOKEN")
check "curl --cert-status: GET /healthz answered" \
	"$("${C[@]}" --cert-status "https://127.0.0.1:$APORT/healthz" 2>"$work/curl.err")" '{"status":"ok"}'

# A refreshed response (a later thisUpdate): stapled after a reload.
old=$(ocsp_field "$R/adm.ocsp" 'This Update')
check "the first staple is the file's" "$(ocsp_this_update "$APORT")" "$old"
fresher() {
	ocsp_resp adm adm.ocsp -ndays 2
	[ "$(ocsp_field "$R/adm.ocsp" 'This Update')" != "$old" ]
}
wait_until 30 fresher || fail "openssl ocsp made no response with a later thisUpdate"
new=$(ocsp_field "$R/adm.ocsp" 'This Update')
kill -HUP "$CU_PID"
wait_log 'admin: tls: the certificate of the reload is served from now on' 1
check "reload with a refreshed response: the new one is stapled" "$(ocsp_this_update "$APORT")" "$new"

# refused NTH TEXT: the NTH refused reload, its message holding TEXT; the staple in force stays.
refused() {
	kill -HUP "$CU_PID"
	wait_log 'reload failed' "$1"
	grep 'reload failed' "$work/custos.log" | tail -1 | grep -qF -- "$2" &&
		ok "reload refused: $2" || fail "reload failure without '$2': $(grep 'reload failed' "$work/custos.log" | tail -1)"
	check "... and the staple in force stays" "$(ocsp_this_update "$APORT")" "$new"
}
cp "$R/other.ocsp" "$R/adm.ocsp.new" && mv "$R/adm.ocsp.new" "$R/adm.ocsp"
refused 1 "admin.tls: ocsp $R/adm.ocsp: not a response for this certificate"
ocsp_revoke adm
ocsp_resp adm adm.ocsp -ndays 1
check "the CA's responder says revoked" "$(ocsp_field "$R/adm.ocsp" 'Cert Status')" revoked
refused 2 "admin.tls: ocsp $R/adm.ocsp: the CERTIFICATE IS REVOKED"
kill -TERM "$CU_PID"
wait "$CU_PID"

# The revoked response at start: config check --host says so at the key; up serves no admin API.
at=$(grep -n "^    ocsp: $R/adm.ocsp\$" "$work/custos.yaml" | cut -d: -f1)
out=$("$bin" config check --host "$work/custos.yaml" 2>&1)
rc=$?
[ "$rc" -ne 0 ] && printf '%s\n' "$out" | grep -qF "custos.yaml:$at:11: error: admin.tls.ocsp: ocsp $R/adm.ocsp: the CERTIFICATE IS REVOKED" &&
	ok "config check --host refuses the revoked response at admin.tls.ocsp (line $at, rc $rc)" ||
	fail "config check --host, revoked: rc $rc: $out"
: >"$work/custos.log"
rm -f "$work/admin.sock"
start_custos "$work/custos.yaml"
wait_log "error: up: admin API not started: admin.tls: ocsp $R/adm.ocsp: the CERTIFICATE IS REVOKED" 1
check "the revoked response at start: the admin port takes no connection" \
	"$(curl -s --cacert "$T/ca.crt" --max-time 20 -o /dev/null -w '%{http_code}' "https://127.0.0.1:$APORT/healthz")" 000
[ "$fails" -eq 0 ]
