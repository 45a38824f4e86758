#!/usr/bin/env bash
# Hostile or misissued upstream certificates against the proxy's TLS to its models (the real
# binary; `openssl s_server -WWW` as the model server, one per certificate). Refused (502): a
# certificate for another name, a DNS-only certificate reached by IP, an IP-only certificate
# reached by name, a wildcard *.example.test for a.b.example.test, a partial wildcard
# f*.example.test for foo.example.test (RFC 9525 6.3: the wildcard is a whole left-most label;
# OpenSSL accepts it by default: BUG on main, served), an expired certificate, a self-signed one
# when a CA is configured. Served (200): the exact name, *.example.test for a.example.test, an
# IPv6 literal upstream https://[::1]:PORT/ whose certificate has IP:::1 (BUG on main: custos
# checked the name "[::1]", brackets and all, and refused every such upstream). The SNI custos
# sends is the upstream's name.
. "$(dirname "$0")/proxy_lib.bash"
python3 -c 'import socket; s = socket.socket(socket.AF_INET6); s.bind(("::1", 0))' 2>/dev/null ||
	skip "no IPv6 loopback (::1) to put an upstream on"

make_pki
T=$work/tls
mkdir -p "$work/www/v1"
printf '{"object":"list","data":[{"id":"test-model"}]}' >"$work/www/v1/models"
# srv NAME EXT [DAYS_FROM DAYS]: a server certificate NAME signed by the test CA with EXT.
srv() {
	local name=$1 ext=$2
	printf '%b\n' "$ext" >"$T/$name.ext"
	(cd "$T" && openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-subj "/CN=$name" -keyout "$name.key" -out "$name.csr" &&
		openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
			-extfile "$name.ext" -out "$name.crt" && chmod 600 "$name.key") \
		>/dev/null 2>&1 || skip "openssl could not make $name.crt"
}
srv dnsonly 'subjectAltName=DNS:localhost'
srv iponly 'subjectAltName=IP:127.0.0.1'
srv wild 'subjectAltName=DNS:*.example.test'
srv partial 'subjectAltName=DNS:f*.example.test'
srv v6 'subjectAltName=IP:::1'
printf 'subjectAltName=DNS:localhost\n' >"$T/exp.ext"
make_short_cert expired localhost exp.ext 86400 "2020-01-01 UTC"
(cd "$T" && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
	-subj /CN=localhost -addext 'subjectAltName=DNS:localhost' -keyout self.key -out self.crt &&
	chmod 600 self.key) >/dev/null 2>&1 || skip "openssl could not make self.crt"

# serve NAME HOST: an s_server with certificate NAME on HOST (127.0.0.1 or ::1); prints its port.
serve() {
	local port
	port=$(free_port)
	(cd "$work/www" && exec openssl s_server -accept "$([ "$2" = ::1 ] && echo "[::1]" || echo "$2"):$port" -cert "$T/$1.crt" \
		-key "$T/$1.key" -WWW -tlsextdebug) >"$work/s_$1.log" 2>&1 &
	pids+=($!)
	if [ "$2" = ::1 ]; then
		wait_until 60 python3 -c "import socket; socket.create_connection(('::1', $port), 1)" 2>/dev/null
	else
		wait_until 60 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null
	fi
	echo "$port"
}
p_dns=$(serve dnsonly 127.0.0.1)
p_ip=$(serve iponly 127.0.0.1)
p_wild=$(serve wild 127.0.0.1)
p_part=$(serve partial 127.0.0.1)
p_v6=$(serve v6 ::1)
p_exp=$(serve expired 127.0.0.1)
p_self=$(serve self 127.0.0.1)

# model ID URL [SERVER_NAME]
models=""
model() {
	models+="  - id: $1
    upstream:
      url: \"$2\"
      ca_file: $T/ca.crt
${3:+      server_name: $3
}"
}
model m-name "https://localhost:$p_dns/"
model m-wrongname "https://localhost:$p_dns/" other.example.test
model m-dns-by-ip "https://127.0.0.1:$p_dns/"
model m-ip "https://127.0.0.1:$p_ip/"
model m-ip-by-name "https://localhost:$p_ip/"
model m-wild "https://127.0.0.1:$p_wild/" a.example.test
model m-wild-deep "https://127.0.0.1:$p_wild/" a.b.example.test
model m-partial "https://127.0.0.1:$p_part/" foo.example.test
model m-v6 "https://[::1]:$p_v6/"
model m-expired "https://localhost:$p_exp/"
model m-self "https://localhost:$p_self/"
cat >"$work/policy.yaml" <<POL
version: 1
mode: enforce
principals:
  alice: { match: { api_key_sha256: "$(sha256hex "$ALICE")" } }
rules:
  - id: all
    effect: allow
    when: { direction: ingress, principal: [alice], route: "POST /v1/chat/completions" }
POL
# (s_server -WWW leaves a POST unanswered: a served request ends at upstream_read.)
UPSTREAM_READ=2s write_config "$work/custos.yaml" 1
printf '%s' "$models" >"$work/models"
perl -0777 -i -pe 'BEGIN { local $/; open my $f, "<", "'"$work"'/models"; $m = <$f> } s|  - id: test-model\n    upstream:\n      url: "http://127.0.0.1:1/"\n|$m|' "$work/custos.yaml"
"$bin" config check "$work/custos.yaml" >/dev/null 2>&1 || {
	"$bin" config check "$work/custos.yaml"
	fail "config"
	exit 1
}
start_custos "$work/custos.yaml"
# get MODEL: a chat request for MODEL on the plain listener; "502" when custos refused the
# upstream's certificate, "served" when the request reached the upstream (s_server -WWW answers
# a POST with an error of its own: any status but 502 from a completed handshake).
get() {
	local st
	st=$(curl -sS --max-time 30 -o "$work/out" -w '%{http_code}' -H "Authorization: Bearer $ALICE" \
		-H 'Content-Type: application/json' \
		-d '{"model":"'"$1"'","messages":[{"role":"user","content":"x"}]}' \
		"http://127.0.0.1:$PORT2/v1/chat/completions" 2>/dev/null)
	[ "$st" = 502 ] || [ "$st" = 000 ] && echo "$st" || echo served
}
for m in m-name m-ip m-wild m-v6; do
	check "upstream $m verified and served" "$(get "$m")" served
done
for m in m-wrongname m-dns-by-ip m-ip-by-name m-wild-deep m-partial m-expired m-self; do
	check "upstream $m refused" "$(get "$m")" 502
done
grep -q 'server name' "$work/s_dnsonly.log" && grep -q 'localhost' "$work/s_dnsonly.log" &&
	ok "SNI sent to the upstream" || fail "no SNI in the upstream's ClientHello"

# The upstreams' CA file replaced by a FIFO: a reload reads it again (renewed files in place)
# and must refuse it as not a regular file, not wait for a writer with the loop that takes
# SIGTERM held; the old contexts keep serving.
refusals() { grep -c 'proxy: reload failed' "$work/custos.log"; }
more_refusals() { [ "$(refusals)" -gt "$1" ]; }
n=$(refusals)
mv "$T/ca.crt" "$T/ca.crt.real"
mkfifo -m 600 "$T/ca.crt"
kill -HUP "$CU_PID"
if wait_until 20 more_refusals "$n"; then
	grep 'proxy: reload failed' "$work/custos.log" | tail -1 | grep -q "ca.crt: not a regular file" &&
		ok "upstream ca_file as a FIFO: reload refused, not waited on" ||
		fail "upstream ca_file as a FIFO: $(grep 'proxy: reload failed' "$work/custos.log" | tail -1)"
else
	fail "upstream ca_file as a FIFO: no refusal in 20 s (the reload waits for a writer)"
	timeout 5 sh -c ": >'$T/ca.crt'" # a writer, so that custos can go on
fi
rm -f "$T/ca.crt"
mv "$T/ca.crt.real" "$T/ca.crt"
check "after it, upstream m-name still verified and served" "$(get m-name)" served
[ "$fails" -eq 0 ]
