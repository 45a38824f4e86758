# Shared helpers for the OCSP stapling tests (sourced after proxy_lib.bash; not a test itself:
# CTest runs *.sh). Responses are made offline by `openssl ocsp` from the test CA's database
# (make_short_cert's cadb/index.txt), as an operator's refresh job would fetch them.

# ocsp_setup: T (make_pki's directory) and R, a directory outside $work for the responses,
# removed on exit: $work is in the proxy's Landlock view for the policy file, so responses
# outside it check that the view names them (a reload reads them there).
ocsp_setup() {
	T=$work/tls
	R=$(mktemp -d /tmp/custos-ocsp-test.XXXXXX)
	trap 'cleanup; rm -rf "$R"' EXIT
}

# ocsp_cert NAME: $T/NAME.crt and NAME.key for localhost from the test CA (in its database, so
# its responder knows it) and $T/NAME.chain, the chain as served: the leaf, then its issuer
# (custos needs the issuer to check the response).
ocsp_cert() {
	make_short_cert "$1" localhost srv.ext 86400
	cat "$T/$1.crt" "$T/ca.crt" >"$T/$1.chain"
}

# ocsp_serial NAME: the serial number of $T/NAME.crt, as openssl prints it.
ocsp_serial() { openssl x509 -noout -serial -in "$T/$1.crt" | cut -d= -f2; }

# ocsp_resp NAME OUT ARGS...: $R/OUT, the test CA's OCSP response for NAME.crt as
# cadb/index.txt says, made offline: a request, then the responder's answer (ARGS: e.g. -ndays
# 2), signed by $RSIGNER.crt (and .key) of $T, the CA itself by default. Replaced by a rename.
ocsp_resp() {
	local name=$1 out=$2
	shift 2
	(cd "$T" && openssl ocsp -issuer ca.crt -cert "$name.crt" -no_nonce -reqout "$name.req" &&
		openssl ocsp -index cadb/index.txt -rsigner "${RSIGNER:-ca}.crt" \
			-rkey "${RSIGNER:-ca}.key" -CA ca.crt \
			-reqin "$name.req" -respout "$R/$out.new" "$@" &&
		mv "$R/$out.new" "$R/$out") >/dev/null 2>&1 ||
		skip "openssl ocsp could not make the response $out"
}

# ocsp_field FILE FIELD: FIELD ("This Update", "Cert Status"...) of the response in FILE.
ocsp_field() { openssl ocsp -respin "$1" -resp_text -noverify 2>/dev/null | sed -n "s/^ *$2: //p" | head -1; }

# ocsp_revoke NAME: the test CA revokes $T/NAME.crt (its responder says revoked from now on).
ocsp_revoke() {
	(cd "$T" && openssl ca -config ca.cnf -cert ca.crt -keyfile ca.key -revoke "$1.crt") \
		>/dev/null 2>&1 || skip "openssl ca could not revoke $1.crt"
}

# tls_sc PORT ARGS...: one handshake with 127.0.0.1:PORT (SNI localhost, the test CA trusted;
# nothing sent), openssl s_client's report.
tls_sc() {
	local port=$1
	shift
	echo | timeout 10 openssl s_client -connect "127.0.0.1:$port" -servername localhost \
		-CAfile "$T/ca.crt" "$@" 2>&1
}

# ocsp_staple PORT ARGS...: "STATUS CERT-STATUS SERIAL" of the response stapled by 127.0.0.1:PORT
# (s_client -status ARGS), "none" without one, "handshake-failed" when the chain does not verify.
ocsp_staple() {
	local o
	o=$(tls_sc "$@" -status)
	if printf '%s\n' "$o" | grep -q 'OCSP response: no response sent'; then
		echo none
		return
	fi
	printf '%s\n' "$o" | grep -q 'Verify return code: 0 (ok)' || {
		echo "handshake-failed"
		return
	}
	printf '%s %s %s\n' \
		"$(printf '%s\n' "$o" | sed -n 's/^ *OCSP Response Status: \([a-z]*\).*/\1/p' | head -1)" \
		"$(printf '%s\n' "$o" | sed -n 's/^ *Cert Status: //p' | head -1)" \
		"$(printf '%s\n' "$o" | sed -n 's/^ *Serial Number: //p' | head -1)"
}

# ocsp_this_update PORT ARGS...: the thisUpdate of the response 127.0.0.1:PORT staples.
ocsp_this_update() { tls_sc "$@" -status | sed -n 's/^ *This Update: //p' | head -1; }
