#!/usr/bin/env bash
# TLS and identity through the real binary with openssl s_client and curl: TLS 1.2 and 1.3,
# older versions and weak suites refused, ECDSA and RSA certificates, ALPN http/1.1 (h2-only
# refused), session resumption with tickets, mTLS optional and required (SAN URI identity,
# untrusted client certificates refused; auth.mtls.enabled: false makes a certificate
# name no one), JWT (RS256, ES256, EdDSA valid; expired, not yet
# valid, wrong audience, wrong issuer, bad signature, alg none refused with 401); two certificates
# of one key type on a listener refused at start.
. "$(dirname "$0")/proxy_lib.bash"

make_pki
start_fixture model --tokens 4

# ---- JWKS with an RSA, an EC P-256 and an Ed25519 key
k="$work/jwt"
mkdir -p "$k"
(
	cd "$k" || exit 1
	openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.key
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ec.key
	openssl genpkey -algorithm ED25519 -out ed.key
	openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out other.key
) >/dev/null 2>&1 || skip "openssl cannot generate JWT keys"
hex2b64url() { perl -e 'print pack("H*", $ARGV[0])' "$1" | b64url; }
rsa_n=$(hex2b64url "$(openssl rsa -in "$k/rsa.key" -noout -modulus 2>/dev/null | cut -d= -f2)")
ec_der=$(openssl pkey -in "$k/ec.key" -pubout -outform DER 2>/dev/null | od -An -v -tx1 | tr -d ' \n')
ec_x=$(hex2b64url "${ec_der: -128:64}")
ec_y=$(hex2b64url "${ec_der: -64}")
ed_der=$(openssl pkey -in "$k/ed.key" -pubout -outform DER 2>/dev/null | od -An -v -tx1 | tr -d ' \n')
ed_x=$(hex2b64url "${ed_der: -64}")
cat >"$k/jwks.json" <<JWKS
{"keys":[
 {"kty":"RSA","kid":"r1","alg":"RS256","use":"sig","n":"$rsa_n","e":"AQAB"},
 {"kty":"EC","kid":"e1","crv":"P-256","x":"$ec_x","y":"$ec_y"},
 {"kty":"OKP","kid":"d1","crv":"Ed25519","x":"$ed_x"}
]}
JWKS
chmod 644 "$k/jwks.json"

# jwt ALG KID KEYFILE CLAIMS_JSON: a signed token.
jwt() {
	local alg=$1 kid=$2 key=$3 claims=$4 input sig
	input="$(printf '{"alg":"%s","typ":"JWT","kid":"%s"}' "$alg" "$kid" | b64url).$(printf '%s' "$claims" | b64url)"
	printf '%s' "$input" >"$k/input"
	case $alg in
	RS256) sig=$(openssl dgst -sha256 -sign "$key" "$k/input" | b64url) ;;
	ES256) # DER ECDSA-Sig-Value -> r||s, 32 bytes each
		sig=$(openssl dgst -sha256 -sign "$key" "$k/input" | perl -0777 -e '
			my $d = <STDIN>; my $i = 2; my @v;
			for (1..2) { $i++; my $l = ord(substr($d,$i++,1)); my $x = substr($d,$i,$l); $i += $l;
				$x =~ s/^\x00+//; push @v, ("\x00" x (32-length $x)) . $x; }
			print @v;' | b64url) ;;
	EdDSA) sig=$(openssl pkeyutl -sign -inkey "$key" -rawin -in "$k/input" | b64url) ;;
	none) sig="" ;;
	esac
	printf '%s.%s' "$input" "$sig"
}
now=$(date +%s)
claims() { printf '{"iss":"%s","sub":"user-1","aud":"%s","exp":%d,"nbf":%d}' "$1" "$2" "$3" "$4"; }
good=$(claims https://issuer.test custos-test $((now + 600)) $((now - 10)))

printf '# id sha256\nalice %s\n' "$(sha256hex sk-from-keys-file)" >"$work/api-keys"
chmod 644 "$work/api-keys"
AUTH_YAML="auth:
  api_keys_file: $work/api-keys
  jwt:
    jwks_file: $k/jwks.json
    issuers: [\"https://issuer.test\"]
    audiences: [custos-test]
    leeway: 5s"
EXTRA_CERTS="      certificates:
        - { cert: $work/tls/srv-rsa.crt, key: $work/tls/srv-rsa.key }"
write_policy "$work/policy.yaml"
write_config "$work/custos.yaml" "$FX_PORT"
start_custos "$work/custos.yaml"

sc() { timeout 10 openssl s_client -connect "127.0.0.1:$PORT" -servername localhost -CAfile "$work/tls/ca.crt" "$@" </dev/null 2>&1; }
proto() { sed -n 's/^New, \(TLSv1\.[0-9]\), .*/\1/p' | head -1; }

# ---- versions, suites, certificates, ALPN
check "TLS 1.3 handshake" "$(sc -tls1_3 | proto)" TLSv1.3
check "TLS 1.2 handshake" "$(sc -tls1_2 | proto)" TLSv1.2
sc -tls1_1 -cipher 'DEFAULT:@SECLEVEL=0' | grep -q 'Cipher is (NONE)\|alert\|error' && ok "TLS 1.1 refused" || fail "TLS 1.1 accepted"
sc -tls1_2 -cipher 'AES128-SHA' | grep -q 'Cipher is (NONE)\|alert\|error' && ok "non-forward-secret CBC suite refused" || fail "AES128-SHA accepted"
sc -tls1_2 -cipher ECDHE-ECDSA-AES128-GCM-SHA256 | grep -q 'Peer signature type: ECDSA\|Server public key is 256 bit' && ok "ECDSA certificate served" || fail "no ECDSA certificate"
sc -tls1_2 -cipher ECDHE-RSA-AES128-GCM-SHA256 | grep -q 'Server public key is 2048 bit' && ok "RSA certificate served to an RSA-only client" || fail "no RSA certificate"
check "ALPN http/1.1" "$(sc -alpn h2,http/1.1 | sed -n 's/^ALPN protocol: //p')" http/1.1
sc -alpn h2 | grep -q 'no application protocol\|alert' && ok "h2-only client refused (no_application_protocol)" || fail "h2-only client accepted"
check "verify result" "$(sc -tls1_3 | sed -n 's/^ *Verify return code: \([0-9]*\).*/\1/p' | head -1)" 0

# ---- session resumption (tickets)
sc -tls1_2 -sess_out "$work/sess.pem" >/dev/null
check "TLS 1.2 session resumed from a ticket" "$(sc -tls1_2 -sess_in "$work/sess.pem" | grep -c '^Reused')" 1

# ---- mTLS (optional on this listener)
C=(curl -sS --cacert "$work/tls/ca.crt" --max-time 20 -o "$work/out" -w '%{http_code}')
chat='{"model":"test-model","messages":[{"role":"user","content":"hi"}]}'
url="https://localhost:$PORT/v1/chat/completions"
check "client certificate (SAN URI spiffe://test/team/analytics/job1) -> principal analytics" \
	"$("${C[@]}" --cert "$work/tls/cli.crt" --key "$work/tls/cli.key" -d "$chat" "$url")" 200
code=$("${C[@]}" --cert "$work/tls/rogue.crt" --key "$work/tls/rogue.key" -d "$chat" "$url" 2>/dev/null)
check "client certificate from an untrusted CA refused at the handshake" "$code" 000
check "optional mTLS: no certificate, no key -> 401" "$("${C[@]}" -d "$chat" "$url")" 401
# A presented credential that fails is a failure, even with a certificate that would pass.
check "client certificate and an API key no principal matches -> 401" \
	"$("${C[@]}" -D "$work/bogus.hdr" --cert "$work/tls/cli.crt" --key "$work/tls/cli.key" -H 'Authorization: Bearer sk-totally-bogus' -d "$chat" "$url")" 401
bogus_id=$(sed -n 's/^[Xx]-[Rr]equest-[Ii]d: *\([0-9a-f]*\).*/\1/p' "$work/bogus.hdr" | tr -d '\r')
check "client certificate and alice's API key -> 200 (the key names the principal)" \
	"$("${C[@]}" --cert "$work/tls/cli.crt" --key "$work/tls/cli.key" -H "Authorization: Bearer $ALICE" -d "$chat" "$url")" 200

check "API key from auth.api_keys_file names its principal" \
	"$("${C[@]}" -H 'Authorization: Bearer sk-from-keys-file' -d "$chat" "$url")" 200

# ---- JWT
bearer() { "${C[@]}" -H "Authorization: Bearer $1" -d "$chat" "$url"; }
check "JWT RS256 valid" "$(bearer "$(jwt RS256 r1 "$k/rsa.key" "$good")")" 200
check "JWT ES256 valid" "$(bearer "$(jwt ES256 e1 "$k/ec.key" "$good")")" 200
check "JWT EdDSA valid" "$(bearer "$(jwt EdDSA d1 "$k/ed.key" "$good")")" 200
check "JWT expired -> 401" "$(bearer "$(jwt RS256 r1 "$k/rsa.key" "$(claims https://issuer.test custos-test $((now - 100)) $((now - 700)))")")" 401
check "JWT not yet valid -> 401" "$(bearer "$(jwt RS256 r1 "$k/rsa.key" "$(claims https://issuer.test custos-test $((now + 900)) $((now + 300)))")")" 401
check "JWT wrong audience -> 401" "$(bearer "$(jwt RS256 r1 "$k/rsa.key" "$(claims https://issuer.test other $((now + 600)) $((now - 10)))")")" 401
check "JWT wrong issuer -> 401" "$(bearer "$(jwt RS256 r1 "$k/rsa.key" "$(claims https://evil.test custos-test $((now + 600)) $((now - 10)))")")" 401
check "JWT signed by an unknown key -> 401" "$(bearer "$(jwt RS256 r1 "$k/other.key" "$good")")" 401
t=$(jwt EdDSA d1 "$k/ed.key" "$good")
tampered="${t%%.*}.$(printf '%s' "${good/user-1/admin}" | b64url).${t##*.}"
check "JWT with altered claims -> 401" "$(bearer "$tampered")" 401
check "JWT alg none -> 401" "$(bearer "$(jwt none r1 "$k/rsa.key" "$good").")" 401
check "JWT RS256 header on an EC key id -> 401" "$(bearer "$(jwt RS256 e1 "$k/rsa.key" "$good")")" 401
# hostile claims in tokens the key signed (tests/unit/test_jwt.c has the rest): a principal claim
# with a control character, an iss with a NUL after an accepted issuer
check "JWT sub with a newline -> 401" "$(bearer "$(jwt EdDSA d1 "$k/ed.key" "${good/user-1/user-1\\nadmin}")")" 401
check "JWT iss with a NUL after an accepted one -> 401" "$(bearer "$(jwt EdDSA d1 "$k/ed.key" "${good/issuer.test/issuer.test\\u0000.evil}")")" 401
# auth.jwt.algorithms is enforced (and reloaded): RS256 left out, a valid RS256 token is refused.
sed -i 's/^    leeway: 5s$/    leeway: 5s\n    algorithms: [ES256, EdDSA]/' "$work/custos.yaml"
grep -q 'algorithms: \[ES256, EdDSA\]' "$work/custos.yaml" || fail "algorithms not written"
n=$(grep -c 'proxy: reloaded' "$work/custos.log")
kill -HUP "$CU_PID"
wait_log 'proxy: reloaded' "$((n + 1))"
check "JWT RS256 valid but not in auth.jwt.algorithms -> 401" "$(bearer "$(jwt RS256 r1 "$k/rsa.key" "$good")")" 401
check "JWT ES256 (listed) still valid" "$(bearer "$(jwt ES256 e1 "$k/ec.key" "$good")")" 200

# ---- a refused JWT is audited: http.reject, 401, reason "invalid token", found by the
# answer's request id (polled: the audit writer is asynchronous)
"${C[@]}" -D "$work/jwt401.hdr" -H "Authorization: Bearer $(jwt RS256 r1 "$k/other.key" "$good")" \
	-d "$chat" "$url" >/dev/null
jwt_id=$(sed -n 's/^[Xx]-[Rr]equest-[Ii]d: *\([0-9a-f]*\).*/\1/p' "$work/jwt401.hdr" | tr -d '\r')
wait_until 30 audit_grep "\"type\":\"http.reject\",\"request_id\":\"$jwt_id\".*\"status\":401,\"decision\":\"deny\",\"reason\":\"invalid token\"" >/dev/null &&
	ok "refused JWT audited (http.reject, 401, invalid token)" || fail "refused JWT ($jwt_id) not audited"

kill -TERM "$CU_PID"
wait "$CU_PID"

# ---- the audit event names the method that authenticated the principal it names
check "certificate alone: analytics by mtls" "$(audit_grep '"principal":"analytics","auth":"mtls".*"status":200' | wc -l | tr -d ' ')" 1
check "no principal named by a key it was not matched on" "$(audit_grep '"principal":"analytics","auth":"(api_key|jwt)"' | wc -l | tr -d ' ')" 0
check "certificate and alice's key: alice by api_key" "$(audit_grep '"principal":"alice","auth":"api_key".*"status":200' | wc -l | tr -d ' ')" 2
check "certificate and a bogus key: 401 by api_key, no principal" \
	"$(audit_grep "\"request_id\":\"$bogus_id\".*\"principal\":\"unknown-api-key\",\"auth\":\"api_key\".*\"status\":401" | wc -l | tr -d ' ')" 1

# ---- mTLS required: a second instance
CLIENT_AUTH=required AUTH_YAML="" EXTRA_CERTS="" write_config "$work/custos2.yaml" "$FX_PORT"
start_custos "$work/custos2.yaml"
url="https://localhost:$PORT/v1/chat/completions"
check "required mTLS: no certificate -> handshake refused" "$("${C[@]}" -H "Authorization: Bearer $ALICE" -d "$chat" "$url" 2>/dev/null)" 000
check "required mTLS: certificate -> 200" "$("${C[@]}" --cert "$work/tls/cli.crt" --key "$work/tls/cli.key" -d "$chat" "$url")" 200
check "required mTLS: certificate and API key -> 200 (key names the principal)" "$("${C[@]}" --cert "$work/tls/cli.crt" --key "$work/tls/cli.key" -H "Authorization: Bearer $ALICE" -d "$chat" "$url")" 200
kill -TERM "$CU_PID"
wait "$CU_PID"

# ---- auth.mtls.enabled: false: the certificate is still required and verified in the
# handshake, but names no one: a request needs a bearer credential.
CLIENT_AUTH=required AUTH_YAML="auth:
  mtls:
    enabled: false" EXTRA_CERTS="" write_config "$work/custos4.yaml" "$FX_PORT"
start_custos "$work/custos4.yaml"
url="https://localhost:$PORT/v1/chat/completions"
check "mtls off: no certificate -> handshake still refused" "$("${C[@]}" -H "Authorization: Bearer $ALICE" -d "$chat" "$url" 2>/dev/null)" 000
check "mtls off: certificate alone -> 401" "$("${C[@]}" -D "$work/off.hdr" --cert "$work/tls/cli.crt" --key "$work/tls/cli.key" -d "$chat" "$url")" 401
off_id=$(sed -n 's/^[Xx]-[Rr]equest-[Ii]d: *\([0-9a-f]*\).*/\1/p' "$work/off.hdr" | tr -d '\r')
check "mtls off: certificate and alice's API key -> 200" "$("${C[@]}" -D "$work/off2.hdr" --cert "$work/tls/cli.crt" --key "$work/tls/cli.key" -H "Authorization: Bearer $ALICE" -d "$chat" "$url")" 200
off2_id=$(sed -n 's/^[Xx]-[Rr]equest-[Ii]d: *\([0-9a-f]*\).*/\1/p' "$work/off2.hdr" | tr -d '\r')
kill -TERM "$CU_PID"
wait "$CU_PID"
check "mtls off: the 401 names no certificate identity" \
	"$(audit_grep "\"request_id\":\"$off_id\".*\"principal\":\"anonymous\".*\"status\":401" | grep -vc 'analytics')" 1
check "mtls off: the 200 is alice by api_key" \
	"$(audit_grep "\"request_id\":\"$off2_id\".*\"principal\":\"alice\",\"auth\":\"api_key\".*\"status\":200" | wc -l | tr -d ' ')" 1

# ---- two certificates of one key type on a listener: OpenSSL would keep only the second;
# custos refuses to start and names both files.
(
	cd "$work/tls" || exit 1
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
		-keyout srv-ec2.key -out srv-ec2.csr
	openssl x509 -req -in srv-ec2.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
		-extfile srv.ext -out srv-ec2.crt
	chmod 600 srv-ec2.key
) >/dev/null 2>&1
EXTRA_CERTS="      certificates:
        - { cert: $work/tls/srv-ec2.crt, key: $work/tls/srv-ec2.key }" write_config "$work/custos3.yaml" "$FX_PORT"
chmod 600 "$work/custos3.yaml"
timeout 30 "$bin" --log-format text up -c "$work/custos3.yaml" 2>"$work/dup.log"
check "two ECDSA certificates on one listener: up refuses to start" "$?" 1
grep -q "srv.crt and .*srv-ec2.crt are both ECDSA certificates" "$work/dup.log" &&
	ok "the refusal names both certificates" || fail "no reason naming both: $(grep -i 'error' "$work/dup.log" | head -3)"
[ "$fails" -eq 0 ]
