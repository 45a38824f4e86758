#!/usr/bin/env bash
# ops_trust_env: a trust store OpenSSL is pointed to outside /etc/ssl and /usr through custos'
# environment (SSL_CERT_FILE, SSL_CERT_DIR) is read-only in the confined proxy's and the audit
# shipper's Landlock views (docs/SANDBOX.md, docs/EGRESS.md "Confinement"). The test CA is
# copied to a directory of its own under /tmp, as a bundle and as a hashed directory:
#  - SSL_CERT_DIR: an upstream with no ca_file (the system store) verified at each handshake,
#    which reads the hashed directory; a TLS syslog sink with no tls.ca delivers;
#  - SSL_CERT_FILE: an upstream verified after a SIGHUP reload (whose new TLS context loads
#    the bundle under confinement);
#  - a missing file or directory, or the wrong kind, stops `custos up` at start, naming it.
. "$(dirname "$0")/proxy_lib.bash"
command -v python3 >/dev/null || skip "python3 not installed"

make_pki
# Not under $work: the proxy's view holds custos.yaml's directory.
store=$(mktemp -d /tmp/custos-trust-store.XXXXXX)
trap 'rm -rf "$store"; cleanup' EXIT
mkdir -p "$store/dir" "$store/file"
cp "$work/tls/ca.crt" "$store/file/bundle.pem"
cp "$work/tls/ca.crt" "$store/dir/test-ca.pem"
openssl rehash "$store/dir" 2>/dev/null || c_rehash "$store/dir" >/dev/null 2>&1 ||
	skip "neither openssl rehash nor c_rehash"
ls "$store/dir"/*.0 >/dev/null 2>&1 || skip "the hashed directory was not made"
unset SSL_CERT_FILE SSL_CERT_DIR # the test's own choice only

# The upstream: openssl s_server -WWW with the test CA's localhost certificate.
mkdir -p "$work/www/v1"
printf '{"object":"list","data":[{"id":"test-model"}]}' >"$work/www/v1/models"
up_port=$(free_port)
(cd "$work/www" && exec openssl s_server -quiet -accept "127.0.0.1:$up_port" \
	-cert "$work/tls/srv.crt" -key "$work/tls/srv.key" -WWW) >"$work/s_server.log" 2>&1 &
pids+=($!)
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$up_port") 2>/dev/null; }
wait_until 60 listening || { fail "s_server did not start"; exit 1; }

# A TLS syslog receiver (octet counting), one seq per line.
cat >"$work/rx.py" <<'PY'
import re, socket, ssl, sys
cert, key, portfile, out = sys.argv[1:5]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(4)
open(portfile, "w").write(str(srv.getsockname()[1]))
seq = re.compile(rb'\[custos@32473 seq="(\d+)"\]')
with open(out, "a") as f:
    while True:
        raw, _ = srv.accept()
        try:
            c = ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            continue
        data = b""
        while True:
            try:
                chunk = c.recv(65536)
            except (ssl.SSLError, OSError):
                break
            if not chunk:
                break
            data += chunk
            while True:
                sp = data.find(b" ")
                if sp < 0 or len(data) < sp + 1 + int(data[:sp]):
                    break
                n = int(data[:sp])
                msg, data = data[sp + 1:sp + 1 + n], data[sp + 1 + n:]
                f.write("%s\n" % seq.search(msg).group(1).decode())
                f.flush()
        c.close()
PY
python3 "$work/rx.py" "$work/tls/srv.crt" "$work/tls/srv.key" "$work/rx.port" "$work/rx.seqs" \
	2>"$work/rx.err" &
pids+=($!)
wait_until 30 test -s "$work/rx.port" || { fail "the receiver did not start"; exit 1; }

write_policy "$work/policy.yaml"
AUDIT_YAML=$(
	cat <<Y
  sinks:
    - id: tls-sys
      type: syslog
      address: "127.0.0.1:$(cat "$work/rx.port")"
      tls: { server_name: localhost }
      retry: { initial: 100ms, max: 500ms }
Y
) write_config "$work/custos.yaml" 1
# test-model over TLS, verified against the system store (no ca_file): the environment's.
perl -0777 -i -pe 's|url: "http://127.0.0.1:1/"|url: "https://localhost:'"$up_port"'/"|' "$work/custos.yaml"
models() {
	curl -sS --max-time 20 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $ALICE" \
		"http://127.0.0.1:$PORT2/v1/models"
}
ctl() { "$bin" ctl --socket "$work/admin.sock" "$@"; }
lag0() {
	ctl audit-status 2>/dev/null | python3 -c 'import json,sys
s = json.load(sys.stdin)
sys.exit(0 if s["sinks"] and s["sinks"][0]["cursor"] > 0 and s["sinks"][0]["lag_events"] == 0 else 1)'
}
stop_custos() {
	kill -TERM "$CU_PID"
	wait "$CU_PID" 2>/dev/null
}
confined() { grep -q "proxy confined: .*landlock abi [1-9]" "$work/custos.log"; }

# -- 1. SSL_CERT_DIR outside /etc/ssl: read at each handshake, by the proxy and the shipper.
SSL_CERT_DIR=$store/dir start_custos "$work/custos.yaml"
confined || skip "the proxy runs without Landlock: nothing to test"
grep -q "up: trust store from the environment (SSL_CERT_DIR=$store/dir): read-only" "$work/custos.log" &&
	ok "the environment's trust store is named at start" || fail "no trust store line"
check "SSL_CERT_DIR: the upstream verified from the hashed directory" "$(models)" 200
wait_until 60 lag0 && ok "SSL_CERT_DIR: the TLS sink verified the receiver and delivered" ||
	fail "sink: $(ctl audit-status 2>&1; grep 'audit sink tls-sys' "$work/custos.log" | tail -3)"
stop_custos
mv "$work/custos.log" "$work/custos.1.log"

# -- 2. SSL_CERT_FILE outside /etc/ssl: loaded again by a reload, under confinement.
SSL_CERT_FILE=$store/file/bundle.pem start_custos "$work/custos.yaml"
check "SSL_CERT_FILE: the upstream verified" "$(models)" 200
kill -HUP "$CU_PID"
wait_until 60 grep -q "proxy: reloaded (generation" "$work/custos.log" ||
	fail "no reload: $(grep -i reload "$work/custos.log" | tail -3)"
check "SSL_CERT_FILE: the upstream verified after a reload" "$(models)" 200
stop_custos
mv "$work/custos.log" "$work/custos.2.log"

# -- 3. what OpenSSL cannot read there stops the start, naming it.
refused() { # refused NAME PATTERN ENV=VALUE...
	local name=$1 pat=$2 rc=0
	shift 2
	env "$@" timeout 60 "$bin" --log-format text up -c "$work/custos.yaml" 2>"$work/bad.log" || rc=$?
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && grep -q -- "$pat" "$work/bad.log"; then
		ok "$name: refused ($(grep -m1 -o -- "$pat.*" "$work/bad.log"))"
	else
		fail "$name: exit $rc: $(tail -3 "$work/bad.log")"
	fi
}
refused "a missing SSL_CERT_FILE" "up: SSL_CERT_FILE=$store/none.pem (the trust store OpenSSL reads from custos' environment): No such file or directory" \
	SSL_CERT_FILE="$store/none.pem"
refused "SSL_CERT_FILE naming a directory" "up: SSL_CERT_FILE=$store/dir: not a regular file" \
	SSL_CERT_FILE="$store/dir"
refused "a missing SSL_CERT_DIR entry" "up: SSL_CERT_DIR entry $store/nodir (the trust store OpenSSL reads from custos' environment): No such file or directory" \
	SSL_CERT_DIR="$store/dir:$store/nodir"
refused "an SSL_CERT_DIR entry naming a file" "up: SSL_CERT_DIR entry $store/file/bundle.pem: not a directory" \
	SSL_CERT_DIR="$store/file/bundle.pem"
refused "a relative SSL_CERT_DIR" "up: SSL_CERT_DIR entry 'certs': not an absolute path" \
	SSL_CERT_DIR="certs"
[ "$fails" -eq 0 ]
