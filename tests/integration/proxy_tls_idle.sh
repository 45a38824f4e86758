#!/usr/bin/env bash
# TLS record buffers of idle keep-alive connections (proxy/conn.c, "quiet" list): custos keeps
# OpenSSL's record buffers on a busy client connection and gives them back when it has been
# idle between requests for a few milliseconds, so an idle connection holds none. Through the
# real binary with Python's ssl module (OpenSSL) as the client: 24 connections (TLS 1.3 and
# 1.2) make one request each and go quiet; /metrics must then count every one of them in
# custos_tls_buffer_releases_total, and each connection must serve again afterwards (a 40 KiB
# body, a stream, two pipelined requests), with OpenSSL allocating the buffers anew.
. "$(dirname "$0")/proxy_lib.bash"
command -v python3 >/dev/null || skip "python3 not installed"

make_pki
start_fixture model
write_policy "$work/policy.yaml"
write_config "$work/custos.yaml" "$FX_PORT"
start_custos "$work/custos.yaml"

out=$(python3 "$src/tests/integration/proxy_tls_idle.py" "$PORT" "$work/tls/ca.crt" "$ALICE" \
	"$work/admin.sock" 24 2>&1)
rc=$?
echo "$out"
[ "$rc" -eq 0 ] || fail "client reported failures (exit $rc)"
# A connection whose buffers went back is not an error or a close: nothing in the log says so.
grep -E 'ERROR|WARN' "$work/custos.log" | grep -v 'plain-HTTP' && fail "errors or warnings in custos.log"
# 24 first requests, then 8 bodies, 8 streams and 8 pipelined pairs
answered() { [ "$(audit_grep '"type":"http.request".*"status":200' | wc -l)" -ge 56 ]; }
wait_until 60 answered && ok "the trail has the 56 answered requests" ||
	fail "the trail has $(audit_grep '"type":"http.request".*"status":200' | wc -l) answered requests, want 56"
[ "$fails" -eq 0 ]
