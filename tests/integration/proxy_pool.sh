#!/usr/bin/env bash
# The upstream keep-alive pool (models[].upstream.pool_size, docs/CONFIG.md): with the default
# pool, three requests in a row (three client connections, one worker) reach the upstream over one
# connection, reused; with pool_size: 0, custos keeps none, so each request opens its own.
# Connections are counted where they are accepted, by raw_upstream.py (a TEST FIXTURE).
. "$(dirname "$0")/proxy_lib.bash"
command -v python3 >/dev/null || skip "python3 not installed"

make_pki
start_raw_upstream
write_policy "$work/policy.yaml"
# one worker: each worker keeps its own pool
WORKERS=1 write_config "$work/custos.yaml" "$RAW_PORT"
chat='{"model":"test-model","messages":[{"role":"user","content":"hi"}]}'
conns() { wc -l <"$work/raw.log.conns" 2>/dev/null | tr -d ' ' || echo 0; }
# three SEQUENTIAL requests, each a new client connection, through listener 2 (plain HTTP)
three() {
	local i out=""
	for i in 1 2 3; do
		out+=$(curl -sS --max-time 20 -o /dev/null -w '%{http_code} ' -H "Authorization: Bearer $ALICE" \
			-d "$chat" "http://127.0.0.1:$PORT2/v1/chat/completions")
	done
	echo "$out"
}

start_custos "$work/custos.yaml"
before=$(conns)
check "three requests with the default pool" "$(three)" "200 200 200 "
check "... reach the upstream over one connection (reused)" "$(($(conns) - before))" 1
kill -TERM "$CU_PID"
wait "$CU_PID" 2>/dev/null
check "custos exit status after SIGTERM" "$?" 0
mv "$work/custos.log" "$work/custos.log.1"

# pool_size: 0 keeps no idle connection: one upstream connection per request.
perl -0pi -e 's|(url: "http://127\.0\.0\.1:\d+/"\n)|$1      pool_size: 0\n|' "$work/custos.yaml"
grep -q 'pool_size: 0' "$work/custos.yaml" || { fail "config not rewritten"; exit 1; }
start_custos "$work/custos.yaml"
before=$(conns)
check "three requests with pool_size: 0" "$(three)" "200 200 200 "
check "... open three upstream connections (none kept)" "$(($(conns) - before))" 3
kill -TERM "$CU_PID"
wait "$CU_PID" 2>/dev/null
check "custos exit status after SIGTERM" "$?" 0
check "no sanitizer report" "$(cat "$work/custos.log.1" "$work/custos.log" | grep -cE 'AddressSanitizer|LeakSanitizer|runtime error')" 0
[ "$fails" -eq 0 ] || exit 1
echo "upstream pool checks passed"
