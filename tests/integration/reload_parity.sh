#!/usr/bin/env bash
# Reload parity through the real binary: each custos.yaml setting that a reload does not refuse
# (docs/CONFIG.md, "What a reload changes") reaches the running proxy by a SIGHUP, rather than
# being parsed and dropped. One setting changed per reload, its effect checked on a new
# connection: limits (header_count, request_line, body_max, json_depth), the listener's
# tls (min_version, alpn, ciphers, session_tickets), a listener's proxy_protocol,
# auth.mtls.enabled, routes, a model's
# aliases, limits.timeouts.upstream_read and a model's upstream url; and a
# refused reload applies no part of a tls: block (ticket_key_rotation, a process-wide period).
. "$(dirname "$0")/proxy_lib.bash"

make_pki
start_fixture slow --tokens 1 --delay-ms 1500
SLOW_PORT=$FX_PORT
start_fixture model --tokens 4
write_policy "$work/policy.yaml"
EXTRA_MODELS="  - id: slow-model
    upstream:
      url: \"http://127.0.0.1:$SLOW_PORT/\"" write_config "$work/custos.yaml" "$FX_PORT"
conf="$work/custos.yaml"
start_custos "$conf"
C=(curl -sS --cacert "$work/tls/ca.crt" --max-time 20 -o /dev/null -w '%{http_code}')
url="https://localhost:$PORT"
chat='{"model":"test-model","messages":[{"role":"user","content":"hi"}]}'
alice() { "${C[@]}" -H "Authorization: Bearer $ALICE" "$@"; }
n_reloads=0
# reload NAME PERL_EXPR: rewrites custos.yaml with PERL_EXPR, SIGHUP, waits until it is applied.
reload() {
	perl -0777 -i -pe "$2" "$conf" || fail "$1: perl"
	kill -HUP "$CU_PID"
	n_reloads=$((n_reloads + 1))
	wait_log 'proxy: reloaded' "$n_reloads"
	if grep -q 'reload failed' "$work/custos.log"; then
		grep 'reload failed' "$work/custos.log"
		fail "$1: reload refused"
	fi
	ok "$1: reload applied"
}
s_client() { timeout 10 openssl s_client -connect "127.0.0.1:$PORT" -servername localhost "$@" </dev/null 2>&1; }
# handshake ARGS...: the protocol and cipher a completed handshake agreed on ("TLSv1.2 NAME"),
# nothing when it failed.
handshake() { s_client "$@" | sed -n 's/^New, \(TLSv1\.[23]\), Cipher is \([A-Z0-9_-]*\)$/\1 \2/p' | grep -v NONE; }

check "chat before any reload" "$(alice -d "$chat" "$url/v1/chat/completions")" 200

# limits.header_count: 20 header fields pass under 100, not under 8.
hdrs=()
for i in $(seq 1 20); do hdrs+=(-H "X-Pad-$i: x"); done
check "20 header fields before" "$(alice "${hdrs[@]}" -d "$chat" "$url/v1/chat/completions")" 200
reload "limits.header_count" 's/limits:\n/limits:\n  header_count: 8\n/'
check "20 header fields after header_count 8" "$(alice "${hdrs[@]}" -d "$chat" "$url/v1/chat/completions")" 431

# limits.request_line: a 600-byte target passes under 8KiB, not under 256.
long="$url/v1/chat/completions?q=$(head -c 600 /dev/zero | tr '\0' a)"
reload "limits.header_count back" 's/  header_count: 8\n//'
check "long request line before" "$(alice -d "$chat" "$long")" 200
reload "limits.request_line" 's/limits:\n/limits:\n  request_line: 256\n/'
check "long request line after request_line 256" "$(alice -d "$chat" "$long")" 414

# limits.body_max: a 2 KiB body passes under 1MiB, not under 1KiB.
pad=$(head -c 2048 /dev/zero | tr '\0' a)
big="{\"model\":\"test-model\",\"user\":\"$pad\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"
check "2 KiB body before" "$(alice -d "$big" "$url/v1/chat/completions")" 200
reload "limits.body_max" 's/body_max: 1MiB/body_max: 1KiB/'
check "2 KiB body after body_max 1KiB" "$(alice -d "$big" "$url/v1/chat/completions")" 413

# limits.json_depth: an object nested 4 deep passes under 64, not under 2.
deep='{"model":"test-model","metadata":{"a":{"b":{}}},"messages":[{"role":"user","content":"hi"}]}'
check "nested body before" "$(alice -d "$deep" "$url/v1/chat/completions")" 200
reload "limits.json_depth" 's/limits:\n/limits:\n  json_depth: 2\n/'
check "nested body after json_depth 2" "$(alice -d "$deep" "$url/v1/chat/completions")" 400
reload "limits.json_depth back" 's/  json_depth: 2\n//'

# listeners[].tls.min_version: TLS 1.2 served under 1.2, refused under 1.3.
handshake -tls1_2 | grep -q '^TLSv1.2 ' && ok "TLS 1.2 before" || fail "TLS 1.2 refused before the reload"
reload "tls.min_version" 's/min_version: "1.2"/min_version: "1.3"/'
handshake -tls1_2 | grep -q '^TLSv1.2 ' && fail "TLS 1.2 still served after min_version 1.3" || ok "TLS 1.2 refused after min_version 1.3"
reload "tls.min_version back" 's/min_version: "1.3"/min_version: "1.2"/'

# listeners[].tls.alpn: http/1.1 selected by default, none offered with alpn: [].
s_client -alpn http/1.1 | grep -q 'ALPN protocol: http/1.1' && ok "ALPN http/1.1 before" || fail "ALPN http/1.1 not selected before"
reload "tls.alpn" 's/(min_version: "1.2"\n)/$1      alpn: []\n/'
s_client -alpn http/1.1 | grep -q 'No ALPN negotiated' && ok "no ALPN after alpn: []" || fail "ALPN still negotiated after alpn: []"

# listeners[].tls.ciphers: a TLS 1.2 suite served, then not once the list leaves it out.
handshake -tls1_2 -cipher ECDHE-ECDSA-AES128-GCM-SHA256 | grep -q AES128 &&
	ok "AES128 suite before" || fail "AES128 suite refused before"
reload "tls.ciphers" 's/(min_version: "1.2"\n)/$1      ciphers: "ECDHE-ECDSA-AES256-GCM-SHA384"\n/'
handshake -tls1_2 -cipher ECDHE-ECDSA-AES128-GCM-SHA256 | grep -q AES128 &&
	fail "AES128 suite still served after ciphers" || ok "AES128 suite refused after ciphers"

# listeners[].tls.session_tickets: a TLS 1.3 ticket issued, then none. A TLS 1.3 ticket comes
# after the handshake: ticket_session asks for a page and reads until custos closes.
ticket_session() {
	printf 'GET /v1/models HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' |
		timeout 10 openssl s_client -connect "127.0.0.1:$PORT" -servername localhost -tls1_3 \
			-ign_eof -sess_out "$1" >/dev/null 2>&1
}
ticket_session "$work/sess1"
openssl sess_id -in "$work/sess1" -noout -text 2>/dev/null | grep -q 'TLS session ticket:' &&
	ok "ticket issued before" || fail "no ticket before"
reload "tls.session_tickets" 's/(min_version: "1.2"\n)/$1      session_tickets: false\n/'
rm -f "$work/sess2"
ticket_session "$work/sess2"
openssl sess_id -in "$work/sess2" -noout -text 2>/dev/null | grep -q 'TLS session ticket:' &&
	fail "ticket still issued after session_tickets: false" || ok "no ticket after session_tickets: false"

# models[].aliases: an alias added is routed.
alias_chat='{"model":"tm-alias","messages":[{"role":"user","content":"hi"}]}'
check "unknown alias before" "$(alice -d "$alias_chat" "$url/v1/chat/completions")" 404
reload "models[].aliases" 's/(  - id: test-model\n)/$1    aliases: [tm-alias]\n/'
check "alias after reload" "$(alice -d "$alias_chat" "$url/v1/chat/completions")" 200

# limits.timeouts.upstream_read (the models' default): a model server that takes 1.5 s before
# its first byte is waited for under 10s, not under 300ms (504).
slow='{"model":"slow-model","messages":[{"role":"user","content":"hi"}]}'
check "slow model before" "$(alice -d "$slow" "$url/v1/chat/completions")" 200
reload "limits.timeouts.upstream_read" 's/upstream_read: 10s/upstream_read: 300ms/'
check "slow model after upstream_read 300ms" "$(alice -d "$slow" "$url/v1/chat/completions")" 504

# auth.mtls.enabled: a client certificate names analytics (allowed by the policy), then only
# gates the handshake (no credential: 401).
cert=(--cert "$work/tls/cli.crt" --key "$work/tls/cli.key")
check "client certificate names the caller before" "$("${C[@]}" "${cert[@]}" -d "$chat" "$url/v1/chat/completions")" 200
reload "auth.mtls.enabled" 's/\nmodels:\n/\nauth:\n  mtls:\n    enabled: false\nmodels:\n/'
check "client certificate names no one after mtls.enabled false" "$("${C[@]}" "${cert[@]}" -d "$chat" "$url/v1/chat/completions")" 401

# routes: a path route wins over the body's model, so a body naming no known model is routed.
other='{"model":"no-such-model","messages":[{"role":"user","content":"hi"}]}'
check "unknown model before the route" "$(alice -d "$other" "$url/v1/chat/completions")" 404
reload "routes" 's/\naudit:\n/\nroutes:\n  - path: \/v1\/chat\/completions\n    model: test-model\naudit:\n/'
check "path route after reload" "$(alice -d "$other" "$url/v1/chat/completions")" 200

# listeners[].proxy_protocol (with proxy_protocol_from): the plain listener answers a request
# without a PROXY header, then closes such a connection without an answer.
printf 'GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n' "$ALICE" >"$work/plain.req"
raw_http "$PORT2" "$work/plain.req" | head -1 | grep -q '^HTTP/1.1 200' &&
	ok "plain listener answers before" || fail "plain listener did not answer before"
reload "listeners[].proxy_protocol" 's/(  - id: plain\n    address: "[^"]*"\n)/$1    proxy_protocol: true\n    proxy_protocol_from: [127.0.0.1]\n/'
check "no PROXY header after proxy_protocol: true (closed, no answer)" "$(raw_http "$PORT2" "$work/plain.req" | wc -c)" 0

# models[].upstream.url: moved to a port nothing listens on.
dead=$(free_port)
reload "models[].upstream.url" "s/127.0.0.1:$FX_PORT\//127.0.0.1:$dead\//"
check "chat after the upstream moved away" "$(alice -d "$chat" "$url/v1/chat/completions")" 502


# A refused reload applies nothing, not even part of a tls: block. Here it names
# ticket_key_rotation: 1s (with session tickets back on) beside a broken policy: the ticket key
# period in force stays 12h. A ticket taken before it still resumes a session once 3 s have
# passed (a 1 s period would have dropped its key after 2 s); the sleep only lets a wrongly
# applied period expire the key, so a slow machine cannot make this pass or fail by chance.
reload "models[].upstream.url back" "s/127.0.0.1:$dead\//127.0.0.1:$FX_PORT\//"
reload "tls.session_tickets back" 's/      session_tickets: false\n//'
ticket_session "$work/sess3"
openssl sess_id -in "$work/sess3" -noout -text 2>/dev/null | grep -q 'TLS session ticket:' &&
	ok "ticket issued" || fail "no ticket issued"
cp "$work/policy.yaml" "$work/policy.yaml.good"
printf 'version: 1\nrules:\n  - id: x\n    effect: maybe\n' >"$work/policy.yaml"
perl -0777 -i -pe 's/(min_version: "1.2"\n)/$1      ticket_key_rotation: 1s\n/' "$conf"
kill -HUP "$CU_PID"
wait_log 'reload failed' 1
ok "reload with ticket_key_rotation 1s and a broken policy refused"
sleep 3
s_client -tls1_3 -sess_in "$work/sess3" | grep -q '^Reused, TLSv1.3' &&
	ok "the refused reload's ticket key period is not in force (session resumed)" ||
	fail "the refused reload's ticket_key_rotation 1s was applied (session not resumed)"
# The same change applied: the period is in force (the ticket issued before is dropped).
cp "$work/policy.yaml.good" "$work/policy.yaml"
kill -HUP "$CU_PID"
n_reloads=$((n_reloads + 1))
wait_log 'proxy: reloaded' "$n_reloads"
ticket_session "$work/sess4"
sleep 3
s_client -tls1_3 -sess_in "$work/sess4" | grep -q '^Reused, TLSv1.3' &&
	fail "ticket_key_rotation 1s applied by a reload: a 3 s old ticket still resumes" ||
	ok "ticket_key_rotation 1s applied by a reload (3 s old ticket refused)"
[ "$fails" -eq 0 ]
