#!/usr/bin/env bash
# The service manager's watchdog (docs/OPERATIONS.md, "systemd") as systemd sets it: WATCHDOG_PID
# names the main pid, the supervisor, and the proxy must still ping WATCHDOG=1 (it is the one that
# does); and a SIGHUP reload that waits for a sandbox it adds (here 6 s) must not leave the
# watchdog unpinged for longer than WATCHDOG_USEC (2 s), or WatchdogSec= kills custos mid-reload.
# The service manager's end of NOTIFY_SOCKET is a small python3 program (a fixture for systemd)
# that prints each datagram with the monotonic time it came.
. "$(dirname "$0")/proxy_lib.bash"
command -v python3 >/dev/null || skip "python3 not installed"

make_pki
write_policy "$work/policy.yaml"
sock="$work/notify.sock"
python3 -u - "$sock" >"$work/notify.txt" 2>&1 <<'PY' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
while True:
    msg = s.recv(4096).decode()
    print("%.3f %s" % (time.monotonic(), msg.replace("\n", " | ")), flush=True)
PY
pids+=($!)
wait_until 60 test -S "$sock"

# up_as_systemd CONFIG: custos up as systemd starts it: NOTIFY_SOCKET, WATCHDOG_USEC and
# WATCHDOG_PID set to the pid of the process exec'd (the main pid). Sets CU_PID.
up_as_systemd() {
	chmod 600 "$1"
	(
		export NOTIFY_SOCKET="$sock" WATCHDOG_USEC=2000000 WATCHDOG_PID=$BASHPID
		exec "$bin" --log-level debug up -c "$1" 2>"$work/custos.log"
	) &
	CU_PID=$!
	pids+=("$CU_PID")
	wait_until 120 grep -qs 'worker(s) serving' "$work/custos.log" || { cat "$work/custos.log"; fail "custos did not start"; exit 1; }
}
pings() { grep -c 'WATCHDOG=1' "$work/notify.txt"; }

# ---- 1. WATCHDOG_PID names the supervisor: the proxy pings anyway, about once a second.
start_fixture model
write_config "$work/custos.yaml" "$FX_PORT"
up_as_systemd "$work/custos.yaml"
n0=$(pings)
sleep 4
n1=$(pings)
[ "$((n1 - n0))" -ge 2 ] && ok "WATCHDOG=1 with WATCHDOG_PID naming the main pid ($((n1 - n0)) in 4 s)" ||
	fail "WATCHDOG=1 with WATCHDOG_PID naming the main pid: $((n1 - n0)) in 4 s"
kill -TERM "$CU_PID"
wait "$CU_PID"
check "exit status" "$?" 0

# ---- 2. A SIGHUP reload that waits 6 s for the sandbox it adds: pings go on meanwhile.
if [ "$(id -u)" -ne 0 ] || ! unshare -Urn true 2>/dev/null; then
	echo "ok   - # SKIP the reload part: needs root and user/network namespaces for a process sandbox"
	[ "$fails" -eq 0 ]
	exit
fi
rm -rf "$work/audit"
p1=$(free_port) p2=$(free_port)
# model_yaml ID PORT [SLEEP]: one sandboxed model server (the fixture) under models:, which
# sleeps SLEEP seconds before it starts when SLEEP is given.
model_yaml() {
	local cmd="[/opt/fx/model-server, --listen, \"127.0.0.1:$2\", --model-id, $1]"
	[ -n "${3-}" ] && cmd="[/bin/sh, -c, \"sleep $3; exec /opt/fx/model-server --listen 127.0.0.1:$2 --model-id $1\"]"
	cat <<M
  - id: $1
    sandbox:
      type: process
      profile: fx
      command: $cmd
      env: { ASAN_OPTIONS: "detect_leaks=0" }
      port: $2
      health: { start_timeout: 60s }
M
}
sandbox_conf_template 2s
conf_models "$(model_yaml test-model "$p1")"
up_as_systemd "$work/custos.yaml"
conf_models "$(model_yaml test-model "$p1")
$(model_yaml slow-model "$p2" 6)"
: >"$work/notify.during"
kill -HUP "$CU_PID"
wait_until 120 grep -q 'proxy: reload' "$work/custos.log" ||
	fail "no reload outcome in 120 s: $(tail -5 "$work/custos.log")"
grep -q 'proxy: reloaded (generation' "$work/custos.log" && ok "the reload adding a slow sandbox was applied" ||
	fail "reload: $(grep 'proxy: reload' "$work/custos.log")"
# The pings between RELOADING=1 and the READY=1 after it, and the longest gap between two
# (counting from RELOADING=1 to the first and from the last to READY=1).
read -r gap span < <(awk '/RELOADING=1/ { on = 1; start = last = $1; next }
	on && /WATCHDOG=1/ { if ($1 - last > max) max = $1 - last; last = $1 }
	on && /READY=1/ { if ($1 - last > max) max = $1 - last; span = $1 - start; exit }
	END { printf "%.2f %.2f\n", max, span }' "$work/notify.txt")
awk -v s="$span" 'BEGIN { exit !(s >= 4) }' && ok "the reload waited $span s for the sandbox" ||
	fail "the reload took $span s: too short to show anything (the sandbox sleeps 6 s)"
awk -v g="$gap" 'BEGIN { exit !(g < 2.0) }' && ok "the watchdog was pinged during the reload (longest gap $gap s)" ||
	fail "the watchdog went unpinged for $gap s during the reload (WATCHDOG_USEC 2 s): $(grep -n 'RELOADING\|READY' "$work/notify.txt" | tail -3)"
kill -TERM "$CU_PID"
wait "$CU_PID"
check "exit status after the reload" "$?" 0
grep -E 'Sanitizer|runtime error' "$work/custos.log" && fail "sanitizer report in the log" || ok "no sanitizer report"
[ "$fails" -eq 0 ]
