#!/usr/bin/env bash
# Callers no policy principal matches are kept apart, through the real binary with curl: with
# a rule that lets anyone make one request a minute, each of these is its own rate bucket and
# its own name in the trail (a shared name would be one bucket: the second caller's 429):
# - two client certificates whose SAN URIs differ only past the name's cut (cut names end in
#   '#' and a SHA-256);
# - a certificate whose DNS name is another's CN;
# - one JWT `sub` from two of the issuers accepted (the issuer is part of the name).
# And `policy check` refuses a principal id of the form those names take (file:line:col).
. "$(dirname "$0")/proxy_lib.bash"

make_pki
start_fixture model --tokens 2

# ---- client certificates (SANs and CNs in the names below)
long="spiffe://test/long/$(head -c 236 /dev/zero | tr '\0' a)"
(
	cd "$work/tls" || exit 1
	mk() { # NAME CN EXT
		printf '%s\nextendedKeyUsage=clientAuth\n' "$3" >"$1.ext"
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$2" \
			-keyout "$1.key" -out "$1.csr" &&
			openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
				-extfile "$1.ext" -out "$1.crt" && chmod 600 "$1.key"
	}
	mk longa x "subjectAltName=URI:${long}1" && mk longb x "subjectAltName=URI:${long}2" &&
		mk dns x "subjectAltName=DNS:shared-name" && mk cn shared-name "basicConstraints=CA:FALSE"
) >/dev/null 2>&1 || skip "openssl could not make the client certificates"

# ---- a JWKS of one Ed25519 key; tokens from two issuers
k="$work/jwt"
mkdir -p "$k"
openssl genpkey -algorithm ED25519 -out "$k/ed.key" 2>/dev/null || skip "openssl cannot make an Ed25519 key"
ed_x=$(openssl pkey -in "$k/ed.key" -pubout -outform DER 2>/dev/null | tail -c 32 | b64url)
printf '{"keys":[{"kty":"OKP","kid":"d1","crv":"Ed25519","x":"%s"}]}\n' "$ed_x" >"$k/jwks.json"
chmod 644 "$k/jwks.json"
jwt() { # ISS SUB
	local input
	input="$(printf '{"alg":"EdDSA","kid":"d1"}' | b64url).$(printf '{"iss":"%s","sub":"%s","aud":"custos-test","exp":%d}' "$1" "$2" $(($(date +%s) + 600)) | b64url)"
	printf '%s' "$input" >"$k/input"
	printf '%s.%s' "$input" "$(openssl pkeyutl -sign -inkey "$k/ed.key" -rawin -in "$k/input" | b64url)"
}

cat >"$work/policy.yaml" <<POL
version: 1
principals:
  alice: { match: { api_key_sha256: "$(sha256hex "$ALICE")" } }
models:
  test-model: { isolation: none }
rules:
  - id: anyone-once-a-minute
    effect: allow
    when: { direction: ingress, route: "POST /v1/chat/completions" }
    limits: { requests_per_minute: 1 }
POL
chmod 644 "$work/policy.yaml"
AUTH_YAML="auth:
  jwt:
    jwks_file: $k/jwks.json
    issuers: [\"https://idp-a.test\", \"https://idp-b.test\"]
    audiences: [custos-test]" write_config "$work/custos.yaml" "$FX_PORT"
start_custos "$work/custos.yaml"

chat='{"model":"test-model","messages":[{"role":"user","content":"hi"}]}'
tls=(curl -sS --cacert "$work/tls/ca.crt" --max-time 20 -o /dev/null -w '%{http_code}' -D "$work/h")
as_cert() { "${tls[@]}" --cert "$work/tls/$1.crt" --key "$work/tls/$1.key" -d "$chat" "https://localhost:$PORT/v1/chat/completions"; }
as_jwt() { "${tls[@]}" -H "Authorization: Bearer $(jwt "$1" "$2")" -d "$chat" "https://localhost:$PORT/v1/chat/completions"; }
rid() { sed -n 's/^[Xx]-[Rr]equest-[Ii]d: *\([0-9a-f]*\).*/\1/p' "$work/h" | tr -d '\r'; }
principal_of() { # REQUEST_ID: the principal its event names
	wait_until 30 audit_grep "\"request_id\":\"$1\"" >/dev/null
	audit_grep "\"request_id\":\"$1\"" | sed -n 's/.*"principal":"\([^"]*\)".*/\1/p'
}

check "certificate A (long SAN URI)" "$(as_cert longa)" 200
pa=$(principal_of "$(rid)")
check "certificate A again within the minute: its bucket is spent" "$(as_cert longa)" 429
check "certificate B (SAN URI A's but for its last byte): its own bucket" "$(as_cert longb)" 200
pb=$(principal_of "$(rid)")
[[ $pa =~ ^cert:spiffe://test/long/a+#[0-9a-f]{64}$ ]] && ok "A's name is cut with a digest (${#pa} bytes)" ||
	fail "A's name: '$pa'"
[ -n "$pb" ] && [ "$pa" != "$pb" ] && ok "A and B have two names in the trail" || fail "A '$pa', B '$pb'"

check "certificate with the DNS name shared-name" "$(as_cert dns)" 200
check "certificate with the CN shared-name: its own bucket" "$(as_cert cn)" 200
check "  named cert-cn:" "$(principal_of "$(rid)")" cert-cn:shared-name

check "JWT sub u1 from idp-a" "$(as_jwt https://idp-a.test u1)" 200
check "JWT sub u1 from idp-b: another caller" "$(as_jwt https://idp-b.test u1)" 200
check "  named with its issuer" "$(principal_of "$(rid)")" "jwt:https://idp-b.test u1"
check "JWT sub u1 from idp-a again: its bucket is spent" "$(as_jwt https://idp-a.test u1)" 429

kill -TERM "$CU_PID"
wait "$CU_PID"

# ---- a principal may not take such a name: it would share those callers' bucket and name
cat >"$work/bad.yaml" <<'POL'
version: 1
principals:
  ops: { match: { cert_cn: ops } }
  "jwt:u1": { match: { cert_cn: u1 } }
rules:
  - { id: r, effect: allow, when: { principal: "jwt:u1" } }
POL
"$bin" policy check "$work/bad.yaml" >"$work/bad.out" 2>&1
check "policy check of a principal named jwt:u1: refused" "$?" 1
grep -q "bad.yaml:4:3: error: principal id 'jwt:u1' is reserved" "$work/bad.out" &&
	ok "the refusal names file:line:col" || fail "policy check said: $(cat "$work/bad.out")"
[ "$fails" -eq 0 ]
