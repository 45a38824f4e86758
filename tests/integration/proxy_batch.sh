#!/usr/bin/env bash
# Writes at the end of a batch of events (proxy/conn.c): custos' worker holds what connections
# have to send while it handles one epoll batch and sends it all at the batch's end. Through the
# real binary with one worker, 32 plain and 32 TLS keep-alive connections (Python's ssl module,
# i.e. OpenSSL) run at once, so batches hold many connections: each makes 20 echoed chat
# completions, a pipelined pair and a stream, and every answer must be its own request's, in
# order, whole. The trail must then hold every request, and custos must log no error.
. "$(dirname "$0")/proxy_lib.bash"
command -v python3 >/dev/null || skip "python3 not installed"

make_pki
start_fixture model
write_policy "$work/policy.yaml"
WORKERS=1 write_config "$work/custos.yaml" "$FX_PORT"
start_custos "$work/custos.yaml"

N=32 ROUNDS=20
out=$(python3 "$src/tests/integration/proxy_batch.py" "$PORT2" "$PORT" "$work/tls/ca.crt" "$ALICE" \
	"$N" "$ROUNDS" 2>&1)
rc=$?
echo "$out" | head -40
[ "$rc" -eq 0 ] || fail "client reported failures (exit $rc)"
want=$((2 * N * (ROUNDS + 3)))
answered() { [ "$(audit_grep '"type":"http.request".*"status":200' | wc -l)" -ge "$want" ]; }
wait_until 60 answered && ok "the trail has all $want answered requests" ||
	fail "the trail has $(audit_grep '"type":"http.request".*"status":200' | wc -l) answered requests, want $want"
grep -E ' (error|warn): ' "$work/custos.log" | grep -v 'proxy.user is not set\|plain-HTTP' &&
	fail "errors or warnings in custos.log"
[ "$fails" -eq 0 ]
