#!/usr/bin/env bash
# Failed TLS handshakes through the real binary: each is one tls.reject event (remote, reason)
# and an info log line with the reason: a client certificate from an untrusted CA, an expired
# one, none where client_auth is required, an h2-only ALPN offer, plain HTTP sent to the TLS
# port, a TLS 1.1 client, a handshake that stalls. A connection that never sends a byte is not
# one. Past 10 a second per worker the rest are counted and written as one event with the sum.
. "$(dirname "$0")/proxy_lib.bash"

make_pki
# An expired client certificate from the trusted CA (a day in 2020).
make_short_cert expired expired cli.ext 86400 "2020-01-01 UTC"
start_fixture model --tokens 4
write_policy "$work/policy.yaml"
WORKERS=1 HEADER_TIMEOUT=1s write_config "$work/custos.yaml" "$FX_PORT"
start_custos "$work/custos.yaml"

sc() { timeout 10 openssl s_client -connect "127.0.0.1:$PORT" -servername localhost -CAfile "$work/tls/ca.crt" "$@" </dev/null >/dev/null 2>&1; }
url="https://localhost:$PORT/v1/models"
C=(curl -sS --cacert "$work/tls/ca.crt" --max-time 10 -o /dev/null -w '%{http_code}')

# rejected REASON: waits for custos to have logged the failed handshake (one at a time, so
# that each is its own event).
rejected() { wait_log "info: tls: handshake with 127.0.0.1:[0-9]* failed: $1" 1; }
check "untrusted client certificate refused" "$("${C[@]}" --cert "$work/tls/rogue.crt" --key "$work/tls/rogue.key" "$url" 2>/dev/null)" 000
rejected "client certificate: self-signed certificate"
check "expired client certificate refused" "$("${C[@]}" --cert "$work/tls/expired.crt" --key "$work/tls/expired.key" "$url" 2>/dev/null)" 000
rejected "client certificate: certificate has expired"
sc -alpn h2
rejected "no application protocol"
got=$(
	exec 3<>"/dev/tcp/127.0.0.1/$PORT"
	printf 'GET / HTTP/1.1\r\nHost: t\r\n\r\n' >&3
	timeout 30 cat <&3 | head -c 100 | wc -c
)
rejected "http request"
sc -tls1_1 -cipher 'DEFAULT:@SECLEVEL=0'
rejected "unsupported protocol"
# A TCP probe that sends nothing, closed or left open past client_header (1 s): no event. A
# handshake that starts (a TLS record header) and stalls: one. Both are held open until custos
# closes them (a client that gave up first, on a loaded machine, would be another case).
(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
(exec 3<>"/dev/tcp/127.0.0.1/$PORT" && timeout 60 cat <&3 >/dev/null) 2>/dev/null &
silent=$!
(exec 3<>"/dev/tcp/127.0.0.1/$PORT" && printf '\x16\x03\x01\x02\x00' >&3 && timeout 60 cat <&3 >/dev/null) 2>/dev/null &
stall=$!
wait "$silent" "$stall"
check "a valid handshake still serves" "$("${C[@]}" -H "Authorization: Bearer $ALICE" "$url")" 200
for r in "client certificate: self-signed certificate" "client certificate: certificate has expired" \
	"no application protocol" "http request" "unsupported protocol" "handshake not completed in time"; do
	wait_until 30 grep -q "info: tls: handshake with 127.0.0.1:[0-9]* failed: $r" "$work/custos.log" &&
		ok "logged at info: $r" || fail "no info log line with '$r'"
done

# A flood: 40 plain-HTTP connections to the TLS port at once, each read until custos closes it.
flood=()
for i in $(seq 40); do
	(exec 3<>"/dev/tcp/127.0.0.1/$PORT" && printf 'GET / HTTP/1.1\r\n\r\n' >&3 && timeout 60 cat <&3 >/dev/null) 2>/dev/null &
	flood+=($!)
done
wait "${flood[@]}" # all answered: each is counted (a sum still pending is written at shutdown)
kill -TERM "$CU_PID"
wait "$CU_PID"

ev() { audit_grep '"type":"tls.reject"'; }
for r in "client certificate: self-signed certificate" "client certificate: certificate has expired" \
	"no application protocol" "http request" "unsupported protocol" "handshake not completed in time"; do
	[ -n "$(ev | grep '"remote":"127.0.0.1:[0-9]*"' | grep '"decision":"deny"' | grep "\"reason\":\"$r\"" | grep '"count":1')" ] &&
		ok "tls.reject audited: $r" || fail "no tls.reject event with '$r'"
done
total=$(ev | sed -n 's/.*"count":\([0-9]*\).*/\1/p' | awk '{s += $1} END {print s}')
check "every failed handshake counted once (6 + 40), the silent probes not" "$total" 46
single=$(ev | grep -c '"count":1[,}]')
[ "$single" -lt 46 ] && ok "the flood was summed ($single events one by one)" || fail "no rate bound: $single events one by one"
[ -n "$(ev | grep '"remote":"\*"' | grep 'past the rate bound')" ] && ok "sum event written" || fail "no sum event"

# client_auth: required, no certificate
CLIENT_AUTH=required write_config "$work/custos2.yaml" "$FX_PORT"
start_custos "$work/custos2.yaml"
url="https://localhost:$PORT/v1/models"
check "required mTLS, no certificate: refused" "$("${C[@]}" -H "Authorization: Bearer $ALICE" "$url" 2>/dev/null)" 000
rejected ".*peer did not return a certificate"
kill -TERM "$CU_PID"
wait "$CU_PID"
[ -n "$(ev | grep 'peer did not return a certificate')" ] && ok "tls.reject audited: no certificate" || fail "no event for a missing certificate: $(ev | tail -2)"
[ "$fails" -eq 0 ]
