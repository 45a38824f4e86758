#!/usr/bin/env bash
# ops_reload_serial: reloads of `custos up` run one at a time, so the ingress and the egress
# proxy always end on the same policy file. The race is made deterministic with the test hook
# CUSTOS_TEST_RELOAD_HOLD (Debug builds, docs/CONTRIBUTING.md "Test hooks"), which holds a
# SIGHUP reload between the ingress proxy's swap and the egress proxy following it:
#  1. custos.yaml names policy-allow.yaml (egress may read the source); SIGHUP; held after the
#     ingress swap;
#  2. custos.yaml names policy-deny.yaml; the admin API's reload is asked meanwhile: it must
#     wait for the SIGHUP reload (logged), not run in the window;
#  3. the SIGHUP reload is released once the admin API's watchdog has passed the admin
#     request's 10 s deadline (a client cut off after it shows it); the admin reload then
#     completes (200), its connection not cut while it waited.
# Both proxies must end on policy-deny.yaml: GET /v1/policy's source for ingress, a 403 from
# the egress proxy. Unserialised, the admin reload ran in the window and the SIGHUP reload's
# egress step moved the egress proxy back to policy-allow.yaml (200) under an ingress proxy on
# policy-deny.yaml.
set -u
. "${CUSTOS_SRC:?}/tests/integration/egress_lib.bash"
eg_init ops-reload-serial curl python3
[ "${CUSTOS_TEST_HOOKS:-0}" = 1 ] ||
	{ echo "SKIPPED: custos is built without test hooks (CUSTOS_TEST_HOOKS, on in Debug builds)"; exit 77; }

P_HTTP=$(port); P_MODEL=$(port); P_IN=$(port); P_EG=$(port)
cd "$W"
FX="$SRC/tests/integration/egress_upstream.py"
python3 "$FX" data "$P_HTTP" plain & PIDS+=($!)
python3 "$FX" model "$P_MODEL" "http://127.0.0.1:$P_EG" "http://localhost:$P_HTTP/" & PIDS+=($!)

write_config() { # write_config POLICY_FILE
	cat >custos.yaml <<EOY
version: 1
listeners:
  - id: local
    address: "127.0.0.1:$P_IN"
models:
  - id: m1
    upstream: { url: "http://127.0.0.1:$P_MODEL" }
data_sources:
  - { id: web, url: "http://localhost:$P_HTTP/", classification: internal, allow_private_addresses: true }
egress:
  port: $P_EG
audit:
  dir: "$W/audit"
admin:
  socket: "$W/admin.sock"
policy:
  file: "$W/$1"
EOY
	chmod 600 custos.yaml
}
write_policy() { # write_policy FILE DATA: the egress rule allows DATA
	cat >"$1" <<EOY
version: 1
models:
  m1: { isolation: none }
data:
  web: { url: "http://localhost:$P_HTTP/", classification: internal }
  nothing: { url: "http://localhost:1/", classification: public }
rules:
  - id: read
    effect: allow
    when: { direction: egress, data: $2, method: GET }
EOY
	chmod 644 "$1"
}
write_policy policy-allow.yaml web
write_policy policy-deny.yaml nothing
mkfifo "$W/hold.fifo"
write_config policy-deny.yaml
CUSTOS_TEST_RELOAD_HOLD="$W/hold.fifo" "$BIN" up -c custos.yaml >up.log 2>&1 & UP=$!
PIDS+=($UP)
eg_up "$UP" up.log "$P_EG" "$P_HTTP"
eg_wait 60 test -S "$W/admin.sock" || bad "no admin socket"
status() { curl -s -o /dev/null -w '%{http_code}' -x "http://127.0.0.1:$P_EG" "http://localhost:$P_HTTP/x"; }
ingress_source() {
	curl -s --unix-socket "$W/admin.sock" http://admin/v1/policy |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["policy"]["source"])'
}
check "at start: egress refused by policy-deny.yaml (403)" test "$(status)" = 403

# 1. SIGHUP naming policy-allow.yaml, held between the ingress swap and the egress step.
write_config policy-allow.yaml
kill -HUP "$UP"
eg_wait 60 grep -q "test hook: SIGHUP reload applied to the ingress proxy" up.log ||
	bad "the SIGHUP reload did not reach the hold: $(tail -5 up.log)"
check "held: the ingress proxy is on policy-allow.yaml" test "$(ingress_source)" = "$W/policy-allow.yaml"

# 2. the admin API's reload naming policy-deny.yaml, asked while the SIGHUP reload is held.
write_config policy-deny.yaml
curl -s --max-time 120 --unix-socket "$W/admin.sock" -X POST -o admin.out -w '%{http_code}' \
	http://admin/v1/policy >admin.code &
ADMIN=$!
waiting() { grep -q "up: admin API: another reload is in progress; this one waits for it" up.log; }
ran() { grep -q "up: admin API: reloaded" up.log; }
eg_wait 60 eval 'waiting || ran'
check "the admin reload waits for the SIGHUP reload in progress" waiting
check "... and has not run in its window" eval '! ran'

# 2b. the admin request was read long ago: the admin API's watchdog (10 s from a request's first
# byte until it is read) must not cut it while it waits. A client that sends one byte and no
# more is cut by the watchdog 10 s after it began, so after the admin request's deadline too;
# only then is the SIGHUP reload released.
python3 - "$W/admin.sock" >sentinel.out 2>&1 <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.send(b"G")
try:
    print("cut off" if s.recv(100) == b"" else "answered")
except ConnectionResetError:
    print("cut off")
PY
check "a client that never finishes its request is cut off by the watchdog" grep -q '^cut off' sentinel.out

# 3. release the SIGHUP reload; the admin reload then runs.
echo go >"$W/hold.fifo"
wait "$ADMIN"
check "the admin reload completed (200)" test "$(cat admin.code)" = 200
check "... reloaded" grep -q '"reloaded": *true' admin.out
check "ingress ends on policy-deny.yaml" test "$(ingress_source)" = "$W/policy-deny.yaml"
check "egress ends on policy-deny.yaml too (403)" test "$(status)" = 403
n=$(grep -c "up: admin API: reloaded\|proxy: reloaded (generation" up.log)
check "both reloads applied ($n)" test "$n" = 2
kill "$UP"
wait "$UP" 2>/dev/null
[ "$FAILS" -eq 0 ] || { tail -30 up.log; exit 1; }
