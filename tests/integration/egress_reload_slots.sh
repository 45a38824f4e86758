#!/usr/bin/env bash
# Listeners that reloads add and remove are not limited over custos' life (docs/EGRESS.md,
# "Listeners"): a removed listener's slot is taken again once its last connection has ended, so
# 70 reloads adding a model without a sandbox (more than EGRESS_MAX_ADDED, 64) each give it a
# listener that reaches the data source; a keep-alive connection accepted by a listener that a
# reload removed keeps working, audited as its own model, while later models come and go: a
# keep-alive forward connection (forward loop) and a CONNECT tunnel (relay loop).
set -u
. "${CUSTOS_SRC:?}/tests/integration/egress_lib.bash"
eg_init egress-reload-slots curl python3

CYCLES=70
P_HTTP=$(port); P_MODEL=$(port); P_IN=$(port); P_EG=$(port)
P_EG1=$((P_EG + 1))
cd "$W"
FX="$SRC/tests/integration/egress_upstream.py"
python3 "$FX" data "$P_HTTP" plain & PIDS+=($!)
python3 "$FX" model "$P_MODEL" "http://127.0.0.1:$P_EG" "http://localhost:$P_HTTP/" & PIDS+=($!)
PEER="$SRC/tests/integration/egress_relay_peer.py"
python3 "$PEER" server 0 "$W/peer" & PIDS+=($!)
P_PEER=$(eg_port_file "$W/peer.port") || exit 1
(exec 3<>"/dev/tcp/127.0.0.1/$P_EG1") 2>/dev/null && { echo "SKIPPED: port $P_EG1 (egress.port + 1) is taken"; exit 77; }

model() { echo "  - { id: $1, upstream: { url: \"http://127.0.0.1:$P_MODEL\" } }"; }
write_config() { # write_config MODEL_LINES
	cat >custos.yaml <<EOY
version: 1
listeners:
  - id: local
    address: "127.0.0.1:$P_IN"
models:
$1
data_sources:
  - { id: web, url: "http://localhost:$P_HTTP/", classification: internal, allow_private_addresses: true }
  - { id: peer, url: "https://localhost:$P_PEER/", classification: internal, allow_private_addresses: true }
egress:
  port: $P_EG
  timeouts: { idle: 600s }
audit:
  dir: "$W/audit"
admin:
  socket: "$W/admin.sock"
policy:
  file: "$W/policy.yaml"
EOY
	chmod 600 custos.yaml
}
{
	echo "version: 1"
	echo "models:"
	echo "  m1: { isolation: none }"
	for i in $(seq 1 "$CYCLES"); do echo "  x$i: { isolation: none }"; done
	cat <<EOY
data:
  web: { url: "http://localhost:$P_HTTP/", classification: internal }
  peer: { url: "https://localhost:$P_PEER/", classification: internal }
rules:
  - id: read
    effect: allow
    when: { direction: egress, data: web, method: GET }
  - id: tunnel
    effect: allow
    when: { direction: egress, data: peer, method: CONNECT }
EOY
} >policy.yaml
chmod 644 policy.yaml
write_config "$(model m1)"
"$BIN" up -c custos.yaml >up.log 2>&1 & UP=$!
PIDS+=($UP)
eg_up "$UP" up.log "$P_EG" "$P_HTTP"
eg_wait 60 test -S "$W/admin.sock" || bad "no admin socket"
ctl() { "$BIN" ctl --socket "$W/admin.sock" "$@"; }
status() { curl -s --max-time 20 -o /dev/null -w '%{http_code}' -x "http://127.0.0.1:$1" "http://localhost:$P_HTTP/$2"; }
closed() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
events() { cat "$W"/audit/*.jsonl 2>/dev/null | grep '"egress.request"' | sed 's/\\"/"/g'; }
EV=""
event() { EV=$(events | grep '"model":"'"$1"'"' | grep "$2" | tail -1); [ -n "$EV" ]; }

# The held connection: a keep-alive client on x2's listener that sends one request, reports its
# status, then a second one on the same connection when told to (a line on its fifo).
mkfifo held.in
cat >held.py <<'EOP'
import http.client, sys
port, target = int(sys.argv[1]), sys.argv[2]
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
c.request("GET", target + "held-first")
r = c.getresponse(); r.read()
print("first", r.status, flush=True)
with open("held.in") as f:
    f.readline()
c.request("GET", target + "held-second")
r = c.getresponse(); r.read()
print("second", r.status, flush=True)
c.close()
EOP

# The held tunnel: through x3's listener, 1000 bytes sent to the peer's sink, then 2000 more
# once told (a line on its fifo), a half-close, and the peer's count back.
mkfifo tun.in
cat >tun.py <<'EOP'
import sys
sys.path.insert(0, sys.argv[1])
import egress_relay_peer as p
s, st = p.tunnel(int(sys.argv[2]), "localhost", int(sys.argv[3]))
print("tunnel", st, flush=True)
s.sendall(b"S" + b"a" * 1000)
with open("tun.in") as f:
    f.readline()
s.sendall(b"b" * 2000)
s.shutdown(p.socket.SHUT_WR)
s.settimeout(30)
out = b""
while True:
    d = s.recv(65536)
    if not d:
        break
    out += d
print("reply", out.decode().strip(), flush=True)
EOP

fails_cycle=""
for i in $(seq 1 "$CYCLES"); do
	write_config "$(model m1)
$(model "x$i")"
	if ! ctl policy reload >ctl.out 2>&1; then fails_cycle="$i (reload adding x$i refused: $(head -c 300 ctl.out))"; break; fi
	st=$(status "$P_EG1" "x$i-call")
	if [ "$st" != 200 ]; then fails_cycle="$i (x$i's call answered $st)"; break; fi
	if [ "$i" = 2 ]; then
		python3 held.py "$P_EG1" "http://localhost:$P_HTTP/" >held.out 2>&1 & HELD=$!
		PIDS+=($HELD)
		exec 7>held.in # keeps the fifo open for the client until its second request
		eg_wait 30 grep -q '^first' held.out
		check "the held connection's first request through x2's listener is answered (200)" grep -q '^first 200' held.out
	fi
	if [ "$i" = 3 ]; then
		python3 tun.py "$SRC/tests/integration" "$P_EG1" "$P_PEER" >tun.out 2>&1 & TUN=$!
		PIDS+=($TUN)
		exec 8>tun.in
		eg_wait 30 grep -q '^tunnel' tun.out
		check "the held tunnel through x3's listener is open (200)" grep -q '^tunnel 200' tun.out
	fi
	write_config "$(model m1)"
	if ! ctl policy reload >ctl.out 2>&1; then fails_cycle="$i (reload removing x$i refused)"; break; fi
	eg_wait 30 closed "$P_EG1" || { fails_cycle="$i (x$i's listener not closed)"; break; }
done
check "$CYCLES reloads each add a model whose listener reaches the data source${fails_cycle:+: failed at cycle $fails_cycle}" test -z "$fails_cycle"
check "no model was added without an egress listener" bash -c "! grep -q 'added without an egress listener' up.log"
check "slots of removed listeners were taken again" grep -q 'taken again' up.log

# x2's listener was removed long ago; the connection it accepted is still open and served.
echo go >&7
exec 7>&-
eg_wait 30 grep -q '^second' held.out
check "the held connection's second request, after its listener was removed, is answered (200)" grep -q '^second 200' held.out
eg_wait 30 event x2 held-second
check "that request is audited as x2, the removed listener's model" grep -q '"model":"x2"' <<<"$EV"

# x3's listener too: the tunnel it accepted still relays, and is audited as x3 when it ends.
echo go >&8
exec 8>&-
eg_wait 30 grep -q '^reply' tun.out
check "the held tunnel, after its listener was removed, relays every byte (got 3000)" grep -q '^reply got 3000' tun.out
tev() { EV=$(events | grep '"model":"x3"' | grep '"kind":"connect"' | tail -1); [ -n "$EV" ]; }
eg_wait 30 tev
check "the tunnel is audited as x3, the removed listener's model" grep -q '"bytes_up":' <<<"$EV"

kill "$UP"
wait "$UP" 2>/dev/null
grep -E 'Sanitizer|runtime error' up.log && bad "sanitizer report in the log"
if [ "$FAILS" -ne 0 ]; then tail -30 up.log | cut -c1-300; cat held.out tun.out; fi
[ "$FAILS" -eq 0 ]
