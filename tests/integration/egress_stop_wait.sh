#!/usr/bin/env bash
# Egress stop: the connection threads are waited for however long they take (proxy/egress.c
# egress_stop). A connection thread blocked where a shut socket does not reach it (here a name
# resolution held 8 s by the test hook CUSTOS_TEST_EGRESS_RESOLVE_HOLD_MS, standing in for the
# system resolver waiting on a silent name server) still uses the egress proxy's state and the
# audit writer. The stop used to give such threads 5 s and then free that state under them; it
# now waits (custos up's supervisor bounds the whole stop), says so after 5 s, and the process
# is still alive when the thread's hold ends. One intercepted https call through custos, SIGTERM
# while its name is being resolved: custos exits 0 with no sanitizer report, after the hold.
set -u
. "${CUSTOS_SRC:?}/tests/integration/egress_lib.bash"
eg_init egress-stopwait curl openssl
[ "${CUSTOS_TEST_HOOKS:-0}" = 1 ] || { echo "SKIPPED: custos built without CUSTOS_TEST_HOOKS"; exit 77; }

P_D=$(port) P_IN=$(port) P_EG=$(port) P_A=$(port)
cd "$W" || exit 1
eg_upstream_pki
mkdir -p www && echo 'origin file' >www/x1
(cd www && exec openssl s_server -quiet -accept "127.0.0.1:$P_A" -cert ../srv.crt \
	-key ../srv.key -WWW) >>s_server.log 2>&1 &
PIDS+=($!)
eg_wait 60 eg_listening "$P_A" || { echo "SKIPPED: openssl s_server did not start: $(head -3 s_server.log)"; exit 77; }

eg_m1_conf info "$(eg_source_yaml ra "https://localhost:$P_A/" public "intercept: true, ca_file: \"$W/upca.crt\"")" \
	"  ca_dir: \"$W/ca\"
  timeouts: { connect: 30s, read: 30s, idle: 30s }"
eg_m1_policy <<EOY
  ra: { url: "https://localhost:$P_A/", classification: public }
rules:
  - id: read
    effect: allow
    when: { direction: egress, data: ra, method: GET }
EOY
chmod 600 custos.yaml policy.yaml
CUSTOS_TEST_EGRESS_RESOLVE_HOLD_MS=8000 eg_start

curl -s -o /dev/null --max-time 60 --cacert "$W/ca/ca.crt" -x "$PX" "https://localhost:$P_A/x1" &
CURL=$!
PIDS+=("$CURL")
eg_wait 30 grep -q 'test hook: resolution held' up.log
check "the call's name resolution is held" grep -q 'test hook: resolution held 8000 ms' up.log
eg_stop "while a connection thread is held"
check "the stop said it waits for the connection thread" \
	grep -q 'connection(s) still open 5 s after the stop began; waiting for their threads' up.log
check "custos was still running when the thread's hold ended" \
	grep -q 'test hook: resolution hold over' up.log
wait "$CURL" 2>/dev/null
eg_done
