#!/usr/bin/env bash
# PROXY protocol (listeners[].proxy_protocol) through the real binary: curl --haproxy-protocol
# (v1) and hand-made v1/v2 headers on a plain listener are served, and the audit event names
# the client from the header (remote) and the balancer (via); v2 LOCAL keeps the socket
# address; a header split over several writes, and TLS after a v2 header on the TLS listener,
# work; a v2 header whose PP2_TYPE_CRC32C TLV holds the right checksum is served, one with a
# wrong checksum is refused ("PROXY v2: CRC32C mismatch") and its client not used; a v2
# header's AUTHORITY and UNIQUE_ID TLVs are in every event of its connection (via_authority,
# via_unique_id in hex; tls.reject too; CEF dhost, LEEF dstHost and viaUniqueId in the
# export), absent without them, and an AUTHORITY that is no host name, a UNIQUE_ID over 128
# bytes and either of them twice are refused with the reason and their client not used; a
# connection without a header, a malformed header, a header cut short by a shutdown or by
# silence past client_header, and a peer outside proxy_protocol_from are closed without an
# answer and audited as proxy_protocol.reject with the reason; a silent connection is not
# audited; /metrics counts both outcomes; of a flood of 40 bad headers at most 10 a second are
# audited one by one and the rest in a sum event, every rejection counted once.
. "$(dirname "$0")/proxy_lib.bash"
command -v python3 >/dev/null || skip "python3 not installed"
client="$(dirname "$0")/proxy_protocol_client.py"

make_pki
start_fixture model --tokens 4
write_policy "$work/policy.yaml"
P3=$(free_port)
# Listener 2 (plain) and listener 1 (TLS) trust 127.0.0.1; listener 3 trusts only a range no
# test connection comes from (never contacted: configuration only).
AUTH_YAML="    proxy_protocol: true
    proxy_protocol_from: [127.0.0.1/32, \"::1\"]
  - id: untrusted
    address: \"127.0.0.1:$P3\"
    proxy_protocol: true
    proxy_protocol_from: [192.0.2.0/24]" WORKERS=1 HEADER_TIMEOUT=2s write_config "$work/custos.yaml" "$FX_PORT"
perl -0777 -i -pe 's/(  - id: tls\n)/$1    proxy_protocol: true\n    proxy_protocol_from: [127.0.0.0\/8]\n/' "$work/custos.yaml"
start_custos "$work/custos.yaml"

pc() { timeout 60 python3 "$client" --token "$ALICE" "$@"; }
ev() { audit_grep '"type":"http.request"'; }
rej() { audit_grep '"type":"proxy_protocol.reject"'; }

# curl sends "PROXY TCP4 127.0.0.1 127.0.0.1 <its port> <our port>".
check "curl --haproxy-protocol (v1)" "$(curl -sS --max-time 30 --haproxy-protocol -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $ALICE" "http://127.0.0.1:$PORT2/v1/models")" 200
wait_until 30 eval 'ev | grep -q "\"remote\":\"127.0.0.1:[0-9]*\",\"via\":\"127.0.0.1:[0-9]*\""' &&
	ok "curl's request audited with remote and via" || fail "no event with remote and via: $(ev | tail -1)"

check "v1 header and request in one write" "$(pc --port "$PORT2" --v1 'TCP4 203.0.113.7 192.0.2.1 4242 80')" 200
wait_until 30 eval 'ev | grep -q "\"remote\":\"203.0.113.7:4242\",\"via\":\"127.0.0.1:[0-9]*\""' &&
	ok "the client from the v1 header is the event's remote" || fail "no event with remote 203.0.113.7:4242: $(ev | tail -1)"

check "v2 IPv6 header split over several writes" "$(pc --port "$PORT2" --split --v2 '2001:db8::7 2001:db8::1 5555 80')" 200
wait_until 30 eval 'ev | grep -q "\"remote\":\"\[2001:db8::7\]:5555\",\"via\":\"127.0.0.1:[0-9]*\""' &&
	ok "the client from the v2 header is the event's remote" || fail "no event with remote [2001:db8::7]:5555: $(ev | tail -1)"

n_before=$(ev | grep -c '"via"')
check "v2 LOCAL (a health check)" "$(pc --port "$PORT2" --v2 LOCAL)" 200
wait_until 30 eval '[ "$(ev | wc -l)" -ge 4 ]' || fail "no event for the LOCAL request"
last=$(ev | tail -1)
case "$last" in *'"via"'*) fail "v2 LOCAL: the event has a via: $last" ;; *'"remote":"127.0.0.1:'*) ok "v2 LOCAL keeps the socket address" ;; *) fail "v2 LOCAL: unexpected event $last" ;; esac
[ "$(ev | grep -c '"via"')" = "$n_before" ] || fail "v2 LOCAL added a via"

check "TLS after a v2 header" "$(pc --port "$PORT" --tls-ca "$work/tls/ca.crt" --v2 '198.51.100.9 192.0.2.1 40000 443')" 200
wait_until 30 eval 'ev | grep -q "\"remote\":\"198.51.100.9:40000\",\"via\":\"127.0.0.1:[0-9]*\""' &&
	ok "TLS: the client from the v2 header is the event's remote" || fail "TLS: no event with remote 198.51.100.9:40000"
check "TLS after a split v1 header" "$(pc --port "$PORT" --tls-ca "$work/tls/ca.crt" --split --v1 'TCP4 198.51.100.10 192.0.2.1 40001 443')" 200
# A CRC32C TLV (its checksum computed by the client, bit by bit) is verified: right, served.
check "v2 header with a right CRC32C" "$(pc --port "$PORT2" --crc good --v2 '203.0.113.20 192.0.2.1 40010 80')" 200
wait_until 30 eval 'ev | grep -q "\"remote\":\"203.0.113.20:40010\",\"via\":\"127.0.0.1:[0-9]*\""' &&
	ok "the client from a v2 header with a right CRC32C is the event's remote" || fail "no event with remote 203.0.113.20:40010: $(ev | tail -1)"
check "v2 IPv6 header with a right CRC32C, split" "$(pc --port "$PORT2" --split --crc good --v2 '2001:db8::20 2001:db8::1 40011 80')" 200
check "TLS after a v2 header with a right CRC32C" "$(pc --port "$PORT" --tls-ca "$work/tls/ca.crt" --crc good --v2 '198.51.100.20 192.0.2.1 40012 443')" 200
# PP2_TYPE_AUTHORITY and PP2_TYPE_UNIQUE_ID (HAProxy's proxy-v2-options authority,unique-id):
# both requests of a connection carry them; a header without them adds neither.
U=0001feff7f80410aabcdef
check "v2 header with AUTHORITY and UNIQUE_ID under a right CRC32C, two requests" "$(pc --port "$PORT2" --repeat 2 --crc good --authority api.example.com --unique-id $U --v2 '203.0.113.30 192.0.2.1 40020 80')" "200 200"
tlv_ev='"remote":"203.0.113.30:40020","via":"127.0.0.1:[0-9]*","via_authority":"api.example.com","via_unique_id":"'$U'"'
wait_until 30 eval '[ "$(ev | grep -c "$tlv_ev")" = 2 ]' &&
	ok "both requests' events carry via_authority and via_unique_id" || fail "not two events with via_authority and via_unique_id: $(ev | grep 203.0.113.30)"
check "TLS after a split v2 header with AUTHORITY and UNIQUE_ID" "$(pc --port "$PORT" --tls-ca "$work/tls/ca.crt" --split --authority localhost --unique-id 00 --v2 '198.51.100.30 192.0.2.1 40021 443')" 200
wait_until 30 eval 'ev | grep -q "\"remote\":\"198.51.100.30:40021\",\"via\":\"127.0.0.1:[0-9]*\",\"via_authority\":\"localhost\",\"via_unique_id\":\"00\""' &&
	ok "TLS: the event carries via_authority and via_unique_id" || fail "TLS: no event with via_authority localhost: $(ev | grep 198.51.100.30)"
check "v2 header with only a UNIQUE_ID" "$(pc --port "$PORT2" --unique-id ff --v2 '203.0.113.31 192.0.2.1 40022 80')" 200
wait_until 30 eval 'ev | grep -q "\"remote\":\"203.0.113.31:40022\",\"via\":\"127.0.0.1:[0-9]*\",\"via_unique_id\":\"ff\""' &&
	ok "a UNIQUE_ID alone: via_unique_id, no via_authority" || fail "no event with via_unique_id ff alone: $(ev | grep 203.0.113.31)"
if (ev | grep -v -e 203.0.113.30 -e 198.51.100.30 -e 203.0.113.31) | grep -q '"via_authority"\|"via_unique_id"'; then
	fail "an event of a header without those TLVs has via_authority or via_unique_id"
else
	ok "headers without those TLVs add neither field"
fi
# The SIEM renderings: the authority is the destination host, LEEF keeps the unique id.
cef_tlv() { "$bin" audit export --format cef "$work"/audit/*.jsonl 2>/dev/null | grep -F 'src=203.0.113.30 spt=40020'; }
leef_tlv() { "$bin" audit export --format leef "$work"/audit/*.jsonl 2>/dev/null | grep -F "$(printf 'src=203.0.113.30\tsrcPort=40020')"; }
wait_until 30 eval 'cef_tlv | grep -q " dhost=api.example.com"' &&
	ok "CEF: dhost is the authority" || fail "CEF: no dhost=api.example.com: $(cef_tlv | head -1)"
wait_until 30 eval 'leef_tlv | grep -qF "$(printf "\tdstHost=api.example.com\tviaUniqueId=$U")"' &&
	ok "LEEF: dstHost is the authority, viaUniqueId the unique id" || fail "LEEF: no dstHost/viaUniqueId: $(leef_tlv | head -1)"
# A failed handshake after a header with TLVs: tls.reject carries them too.
check "plain HTTP after a v2 header with AUTHORITY on the TLS listener" "$(pc --port "$PORT" --authority api.example.com --unique-id 0a0b --v2 '198.51.100.31 192.0.2.1 40023 443')" closed
wait_until 30 eval 'audit_grep "\"type\":\"tls.reject\"" | grep -q "\"remote\":\"198.51.100.31:40023\",\"via\":\"127.0.0.1:[0-9]*\",\"via_authority\":\"api.example.com\",\"via_unique_id\":\"0a0b\""' &&
	ok "tls.reject after a header with TLVs: via_authority and via_unique_id" || fail "no tls.reject with via_authority: $(audit_grep tls.reject | grep 198.51.100.31)"

# A failed handshake after the header (plain HTTP where TLS is expected): tls.reject names the
# client from the header and the balancer.
check "plain HTTP after a v1 header on the TLS listener" "$(pc --port "$PORT" --v1 'TCP4 198.51.100.11 192.0.2.1 40002 443')" closed
wait_until 30 eval 'audit_grep "\"type\":\"tls.reject\"" | grep -q "\"remote\":\"198.51.100.11:40002\",\"via\":\"127.0.0.1:[0-9]*\""' &&
	ok "tls.reject after a header: remote and via" || fail "no tls.reject with remote 198.51.100.11:40002 and via: $(audit_grep tls.reject | tail -1)"

# Refusals: closed without an answer, each audited with its reason.
check "no header on the plain listener" "$(pc --port "$PORT2" --raw '')" closed
check "no header on the TLS listener" "$(pc --port "$PORT" --tls-ca "$work/tls/ca.crt" --raw '')" closed
check "malformed v1 address" "$(pc --port "$PORT2" --v1 'TCP4 203.0.113.999 192.0.2.1 1 2')" closed
check "v1 port with a leading zero" "$(pc --port "$PORT2" --v1 'TCP4 203.0.113.7 192.0.2.1 01 2')" closed
check "v2 version 3" "$(pc --port "$PORT2" --raw '\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c')" closed
check "garbage" "$(pc --port "$PORT2" --raw 'PROXY GARBAGE\r\n')" closed
check "v2 header with a wrong CRC32C" "$(pc --port "$PORT2" --crc bad --v2 '203.0.113.21 192.0.2.1 40013 80')" closed
check "v2 AUTHORITY with a control byte" "$(pc --port "$PORT2" --authority $'api.example.com\r\nx' --v2 '203.0.113.32 192.0.2.1 40024 80')" closed
check "v2 AUTHORITY with a port" "$(pc --port "$PORT2" --crc good --authority 'api.example.com:443' --v2 '203.0.113.33 192.0.2.1 40025 80')" closed
check "v2 UNIQUE_ID of 129 bytes" "$(pc --port "$PORT2" --unique-id "$(printf 'ab%.0s' $(seq 129))" --v2 '203.0.113.34 192.0.2.1 40026 80')" closed
check "v2 AUTHORITY twice" "$(pc --port "$PORT2" --authority a.example --authority a.example --v2 '203.0.113.35 192.0.2.1 40027 80')" closed
check "v2 UNIQUE_ID twice" "$(pc --port "$PORT2" --crc good --unique-id 01 --unique-id 02 --v2 '203.0.113.36 192.0.2.1 40028 80')" closed
check "header cut short, then the client shuts down" "$(pc --port "$PORT2" --header-only --shut --raw 'PROXY TCP4 203.0.113.7')" closed
check "header cut short, then silence (client_header 2 s)" "$(pc --port "$PORT2" --header-only --raw 'PROXY TCP4 203.0.113.7')" closed
check "peer outside proxy_protocol_from" "$(pc --port "$P3" --v1 'TCP4 203.0.113.7 192.0.2.1 4242 80')" closed
for r in "no PROXY protocol header" "PROXY v1: an address is not an IPv4 address" \
	"PROXY v1: a port is not a decimal 0..65535 without leading zeros" "PROXY v2: version is not 2" \
	"PROXY v1: not 'TCP4|TCP6 SRC DST SPORT DPORT' with single spaces" "peer not in proxy_protocol_from" \
	"connection closed inside the PROXY header" "PROXY header not received in time" \
	"PROXY v2: CRC32C mismatch" "PROXY v2: AUTHORITY TLV is not a host name of 1 to 255 bytes" \
	"PROXY v2: UNIQUE_ID TLV longer than 128 bytes" "PROXY v2: more than one AUTHORITY TLV" \
	"PROXY v2: more than one UNIQUE_ID TLV"; do
	wait_until 30 eval 'rej | grep -qF "\"reason\":\"$r\""' &&
		ok "proxy_protocol.reject audited: $r" || fail "no proxy_protocol.reject with '$r': $(rej | tail -2)"
done
[ "$(rej | grep -c '"reason":"no PROXY protocol header"')" -ge 2 ] &&
	ok "both listeners audit a missing header" || fail "a missing header was not audited on both listeners"
rej | grep -q '"remote":"127.0.0.1:[0-9]*"' && ok "a rejection names the socket peer" || fail "rejection without the socket peer"
rej | grep -F '"reason":"PROXY v2: CRC32C mismatch"' | grep -q '"remote":"127.0.0.1:[0-9]*"' &&
	ok "a CRC32C mismatch names the socket peer, not the client from the header" ||
	fail "CRC32C mismatch event without the socket peer: $(rej | grep -F CRC32C)"
if (ev; rej) | grep -q '203\.0\.113\.21'; then
	fail "the client from the header with a wrong CRC32C was used"
else
	ok "the client from the header with a wrong CRC32C was not used"
fi
[ "$(rej | grep -c '"reason":"PROXY v2: AUTHORITY TLV is not a host name of 1 to 255 bytes"')" -ge 2 ] &&
	ok "both bad authorities refused" || fail "not two refusals of a bad authority: $(rej | grep AUTHORITY)"
if (ev; rej; audit_grep tls.reject) | grep -q -e '203\.0\.113\.3[2-6]' -e 'example\.com:443'; then
	fail "a client or an authority from a refused header was used"
else
	ok "nothing from a header refused for its TLVs was used"
fi
# A balancer's TCP health check (connect, close, no byte) is not audited.
n=$(rej | wc -l) nev=$(ev | wc -l)
(exec 3<>"/dev/tcp/127.0.0.1/$PORT2") 2>/dev/null
check "v1 UNKNOWN is served" "$(pc --port "$PORT2" --v1 'UNKNOWN')" 200
# The trail is written in order: once the next request's event is there, so would be a
# rejection of the silent connection before it.
wait_until 30 eval '[ "$(ev | wc -l)" -gt "$nev" ]' || fail "no event for the UNKNOWN request"
[ "$(rej | wc -l)" = "$n" ] && ok "a silent connection is not audited" || fail "a silent connection was audited"

curl -sS --max-time 20 --unix-socket "$work/admin.sock" http://admin/metrics >"$work/metrics.txt"
grep -q '^custos_proxy_protocol_total{result="ok"} [1-9]' "$work/metrics.txt" &&
	ok "metrics count taken headers" || fail "no custos_proxy_protocol_total ok: $(grep proxy_protocol "$work/metrics.txt")"
grep -q '^custos_proxy_protocol_total{result="rejected"} [1-9]' "$work/metrics.txt" &&
	ok "metrics count rejections" || fail "no custos_proxy_protocol_total rejected"

# A flood: 40 connections at once, each with a garbage header. At most 10 a second per worker
# are audited one by one, the rest summed in one event when the second ends (as failed TLS
# handshakes are).
nsum() { rej | sed -n 's/.*"count":\([0-9]*\).*/\1/p' | awk '{s += $1} END {print s + 0}'; }
before=$(nsum)
flood=()
for i in $(seq 40); do
	(exec 3<>"/dev/tcp/127.0.0.1/$PORT2" && printf 'PROXY GARBAGE\r\n' >&3 && timeout 60 cat <&3 >/dev/null) 2>/dev/null &
	flood+=($!)
done
wait "${flood[@]}"
wait_until 30 eval '[ "$(nsum)" -ge $((before + 40)) ]'
check "every rejection of the flood counted once" "$(nsum)" $((before + 40))
rej | grep '"remote":"\*"' | grep -q 'PROXY protocol rejections past the rate bound' &&
	ok "the flood was summed in one event" || fail "no sum event for the flood"

[ "$fails" -eq 0 ] || exit 1
echo "all PROXY protocol checks passed"
