#!/usr/bin/env bash
# A listener's `alpn` list through the real binary with openssl s_client: the default offers
# http/1.1; a list is applied in server preference order; a client offering none of the listed
# protocols gets the fatal no_application_protocol alert (RFC 7301 3.2) on TLS 1.2 and 1.3; a
# client offering no ALPN is served; `alpn: []` negotiates nothing. Protocols custos cannot speak
# (h2) are refused by `config check` with file:line:col, and `custos up` does not start.
. "$(dirname "$0")/proxy_lib.bash"

make_pki
start_fixture model
write_policy "$work/policy.yaml"
tls_block() { # tls_block ALPN_YAML
	printf '    tls:\n      cert: %s\n      key: %s\n%s\n' "$work/tls/srv.crt" "$work/tls/srv.key" "$1"
}
cat >"$work/custos.yaml" <<CFG
version: 1
workers: 1
listeners:
  - id: default
    address: "127.0.0.1:$(free_port)"
$(tls_block "")
  - id: prefers-http10
    address: "127.0.0.1:$(free_port)"
$(tls_block "      alpn: [http/1.0, http/1.1]")
  - id: no-alpn
    address: "127.0.0.1:$(free_port)"
$(tls_block "      alpn: []")
auth:
  api_keys: [{ id: alice, sha256: "$(sha256hex $ALICE)" }]
models:
  - id: test-model
    upstream: { url: "http://127.0.0.1:$FX_PORT/" }
audit:
  dir: $work/audit
admin:
  socket: $work/admin.sock
policy:
  file: $work/policy.yaml
CFG

# ---- protocols custos cannot speak: refused with their position, and up does not start
sed 's|      alpn: \[http/1.0, http/1.1\]|      alpn: [http/1.1, h2]|' "$work/custos.yaml" >"$work/h2.yaml"
chmod 600 "$work/h2.yaml"
line=$(grep -n 'alpn: \[http/1.1, h2\]' "$work/h2.yaml" | cut -d: -f1)
out=$("$bin" config check "$work/h2.yaml" 2>&1)
rc=$?
check "config check refuses alpn h2 (exit status)" "$rc" 1
grep -q "h2.yaml:$line:24: error: ALPN protocol 'h2' is not one custos can speak" <<<"$out" &&
	ok "... at file:line:col, saying why" || fail "config check output: $out"
"$bin" up -c "$work/h2.yaml" >"$work/up-h2.log" 2>&1 &
up_pid=$!
pids+=("$up_pid")
wait "$up_pid"
check "custos up refuses to start with alpn h2" "$?" 1

start_custos "$work/custos.yaml"
PORT3=$(sed -n 's/.*listener 3 on port \([0-9]*\).*/\1/p' "$work/custos.log" | head -1)
[ -n "$PORT3" ] || { fail "no third listener"; exit 1; }

# sc PORT ARGS...: one handshake (and a request) with s_client; prints its output.
sc() {
	local port=$1
	shift
	printf 'GET /v1/models HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n' "$ALICE" |
		timeout 10 openssl s_client -connect "127.0.0.1:$port" -servername localhost \
			-CAfile "$work/tls/ca.crt" -ign_eof "$@" 2>&1
}
alpn_of() { sed -n 's/^ALPN protocol: //p' | head -1; }
no_alpn() { grep -c '^No ALPN negotiated' || true; }
status_of() { sed -n 's/^HTTP\/1\.[01] \([0-9]*\).*/\1/p' | head -1; }

# ---- default list: http/1.1
check "default: h2,http/1.1 offered -> http/1.1" "$(sc "$PORT" -alpn h2,http/1.1 | alpn_of)" http/1.1
check "default: request served after ALPN" "$(sc "$PORT" -alpn h2,http/1.1 | status_of)" 200
for v in tls1_2 tls1_3; do
	out=$(sc "$PORT" -alpn h2 "-$v")
	grep -q 'alert no application protocol' <<<"$out" &&
		ok "default, $v: h2-only client gets the fatal no_application_protocol alert" ||
		fail "$v: h2-only client: $(grep -i -m3 'alert\|error\|ALPN\|^New' <<<"$out")"
	check "default, $v: no HTTP exchanged with the h2-only client" "$(status_of <<<"$out")" ""
done
check "default: http/1.0-only client refused (not listed)" "$(sc "$PORT" -alpn http/1.0 | grep -c 'alert no application protocol')" 1
check "default: client without ALPN is served" "$(sc "$PORT" | status_of)" 200
check "default: ... with no ALPN negotiated" "$(sc "$PORT" | no_alpn)" 1
check "curl (offers h2 and http/1.1) over the default listener" \
	"$(curl -sS --http2 --cacert "$work/tls/ca.crt" -o /dev/null -w '%{http_version} %{http_code}' -H "Authorization: Bearer $ALICE" "https://localhost:$PORT/v1/models")" "1.1 200"

# ---- a list in server preference order
check "[http/1.0, http/1.1]: client offering http/1.1,http/1.0 gets http/1.0" "$(sc "$PORT2" -alpn http/1.1,http/1.0 | alpn_of)" http/1.0
check "[http/1.0, http/1.1]: client offering http/1.1 only gets http/1.1" "$(sc "$PORT2" -alpn http/1.1 | alpn_of)" http/1.1
check "[http/1.0, http/1.1]: h2-only client refused" "$(sc "$PORT2" -alpn h2 | grep -c 'alert no application protocol')" 1

# ---- alpn: [] negotiates nothing: an offer is ignored, never refused
out=$(sc "$PORT3" -alpn h2)
check "[]: h2-only client is not refused" "$(grep -c 'alert no application protocol' <<<"$out")" 0
check "[]: ... no ALPN negotiated" "$(no_alpn <<<"$out")" 1
check "[]: ... and served over HTTP/1.1" "$(status_of <<<"$out")" 200
[ "$fails" -eq 0 ]
