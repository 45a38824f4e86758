#!/usr/bin/env bash
# The audit shipper's TLS to a SIEM (syslog over TLS, RFC 5425) checks the SIEM's certificate
# and name (the real binary; python3 ssl receivers, one per certificate, that note each
# completed handshake and the bytes they get). Delivered: the right name (server_name
# localhost). Refused, nothing delivered, the reason in the log: another server_name (hostname
# mismatch), a certificate from another CA, a partial wildcard f*.example.test for
# server_name foo.example.test (RFC 9525 6.3: a wildcard is a whole left-most label; OpenSSL
# accepts it unless told not to: BUG on main, delivered there).
. "$(dirname "$0")/proxy_lib.bash"
command -v python3 >/dev/null || skip "python3 not installed"

make_pki
T=$work/tls
(cd "$T" && printf 'subjectAltName=DNS:f*.example.test\n' >partial.ext &&
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=partial \
		-keyout partial.key -out partial.csr &&
	openssl x509 -req -in partial.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
		-extfile partial.ext -out partial.crt && chmod 600 partial.key) >/dev/null 2>&1 ||
	skip "openssl could not make partial.crt"

cat >"$work/recv.py" <<'PY'
import socket, ssl, sys, threading
cert, key, portf, out = sys.argv[1:5]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(16)
open(portf + ".tmp", "w").write(str(ls.getsockname()[1]))
import os
os.rename(portf + ".tmp", portf)
def serve(c):
    try:
        t = ctx.wrap_socket(c, server_side=True)
    except Exception:
        return
    with open(out, "a") as f:
        f.write("handshake\n")
    try:
        while True:
            b = t.recv(65536)
            if not b:
                break
            with open(out, "a") as f:
                f.write("bytes %d\n" % len(b))
    except Exception:
        pass
while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
# recv NAME CERT: a receiver with $T/CERT.crt; its port in $work/NAME.port, its notes in NAME.out.
recv() {
	: >"$work/$1.out"
	python3 "$work/recv.py" "$T/$2.crt" "$T/$2.key" "$work/$1.port" "$work/$1.out" >/dev/null 2>"$work/$1.err" &
	pids+=($!)
	wait_until 60 test -s "$work/$1.port" || skip "receiver $1 did not start: $(cat "$work/$1.err")"
	cat "$work/$1.port"
}
p_ok=$(recv ok srv)
p_wrong=$(recv wrong srv)
p_rogue=$(recv rogue rogue)
p_part=$(recv partial partial)
sink() { # sink ID PORT SERVER_NAME
	printf '    - id: %s\n      type: syslog\n      address: "127.0.0.1:%s"\n      tls: { ca: %s, server_name: %s }\n      retry: { initial: 100ms, max: 500ms }\n' \
		"$1" "$2" "$T/ca.crt" "$3"
}
start_fixture model --tokens 4
write_policy "$work/policy.yaml"
AUDIT_YAML="  sinks:
$(sink s-ok "$p_ok" localhost)
$(sink s-wrong "$p_wrong" other.example.test)
$(sink s-rogue "$p_rogue" localhost)
$(sink s-partial "$p_part" foo.example.test)" write_config "$work/custos.yaml" "$FX_PORT"
start_custos "$work/custos.yaml"
for i in 1 2 3; do
	curl -sS -o /dev/null --max-time 10 -H "Authorization: Bearer $ALICE" \
		"http://127.0.0.1:$PORT2/v1/models" || fail "request $i"
done
wait_until 60 grep -q '^bytes' "$work/ok.out" && ok "the SIEM with the right name gets the events" ||
	fail "nothing delivered to the right SIEM"
wait_log 'other.example.test\|127.0.0.1:'"$p_wrong"'.*hostname mismatch' 1
wait_log '127.0.0.1:'"$p_rogue"'.*server certificate: self-signed certificate' 1
wait_log '127.0.0.1:'"$p_part"'.*hostname mismatch' 1
# Each refused sink has tried (and failed) at least twice by now; the receivers' own notes say
# whether a handshake ever completed on their side (TLS 1.3: the server completes before the
# client checks, so the bytes are what counts).
wait_log '127.0.0.1:'"$p_part"'.*hostname mismatch' 2
for r in wrong rogue partial; do
	grep -q '^bytes' "$work/$r.out" && fail "events delivered to the '$r' SIEM" || ok "nothing delivered to the '$r' SIEM"
done
[ "$fails" -eq 0 ]
