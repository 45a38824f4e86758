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

U_SRC="http://localhost:$P_SRC/" U_TUN="https://localhost:$P_SRC/"
# m1's upstream (P_D) is never called.
P_D=9 eg_m1_conf info "$(eg_source_yaml src "$U_SRC" internal; eg_source_yaml tun "$U_TUN" internal)" \
	"  max_connections_per_sandbox: 128
  timeouts: { connect: 5s, read: 30s, idle: 30s }"
eg_m1_policy <<EOY
$(eg_policy_data src "$U_SRC" internal; eg_policy_data tun "$U_TUN" internal)
rules:
  - id: read
    effect: allow
    when: { direction: egress, data: src, method: [GET, POST] }
  - id: tunnels
    effect: allow
    when: { direction: egress, data: tun, method: CONNECT }
EOY
chmod 600 custos.yaml policy.yaml
CUSTOS_EGRESS_FORWARD=loops:1 eg_start "$P_SRC"
# eg_start returns once the egress port accepts, which the supervisor's socket does before the
# proxy has started its egress side and logged this: wait for the line.
check "one forward loop" eg_wait 60 grep -q 'plain forward requests on 1 event loop' up.log

C=32 R=24
out=$(timeout 120 python3 "$PEER" fwd "$P_EG" "$P_SRC" $C $R)
check "$C connections x $R pipelined requests in 7-byte writes: every answer its own, in order, then closed ($out)" \
	test "${out%% *}" = 0
eg_wait 60 eg_at_least $((C * R)) '"egress.request"' '"decision":"allow"' '"status":200'
check "$((C * R)) forwarded requests audited" \
	test "$(eg_count '"egress.request"' '"decision":"allow"' '"status":200')" -eq $((C * R))

T=24 N=400
out=$(timeout 120 python3 "$PEER" tunnel "$P_EG" "$P_SRC" $T $N)
check "$T tunnels x $N small writes, half-closed: every byte back in order, then the end of stream ($out)" \
	test "${out%% *}" = 0
eg_wait 60 eg_at_least $T '"egress.request"' '"kind":"connect"'
check "$T tunnels audited" test "$(eg_count '"egress.request"' '"kind":"connect"')" -eq $T

eg_stop "on SIGTERM"
eg_done
