#!/usr/bin/env bash
# Operations: `custos up` speaks systemd's notify protocol (READY=1 once serving, STATUS=,
# RELOADING=1/READY=1 around SIGHUP, WATCHDOG=1 at half of WATCHDOG_USEC, with WATCHDOG_PID the
# main pid as systemd sets it, STOPPING=1), and with
# log.file set it reopens its log file on SIGUSR1, as logrotate needs. The service manager's end
# of NOTIFY_SOCKET is a datagram socket read by a small python3 program (a fixture for systemd).
. "$(dirname "$0")/proxy_lib.bash"
command -v python3 >/dev/null || skip "python3 not installed"

make_pki
start_fixture model
write_policy "$work/policy.yaml"
write_config "$work/custos.yaml" "$FX_PORT"
printf 'log:\n  level: info\n  file: %s\n' "$work/custos-file.log" >>"$work/custos.yaml"

sock="$work/notify.sock"
python3 -u - "$sock" >"$work/notify.txt" 2>&1 <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
while True:
    msg = s.recv(4096).decode()
    print(msg.replace("\n", " | "), flush=True)
PY
pids+=($!)
wait_until 60 test -S "$sock"

chmod 600 "$work/custos.yaml"
# As systemd does: WATCHDOG_PID names the main pid (the supervisor); the proxy, its child, pings.
NOTIFY_SOCKET="$sock" WATCHDOG_USEC=400000 bash -c 'export WATCHDOG_PID=$$; exec "$0" "$@"' \
	"$bin" up -c "$work/custos.yaml" 2>"$work/custos.log" &
CU_PID=$!
pids+=("$CU_PID")
wait_for() { wait_until 60 grep -q "$2" "$1" 2>/dev/null; } # wait_for FILE PATTERN
wait_for "$work/notify.txt" 'READY=1' && ok "READY=1 once serving" || fail "no READY=1: $(cat "$work/notify.txt")"
grep -q 'STATUS=serving 2 listener' "$work/notify.txt" && ok "STATUS= line" || fail "no STATUS line"
wait_for "$work/notify.txt" 'WATCHDOG=1' && ok "watchdog pinged" || fail "no WATCHDOG=1"
wait_for "$work/custos-file.log" 'worker(s) serving' && ok "log lines go to log.file" ||
	fail "log file: $(cat "$work/custos-file.log" 2>/dev/null)"

kill -HUP "$CU_PID"
wait_for "$work/notify.txt" 'RELOADING=1' && ok "RELOADING=1 on SIGHUP" || fail "no RELOADING=1"
wait_for "$work/custos-file.log" 'reloaded (generation' && ok "reload done" || fail "no reload"
# READY=1 is sent after the "reloaded" line is logged, and read by python after that: wait for it
ready_twice() { [ "$(grep -c 'READY=1' "$work/notify.txt")" -ge 2 ]; }
wait_until 60 ready_twice
n=$(grep -c 'READY=1' "$work/notify.txt")
[ "$n" -ge 2 ] && ok "READY=1 again after the reload" || fail "READY=1 count $n"

mv "$work/custos-file.log" "$work/custos-file.log.1"
kill -USR1 "$CU_PID"
wait_for "$work/custos-file.log" 'log file reopened' && ok "SIGUSR1 reopens the log file" ||
	fail "no new log file after SIGUSR1"
grep -q 'log file reopened' "$work/custos-file.log.1" && fail "reopen line went to the old file" ||
	ok "the moved file is left alone"

kill -TERM "$CU_PID"
wait "$CU_PID"
check "exit status" "$?" 0
# custos sent it before it exited; the reader prints it to notify.txt on its own time.
wait_for "$work/notify.txt" 'STOPPING=1' && ok "STOPPING=1 on SIGTERM" || fail "no STOPPING=1"
[ "$fails" -eq 0 ]
