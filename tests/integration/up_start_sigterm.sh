#!/usr/bin/env bash
# A SIGTERM while `custos up` starts, waiting for a sandboxed model to answer (its server sleeps
# 300 s before it listens; health.start_timeout 60 s): custos gives the start up at once, stops
# the sandbox it was starting and exits, instead of holding the SIGTERM for the whole start
# timeout (120 s by default, past systemd's TimeoutStopSec, which then kills everything).
. "$(dirname "$0")/proxy_lib.bash"

[ "$(id -u)" -eq 0 ] || skip "needs root for the process sandbox in this test"
unshare -Urn true 2>/dev/null || skip "user/network namespaces not available"

make_pki
write_policy "$work/policy.yaml"
p1=$(free_port)
sandbox_conf_template 2s
conf_models "  - id: slow-model
    sandbox:
      type: process
      profile: fx
      command: [/bin/sh, -c, \"sleep 300; exec /opt/fx/model-server --listen 127.0.0.1:$p1 --model-id slow-model\"]
      env: { ASAN_OPTIONS: \"detect_leaks=0\" }
      port: $p1
      health: { start_timeout: 60s }"
"$bin" --log-level debug up -c "$work/custos.yaml" 2>"$work/custos.log" &
CU_PID=$!
pids+=("$CU_PID")
wait_until 60 grep -qs 'up: model slow-model: sandbox started' "$work/custos.log" ||
	{ cat "$work/custos.log"; fail "the sandbox did not start"; exit 1; }
spid=$(grep -o 'up: model slow-model: sandbox started (pid [0-9]*' "$work/custos.log" | grep -o '[0-9]*$' | tail -1)
t0=$SECONDS
kill -TERM "$CU_PID"
exited() { ! kill -0 "$CU_PID" 2>/dev/null; }
wait_until 30 exited && ok "custos exited $((SECONDS - t0)) s after the SIGTERM" ||
	fail "custos still runs 30 s after the SIGTERM (start timeout 60 s)"
wait "$CU_PID" 2>/dev/null
grep -q 'custos is stopping (a SIGTERM or SIGINT came during the start)' "$work/custos.log" &&
	ok "the log says the start was given up" || fail "log: $(tail -5 "$work/custos.log")"
pid_gone() { ! kill -0 "$1" 2>/dev/null; }
[ -n "$spid" ] && wait_until 30 pid_gone "$spid" && ok "the sandbox it was starting is gone" ||
	fail "sandbox pid '$spid' still runs"
grep -E 'Sanitizer|runtime error' "$work/custos.log" && fail "sanitizer report in the log" || ok "no sanitizer report"
[ "$fails" -eq 0 ]
