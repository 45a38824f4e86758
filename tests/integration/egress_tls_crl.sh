#!/usr/bin/env bash
# Egress: an intercepted https data source with crl_file (CRLs of its CA, made by `openssl ca`):
# the origin's certificate is checked against them, and a SIGHUP reload reads them again:
#   - not revoked: 200;
#   - a reload with a malformed CRL is refused (naming the source) and the CRL in force stays;
#   - a CRL past its nextUpdate: 502, "upstream certificate verification failed: CRL has
#     expired" (fail closed), although a session made under the older CRL was there to resume
#     (a reload gives the source a new context, with an empty session cache);
#   - a CRL that revokes the origin's certificate: 502, "... certificate revoked", audited.
set -u
. "${CUSTOS_SRC:?}/tests/integration/egress_lib.bash"
eg_init egress-crl curl openssl python3

P_D=$(port) P_IN=$(port) P_EG=$(port)
cd "$W" || exit 1
eg_upstream_pki
# The source's CA as an `openssl ca` (its database lists srv.crt once it is revoked).
mkdir cadb && : >cadb/index.txt && echo 01 >cadb/serial || { bad "cadb"; exit 1; }
# shellcheck disable=SC2016 # $dir is openssl's, not the shell's
printf '[ca]\ndefault_ca=c\n[c]\ndir=./cadb\ndatabase=$dir/index.txt\nserial=$dir/serial\nnew_certs_dir=$dir\ndefault_md=sha256\nunique_subject=no\npolicy=p\n[p]\ncommonName=supplied\n' >ca.cnf
ca() { openssl ca -config ca.cnf -cert upca.crt -keyfile upca.key "$@" >/dev/null 2>&1; }
ca -gencrl -crldays 1 -out crl0.pem || { echo "SKIPPED: openssl ca could not make a CRL"; exit 77; }
ca -gencrl -crl_lastupdate 20200101000000Z -crl_nextupdate 20200102000000Z -out crlx.pem ||
	{ echo "SKIPPED: openssl ca has no -crl_lastupdate (OpenSSL 3.0 or later)"; exit 77; }
ca -revoke srv.crt && ca -gencrl -crldays 1 -out crl1.pem || { bad "revoking srv.crt"; exit 1; }
# The CRL in a directory of its own, outside $W (which the proxy's Landlock view holds for the
# policy file): the view must name it for the proxy to read it.
R=$(mktemp -d /tmp/custos-egress-crl.XXXXXX)
trap 'eg_cleanup; rm -rf "$R"' EXIT
install_crl() { cp "$1" "$R/src.crl.new" && mv "$R/src.crl.new" "$R/src.crl"; }
install_crl crl0.pem

FX="$SRC/tests/integration/tls_resume_upstream.py"
python3 "$FX" srv.crt srv.key a.port a.log >a.out 2>&1 &
PIDS+=($!)
P_A=$(eg_port_file "$W/a.port") || exit 1
touch a.log

eg_m1_conf info "$(eg_source_yaml ra "https://localhost:$P_A/" public "intercept: true, ca_file: \"$W/upca.crt\", crl_file: \"$R/src.crl\"")" "  ca_dir: \"$W/ca\"
$EG_TIMEOUTS"
eg_m1_policy <<EOY
  ra: { url: "https://localhost:$P_A/", classification: public }
rules:
  - id: read
    effect: allow
    when: { direction: egress, data: [ra], method: GET }
EOY
check "config check --host accepts the CRL" "$BIN" config check --host custos.yaml
eg_start

get() { curl -s -o /dev/null -w '%{http_code}' --max-time 20 --cacert "$W/ca/ca.crt" -x "$PX" "https://localhost:$P_A/$1"; }
is() { [ "$1" = "$2" ] || { echo "  got '$1', want '$2'" >&2; return 1; }; }
n_in_log() { grep -c -- "$1" up.log; }
# hup TEXT N: SIGHUP, then waits for the Nth line of up.log holding TEXT.
hup() {
	HUP_TEXT=$1 HUP_N=$2
	kill -HUP "$UP"
	eg_wait 60 hup_seen || bad "no '$1' ($2) in up.log after the SIGHUP"
}
hup_seen() { [ "$(n_in_log "$HUP_TEXT")" -ge "$HUP_N" ]; }
reason() { eg_event "/$1" | grep -o '"reason":"[^"]*"'; }

check "not revoked: 200" is "$(get ok1)" 200
check "... and again (resumed)" is "$(get ok2)$(tail -1 a.log)" "200TLSv1.3 resumed"

printf -- '-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n' >"$R/src.crl.new" &&
	mv "$R/src.crl.new" "$R/src.crl"
hup "reload failed" 1
check "a malformed CRL: the reload is refused, naming the source" \
	bash -c "grep 'reload failed' '$W/up.log' | tail -1 | grep -q 'data source ra'"
check "... and the CRL in force stays (200)" is "$(get ok3)" 200

install_crl crlx.pem
hup "proxy: reloaded" 1
check "a CRL past its nextUpdate: 502" is "$(get expired)" 502
check "... its reason" is "$(reason expired)" '"reason":"upstream certificate verification failed: CRL has expired"'

install_crl crl1.pem
hup "proxy: reloaded" 2
check "the origin's certificate revoked: 502" is "$(get revoked)" 502
check "... audited with its reason" is "$(reason revoked)" '"reason":"upstream certificate verification failed: certificate revoked"'
eg_stop
eg_done
