#!/usr/bin/env bash
# Egress: an origin that answers early and stops reading while custos still has request body
# for it. Intercepted HTTPS to early_answer_upstream.py (real TLS 1.3), which answers a request
# with a body at once with 413 "Connection: close" and then never reads that connection again
# (nor closes it). The egress timeouts are 60 s, so a thread that waited on a send to that
# origin would wait 60 s; every wait here is bounded well below that (30 s).
#   1. A 1 MiB upload: the thread path sends a request's whole body before it reads the
#      answer (docs/EGRESS.md), so the body goes into the socket buffers (the origin's receive
#      buffer and custos' send buffer, which hold it), then the early 413 is relayed and the
#      origin connection closed (up_close: the close_notify behind the queued body) with the
#      body still queued (seen with ss: custos' socket in FIN-WAIT-1 with a send queue); the
#      next request on the same tunnel is answered. Proves: the close path with bytes queued
#      towards an origin that does not read returns.
#   2. A 32 MiB upload: more than the buffers hold, so the connection's thread waits in the
#      send of the body (custos' send queue to the origin full, seen with ss), as it must: the
#      thread path does not read an answer before the body is out. Meanwhile another tunnel is
#      answered, and a SIGTERM drain ends it (the drain shuts the origin socket: the send
#      fails, the close path runs without waiting, the request's completion is audited as an
#      error) and custos exits well before the 60 s send timeout.
# What this does not prove: that the close_notify is sent without blocking (up_close). On
# Linux a 24-byte alert is appended to the unsent tail segment of a full send queue (a send
# waits for room only when that segment is full too), and after a send that failed OpenSSL
# holds the unsent record and sends no alert at all: a blocking close_notify passes this test
# as well (checked by reverting it). The non-blocking send guards the rare case where the
# tail segment is exactly full, which no test here can arrange.
set -u
. "${CUSTOS_SRC:?}/tests/integration/egress_lib.bash"
eg_init egress-stops-reading curl openssl python3 ss

P_D=$(port) P_IN=$(port) P_EG=$(port)
cd "$W" || exit 1
eg_upstream_pki
python3 "$SRC/tests/integration/early_answer_upstream.py" srv.crt srv.key o.port o.log >o.out 2>&1 &
PIDS+=($!)
P_O=$(eg_port_file "$W/o.port") || exit 1
touch o.log
head -c $((1 << 20)) /dev/zero | tr '\0' a >body1
head -c $((32 << 20)) /dev/zero | tr '\0' b >body32

eg_m1_conf info "$(eg_source_yaml up "https://localhost:$P_O/" public "intercept: true, ca_file: \"$W/upca.crt\"")" "  ca_dir: \"$W/ca\"
  timeouts: { connect: 5s, read: 60s, idle: 60s }"
eg_m1_policy <<EOY
  up: { url: "https://localhost:$P_O/", classification: public }
rules:
  - id: rw
    effect: allow
    when: { direction: egress, data: [up], method: [GET, POST] }
EOY
eg_start # not the origin's port: a probe would be a connection in its log

cu() { curl -s -o /dev/null --cacert "$W/ca/ca.crt" -x "$PX" -H 'Expect:' "$@"; }
is() { [ "$1" = "$2" ] || { echo "  got '$1', want '$2'" >&2; return 1; }; }
logged() { grep -qx "$1" "$W/o.log"; }

# 1. Two requests on one tunnel: the upload answered early, then a GET (curl reuses the
# tunnel: no new connect for the second).
out=$(cu --max-time 30 -w '%{http_code}/%{num_connects} ' --data-binary @body1 \
	"https://localhost:$P_O/early1" --next -s -o /dev/null --cacert "$W/ca/ca.crt" -x "$PX" \
	-w '%{http_code}/%{num_connects}' "https://localhost:$P_O/after1")
check "an early 413 relayed, and the next request on the same tunnel answered" \
	is "$out" "413/1 200/0"
# The origin records each request after it sent its answer: wait for the GET's line (the
# later one), then check both and their order.
eg_wait 30 logged "get /after1" || true
check "the origin answered the upload early, then served the GET" \
	is "$(paste -sd, o.log)" "early /early1,get /after1"
check "the early answer audited with its status" eg_wait 30 eg_at_least 1 '"path":"/early1"' '"status":413'
# custos closed that connection with body bytes still queued: the kernel keeps the orphaned
# socket in FIN-WAIT-1 with its send queue, which the origin never drains.
closed_queued() {
	ss -tnH state fin-wait-1 "( dport = :$P_O )" | awk '$2 > 0 { f = 1 } END { exit !f }'
}
check "custos closed the origin connection with body bytes still queued to it" eg_wait 30 closed_queued

# 2. An upload larger than the buffers: the thread waits in the send of the body.
cu --max-time 90 --data-binary @body32 "https://localhost:$P_O/stuck" &
CURL=$!
PIDS+=("$CURL")
sendq() { # custos' send queue to the origin holds more than 1 MiB
	ss -tnH state established "( dport = :$P_O )" | awk '$2 > 1048576 { f = 1 } END { exit !f }'
}
check "the origin answered the big upload early and stopped reading" eg_wait 30 logged "early /stuck"
check "custos' send queue to the origin fills (the thread waits in the send)" eg_wait 30 sendq
check "meanwhile another tunnel is answered" \
	is "$(cu --max-time 30 -w '%{http_code}' "https://localhost:$P_O/meanwhile")" 200
check "the origin served it" eg_wait 30 logged "get /meanwhile"

# SIGTERM while the thread waits: custos must exit within 30 s (the send timeout is 60 s).
kill "$UP"
gone() { ! kill -0 "$UP" 2>/dev/null; }
if eg_wait 30 gone; then
	ok "the drain ends the waiting upload: custos exits within 30 s"
	wait "$UP"
	rc=$?
	PIDS=("${PIDS[@]/$UP}")
	check "custos up stops cleanly (exit $rc, no sanitizer report)" \
		bash -c "[ $rc = 0 ] && ! grep -q -e 'Sanitizer' -e 'runtime error' $W/up.log"
else
	bad "custos did not exit within 30 s of SIGTERM with an upload stuck on the origin"
	kill -9 "$UP"
	wait "$UP"
	PIDS=("${PIDS[@]/$UP}")
fi
check "the stuck upload's completion audited as an error (its close path ran)" \
	eg_at_least 1 '"path":"/stuck"' '"decision":"error"'
eg_done
