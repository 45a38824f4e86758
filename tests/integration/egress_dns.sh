#!/usr/bin/env bash
# Egress names through custos' own resolver (egress.dns.servers) against a real DNS server:
# dnsmasq on loopback serving a test zone. The names exist only there (not in /etc/hosts), so
# every 200 proves custos asked dnsmasq. Covers A and AAAA, a CNAME, an answer too large for
# UDP (truncated, asked again over TCP), every address of an answer checked against the deny
# classes (metadata, loopback, private, IPv4-mapped), NXDOMAIN, a dead first server (the next
# one answers), and no server at all (502, audited).
# The test runs in a network namespace of its own (unshare -n, as root) with only loopback up
# and 10.1.2.3/32 on it, so that what it proves does not depend on the host's network:
# "private.custos.test" (10.1.2.3) is a local address where nothing listens on the data port
# (the data source listens on 127.0.0.1 only), so a connection to it is refused (RST) whatever
# the host routes 10/8 to (a NAT sandbox accepted connections to 10.1.2.3 on most ports), and
# the dead first DNS server's UDP port is one no process outside this test can bind.
# Not root, no network namespace or no `ip`: SKIPPED.
set -u
if [ "${EGDNS_NETNS:-}" != in ]; then
	[ "$(id -u)" -eq 0 ] || { echo "SKIPPED: needs root for a network namespace of its own"; exit 77; }
	unshare -n true 2>/dev/null || { echo "SKIPPED: cannot create a network namespace (unshare -n)"; exit 77; }
	command -v ip >/dev/null || { echo "SKIPPED: ip not installed (scripts/deps.sh: iproute2)"; exit 77; }
	EGDNS_NETNS=in exec unshare -n bash "$0" "$@"
fi
ip link set lo up && ip addr add 10.1.2.3/32 dev lo || {
	echo "FAIL - could not set up loopback with 10.1.2.3 in the test's network namespace"
	exit 1
}
. "${CUSTOS_SRC:?}/tests/integration/egress_lib.bash"
eg_init egdns curl python3 timeout
DNSMASQ=$(command -v dnsmasq || echo /usr/sbin/dnsmasq)
[ -x "$DNSMASQ" ] || { echo "SKIPPED: dnsmasq not installed (scripts/deps.sh: dnsmasq-base)"; exit 77; }
chmod 755 "$W" # dnsmasq reads its hosts file as nobody
# ports.bash, though the namespace is the test's own: P_DEAD is free for UDP (nothing answers).
P_HTTP=$(port); P_IN=$(port); P_EG=$(port); P_DNS=$(port); P_DEAD=$(port)
cd "$W"
python3 "$SRC/tests/integration/egress_upstream.py" data "$P_HTTP" plain & PIDS+=($!)

# --- the zone
{
	echo "127.0.0.1 data.custos.test"
	echo "::1 v6only.custos.test"
	echo "10.1.2.3 private.custos.test"
	echo "169.254.169.254 meta.custos.test"
	echo "::ffff:169.254.169.254 mapped.custos.test"
	echo "127.0.0.1 mixed.custos.test"
	echo "fd00:ec2::254 mixed.custos.test"
	echo "127.0.0.1 big.custos.test"
	for i in $(seq 1 24); do printf 'fd00:1::%x big.custos.test\n' "$i"; done
} >hosts
chmod 644 hosts
"$DNSMASQ" --keep-in-foreground --conf-file=/dev/null --port="$P_DNS" --listen-address=127.0.0.1 \
	--bind-interfaces --no-resolv --no-hosts --addn-hosts="$W/hosts" --local=/custos.test/ \
	--cname=alias.custos.test,data.custos.test --pid-file="$W/dnsmasq.pid" \
	--log-queries --log-facility="$W/dnsmasq.log" & DNSPID=$!
PIDS+=($DNSPID)

srcs() { # one data source per name, all on the data port
	for n in data alias v6only private meta mapped mixed big nx; do
		echo "  - { id: $n, url: \"http://$n.custos.test:$P_HTTP/\", classification: public$1 }"
	done
}
# The dead first server refuses (ICMP), which costs no time; the try timeout only bounds how long
# dnsmasq may take to answer on a loaded machine.
cat >custos.yaml <<EOY
version: 1
log: { level: info, format: json }
listeners:
  - { id: local, address: "127.0.0.1:$P_IN" }
models:
  - { id: m1, upstream: { url: "http://127.0.0.1:9" } }
data_sources:
$(srcs ", allow_private_addresses: true" | sed 's/id: v6only,\(.*\), allow_private_addresses: true/id: v6only,\1/')
egress:
  port: $P_EG
  timeouts: { connect: 2s, read: 5s, idle: 5s }
  dns: { servers: ["127.0.0.1:$P_DEAD", "127.0.0.1:$P_DNS"], timeout: 5s }
audit: { dir: "$W/audit" }
policy: { file: "$W/policy.yaml" }
EOY
eg_m1_policy <<EOY
$(for n in data alias v6only private meta mapped mixed big nx; do echo "  $n: { url: \"http://$n.custos.test:$P_HTTP/\", classification: public }"; done)
rules:
  - id: read
    effect: allow
    when: { direction: egress, data: [data, alias, v6only, private, meta, mapped, mixed, big, nx] }
EOY
chmod 600 custos.yaml policy.yaml
"$BIN" config check custos.yaml >check.out 2>&1
check "config check accepts servers with ports" test $? -eq 0
printf 'version: 1\negress:\n  dns: { servers: ["127.0.0.1:0x35"] }\n' >bad.yaml
"$BIN" config check bad.yaml >bad.out 2>&1
check "config check refuses a malformed server with file:line:col" grep -q 'bad.yaml:3:[0-9]*:.*not an IP address' bad.out

"$BIN" up -c custos.yaml >up.log 2>&1 & UP=$!
PIDS+=($UP)
# custos, dnsmasq and the data source all answering (a source not up yet is a 502, no proof)
eg_up "$UP" up.log "$P_EG" "$P_DNS" "$P_HTTP"
getent hosts data.custos.test >/dev/null && { echo "SKIPPED: the system resolver knows custos.test"; exit 77; }

PX="http://127.0.0.1:$P_EG"
status() { curl -s -o /dev/null -w '%{http_code}' -x "$PX" "$1"; }
reason() { curl -s -o /dev/null -D - -x "$PX" "$1" | tr -d '\r' | sed -n 's/^X-Custos-Reason: //p'; }
events() { cat "$W"/audit/* 2>/dev/null | sed 's/\\"/"/g'; }
ondisk() { # ondisk TEXT...: an event holding every TEXT is in the files now
	local ev t
	ev=$(events)
	for t in "$@"; do ev=$(grep -F -- "$t" <<<"$ev"); done
	[ -n "$ev" ]
}
audited() { eg_wait 30 ondisk "$@"; } # the same, waiting for the batch writer

U() { echo "http://$1.custos.test:$P_HTTP/hello"; }
st=$(status "$(U data)")
check "A record: 200 through custos' resolver (dead first server skipped) ($st)" test "$st" = 200
check "the name was asked of dnsmasq" grep -q 'query\[A\] data.custos.test' dnsmasq.log
check "AAAA asked too" grep -q 'query\[AAAA\] data.custos.test' dnsmasq.log
check "connected to the checked address" audited '"host":"data.custos.test"' '"address":"127.0.0.1"' '"decision":"allow"'
check "CNAME followed: 200" test "$(status "$(U alias)")" = 200

# truncation: the AAAA answer (25 records) does not fit 512 bytes of UDP
tc=$(python3 - "$P_DNS" <<'EOP'
import os, socket, struct, sys
q = os.urandom(2) + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
q += b"".join(bytes([len(l)]) + l for l in b"big.custos.test".split(b".")) + b"\x00\x00\x1c\x00\x01"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(30)
s.sendto(q, ("127.0.0.1", int(sys.argv[1]))); m = s.recv(4096)
print("tc" if m[2] & 2 else "whole")
EOP
)
check "dnsmasq truncates big.custos.test's AAAA answer over UDP ($tc)" test "$tc" = tc
check "truncated answer asked again over TCP: 200" test "$(status "$(U big)")" = 200

check "name -> 169.254.169.254: 403" test "$(status "$(U meta)")" = 403
check "name -> 169.254.169.254: SSRF reason" bash -c "$(declare -f reason); PX=$PX; reason '$(U meta)' | grep -q 'SSRF: meta.custos.test resolves to 169.254.169.254, a metadata address'"
check "name -> ::ffff:169.254.169.254 (AAAA): 403" test "$(status "$(U mapped)")" = 403
check "name -> ::1 without allow_private: 403 loopback" bash -c "$(declare -f reason); PX=$PX; reason '$(U v6only)' | grep -q 'a loopback address'"
check "private name allowed by allow_private: reached (connection refused, 502)" test "$(status "$(U private)")" = 502
check "one bad address poisons the name (127.0.0.1 + fd00:ec2::254): 403" test "$(status "$(U mixed)")" = 403
check "SSRF through DNS audited" audited '"host":"meta.custos.test"' '"decision":"deny"' 'SSRF'
r=$(reason "$(U nx)")
check "NXDOMAIN: 502 saying so ($r)" bash -c "[ '$(status "$(U nx)")' = 502 ] && grep -q 'no such name' <<<'$r'"

kill "$DNSPID"; wait "$DNSPID" 2>/dev/null
r=$(reason "$(U data)")
check "no server answers: 502 saying so ($r)" bash -c "[ '$(status "$(U data)")' = 502 ] && grep -q 'no DNS server answered' <<<'$r'"
check "resolver failure audited" audited '"host":"data.custos.test"' '"decision":"error"' 'no DNS server answered'

if [ $FAILS -ne 0 ]; then
	echo "--- custos log (tail)"; tail -20 up.log | cut -c1-300
	echo "--- dnsmasq log (tail)"; tail -20 dnsmasq.log
	echo "$FAILS failed"; exit 1
fi
echo "all passed"
