#!/usr/bin/env bash
# Sends at the end of a batch on the egress loops (proxy/egress_fwd.c, proxy/egress_relay.c;
# docs/EGRESS.md): a loop reads while it handles one epoll batch and writes what it read once
# the batch's events are handled. Through the real binary (custos up) with one forward loop, so
# that its batches hold many connections: 32 keep-alive connections at once each write 24
# pipelined requests (every third a POST with a body, the last Connection: close) in 7-byte
# pieces, and each must get its own 24 answers in order, whole, then the end of the stream
# (close after the last answer); 24 CONNECT tunnels at once each write 400 numbered records in
# 400 writes and half-close, and each must read back exactly its bytes, in order, then the end
# of the stream (the half-close passed on after them). Every call audited; no sanitizer report.
set -u
. "${CUSTOS_SRC:?}/tests/integration/egress_lib.bash"
eg_init egbatch python3 timeout
cd "$W"
PEER="$SRC/tests/integration/egress_batch_peer.py"
python3 "$PEER" server 0 "$W/src" & PIDS+=($!) # binds port 0 and says which
P_SRC=$(eg_port_file "$W/src.port") || exit 1
P_IN=$(port); P_EG=$(port)

cat >custos.yaml <<EOY
version: 1
log: { level: info, format: json }
listeners:
  - { id: local, address: "127.0.0.1:$P_IN" }
models:
  - { id: m1, upstream: { url: "http://127.0.0.1:9" } }
data_sources:
  - { id: src, url: "http://localhost:$P_SRC/", classification: internal, allow_private_addresses: true }
  - { id: tun, url: "https://localhost:$P_SRC/", classification: internal, allow_private_addresses: true }
egress:
  port: $P_EG
  max_connections_per_sandbox: 128
  timeouts: { connect: 5s, read: 30s, idle: 30s }
audit: { dir: "$W/audit" }
policy: { file: "$W/policy.yaml" }
EOY
cat >policy.yaml <<EOY
version: 1
mode: enforce
models:
  m1: { isolation: process }
data:
  src: { url: "http://localhost:$P_SRC/", classification: internal }
  tun: { url: "https://localhost:$P_SRC/", classification: internal }
rules:
  - id: read
    effect: allow
    when: { direction: egress, data: src, method: [GET, POST] }
  - id: tunnels
    effect: allow
    when: { direction: egress, data: tun, method: CONNECT }
EOY
chmod 600 custos.yaml policy.yaml
CUSTOS_EGRESS_FORWARD=loops:1 "$BIN" up -c custos.yaml >up.log 2>&1 & UP=$!
PIDS+=($UP)
eg_up "$UP" up.log "$P_EG" "$P_SRC"
check "one forward loop" grep -q 'plain forward requests on 1 event loop' up.log

events() { cat "$W"/audit/* 2>/dev/null | sed 's/\\"/"/g'; }
count() { # count TEXT...: events holding every TEXT
	local ev t; ev=$(events)
	for t in "$@"; do ev=$(grep -F -- "$t" <<<"$ev"); done
	[ -n "$ev" ] && wc -l <<<"$ev" || echo 0
}
at_least() { [ "$(count "${@:2}")" -ge "$1" ]; }

C=32 R=24
out=$(timeout 120 python3 "$PEER" fwd "$P_EG" "$P_SRC" $C $R)
check "$C connections x $R pipelined requests in 7-byte writes: every answer its own, in order, then closed ($out)" \
	test "${out%% *}" = 0
eg_wait 60 at_least $((C * R)) '"egress.request"' '"decision":"allow"' '"status":200'
check "$((C * R)) forwarded requests audited" \
	test "$(count '"egress.request"' '"decision":"allow"' '"status":200')" -eq $((C * R))

T=24 N=400
out=$(timeout 120 python3 "$PEER" tunnel "$P_EG" "$P_SRC" $T $N)
check "$T tunnels x $N small writes, half-closed: every byte back in order, then the end of stream ($out)" \
	test "${out%% *}" = 0
eg_wait 60 at_least $T '"egress.request"' '"kind":"connect"'
check "$T tunnels audited" test "$(count '"egress.request"' '"kind":"connect"')" -eq $T

kill -TERM $UP
wait $UP
RC=$?
check "custos up stops cleanly on SIGTERM (exit $RC, no sanitizer report)" \
	bash -c "[ $RC -eq 0 ] && ! grep -q 'Sanitizer' '$W/up.log'"
if [ $FAILS -gt 0 ]; then
	echo "--- custos log (tail)"
	tail -n 30 up.log
	echo "$FAILS failed"
	exit 1
fi
echo "all passed"
