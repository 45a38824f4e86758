#!/usr/bin/env bash
# audit_ship_confine: the SIEM shipper of `custos up` reads the trail and writes only its cursor
# state (docs/AUDIT.md section 6, docs/SANDBOX.md "Privilege separation"). Its Landlock layer
# holds audit.dir read-only and audit.dir/ship read-write: through the test hook
# CUSTOS_TEST_SHIPPER_PROBE (Debug builds, docs/CONTRIBUTING.md "Test hooks") the confined
# shipper tries to create a file in the audit directory, rename one and truncate one, and each
# must fail with EACCES from the kernel, while replacing a file in ship/ by rename works. A
# cursor an older custos left in the audit directory itself is moved to ship/ at start and the
# sink resumes from it; a restart resumes from the cursor in ship/. The shipper killed with
# kill -9 is started again by its supervisor (docs/AUDIT.md section 6, "Supervision") and what
# is written afterwards arrives; a restart that fails on a corrupt cursor is retried, reported
# as a crash loop; one past the log's end stops its sink; both resume once the cursor is mended.
. "$(dirname "$0")/proxy_lib.bash"
. "$(dirname "$0")/audit_lib.bash"
[ "${CUSTOS_TEST_HOOKS:-0}" = 1 ] ||
	skip "custos is built without test hooks (CUSTOS_TEST_HOOKS, on in Debug builds)"
command -v python3 >/dev/null || skip "python3 not installed"

make_pki
start_fixture model
write_policy "$work/policy.yaml"
ctl() { "$bin" ctl --socket "$work/admin.sock" "$@"; }
send() {
	local i
	for i in $(seq "$1"); do
		curl -sS -o /dev/null --max-time 10 -H "Authorization: Bearer $ALICE" \
			-d '{"model":"test-model","messages":[{"role":"user","content":"ship"}]}' \
			"http://127.0.0.1:$PORT2/v1/chat/completions" || fail "request $i"
	done
}

# An octet-counting syslog reader on a unix socket: one seq per line in cef.seqs.
cat >"$work/rx.py" <<'PY'
import re, socket, sys
path, out = sys.argv[1], sys.argv[2]
seq = re.compile(rb'\[custos@32473 seq="(\d+)"\]')
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
srv.listen(4)
with open(out, "a") as f:
    while True:
        c, _ = srv.accept()
        data = b""
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            data += chunk
            while True:
                sp = data.find(b" ")
                if sp < 0 or len(data) < sp + 1 + int(data[:sp]):
                    break
                n = int(data[:sp])
                msg, data = data[sp + 1:sp + 1 + n], data[sp + 1 + n:]
                f.write("%s\n" % seq.search(msg).group(1).decode())
                f.flush()
        c.close()
PY
python3 "$work/rx.py" "$work/rx.sock" "$work/rx.seqs" 2>"$work/rx.err" &
pids+=($!)
wait_until 30 test -S "$work/rx.sock" || { fail "the receiver did not start"; exit 1; }

AUDIT_YAML=$(
	cat <<Y
  sinks:
    - id: cef
      type: syslog
      address: "unix:$work/rx.sock"
      retry: { initial: 100ms, max: 500ms }
Y
) write_config "$work/custos.yaml" "$FX_PORT"
lag0() {
	ctl audit-status 2>/dev/null | python3 -c 'import json,sys
s = json.load(sys.stdin)
sys.exit(0 if s["sinks"] and all(x["lag_events"] == 0 for x in s["sinks"]) else 1)'
}
stop_custos() {
	kill -TERM "$CU_PID"
	wait "$CU_PID" 2>/dev/null
}

# -- 1. the confined shipper against the trail: refused; against ship/: allowed.
mkdir -m 700 "$work/audit"
printf 'part of the trail\n' >"$work/audit/probe.victim"
chmod 644 "$work/audit/probe.victim"
CUSTOS_TEST_SHIPPER_PROBE=$work/audit start_custos "$work/custos.yaml"
ABI=$(sed -n 's/.*proxy confined: .*landlock abi \([0-9]*\).*/\1/p' "$work/custos.log" | head -1)
hook() { grep -o "audit shipper: test hook: $1 $2: .*" "$work/custos.log" | head -1 | sed 's/.*: //'; }
wait_until 60 grep -q "audit shipper: test hook: replace" "$work/custos.log" ||
	fail "the shipper's test hook did not run: $(grep 'audit' "$work/custos.log" | tail -5)"
if [ "${ABI:-0}" -gt 0 ]; then
	check "the shipper cannot create a file in the audit directory (landlock abi $ABI)" \
		"$(hook create "$work/audit/probe.created")" "Permission denied"
	check "the shipper cannot rename a file of the audit directory" \
		"$(hook rename "$work/audit/probe.victim")" "Permission denied"
	check "the shipper cannot truncate a file of the audit directory" \
		"$(hook truncate "$work/audit/probe.victim")" "Permission denied"
	check "the trail's file is as it was" "$(cat "$work/audit/probe.victim" 2>&1)" "part of the trail"
	[ ! -e "$work/audit/probe.created" ] && [ ! -e "$work/audit/probe.renamed" ] &&
		ok "nothing created or renamed in the audit directory" ||
		fail "the shipper changed the audit directory: $(ls "$work/audit")"
else
	echo "ok   # SKIP the shipper's Landlock view: the kernel has no Landlock (landlock abi ${ABI:-?})"
fi
check "the shipper replaces its own files in ship/ by rename" \
	"$(hook replace "$work/audit/ship/probe")" "done"
rm -f "$work/audit/probe.victim" "$work/audit/ship/probe"

send 5
wait_until 60 lag0 && ok "the sink delivered everything" || fail "lag: $(ctl audit-status)"
stop_custos
[ -f "$work/audit/ship/cursor.cef" ] && [ ! -e "$work/audit/cursor.cef" ] &&
	ok "the cursor lives in ship/ ($(cat "$work/audit/ship/cursor.cef"))" ||
	fail "cursor files: $(ls -R "$work/audit")"

# -- 2. an older custos' cursor in the audit directory itself: moved to ship/, resumed from.
cur=$(cat "$work/audit/ship/cursor.cef")
mv "$work/audit/ship/cursor.cef" "$work/audit/cursor.cef"
mv "$work/custos.log" "$work/custos.1.log"
start_custos "$work/custos.yaml"
grep -q "audit: $work/audit/cursor.cef moved to $work/audit/ship/cursor.cef" "$work/custos.log" &&
	ok "the old cursor file was moved to ship/ at start" || fail "no move: $(grep audit: "$work/custos.log")"
wait_until 60 grep -q "audit sink cef: connected to unix:$work/rx.sock, resuming at seq $((cur + 1))\$" \
	"$work/custos.log" && ok "the sink resumed from the moved cursor (seq $((cur + 1)))" ||
	fail "resume: $(grep 'audit sink cef' "$work/custos.log")"
[ ! -e "$work/audit/cursor.cef" ] || fail "the old cursor file is still there"
send 3
wait_until 60 lag0 && ok "delivered after the move" || fail "lag: $(ctl audit-status)"
stop_custos

# -- 3. a restart resumes from ship/'s cursor; every seq arrived, in order.
cur=$(cat "$work/audit/ship/cursor.cef")
mv "$work/custos.log" "$work/custos.2.log"
start_custos "$work/custos.yaml"
wait_until 60 grep -q "audit sink cef: connected to unix:$work/rx.sock, resuming at seq $((cur + 1))\$" \
	"$work/custos.log" && ok "a restart resumes from ship/cursor.cef (seq $((cur + 1)))" ||
	fail "resume: $(grep 'audit sink cef' "$work/custos.log")"
send 2
wait_until 60 lag0 || fail "lag: $(ctl audit-status)"

# -- 4. the shipper killed (kill -9): the proxy's shipper supervisor restarts it with backoff,
# it resumes from its cursor, and what is written afterwards arrives; audit-status, the
# metrics and the trail say so. Then a restart that cannot start (a corrupt cursor file) is
# retried, reported as a crash loop naming the file, and resumes once the file is mended.
# shipper_pid: the custos-ship process under this custos (its name, and CU_PID among its
# ancestors), whatever audit-status says.
shipper_pid() {
	local p c q st
	for p in /proc/[0-9]*; do # shell builtins only: a fork per process is slow under load
		{ read -r c <"$p/comm"; } 2>/dev/null || continue
		[ "$c" = custos-ship ] || continue
		q=${p#/proc/}
		while [ -n "$q" ] && [ "$q" -gt 1 ]; do
			[ "$q" = "$CU_PID" ] && { echo "${p#/proc/}"; return 0; }
			{ read -r st <"/proc/$q/stat"; } 2>/dev/null || break
			st=${st##*) } # state, ppid, ...
			st=${st#* }
			q=${st%% *}
		done
	done
	return 1
}
ship_st() { ctl audit-status 2>/dev/null | python3 -c "import json,sys; s=json.load(sys.stdin)['shipper']; print($1)"; }
# restarted N: the pid of the shipper of restart N, once the log has it and it runs.
restarted() {
	local p
	p=$(sed -n "s/.*audit shipper restarted (pid \([0-9]*\), restart $1).*/\1/p" "$work/custos.log")
	[ -n "$p" ] && [ "$(shipper_pid)" = "$p" ] && echo "$p"
}
sp=$(shipper_pid) || fail "no custos-ship process under custos (pid $CU_PID)"
kill -KILL "$sp"
if wait_until 30 restarted 1 >/dev/null; then
	ok "the shipper (pid $sp) was restarted after kill -9 (pid $(restarted 1))"
else
	fail "the shipper (pid $sp) was not restarted: $(grep -i 'shipper' "$work/custos.log" | tail -3)"
fi
grep -Eq "audit shipper \(pid $sp\) ended: killed by signal 9 after [0-9]+ ms \(1 end\(s\) in a row\); restarting it in 250 ms" \
	"$work/custos.log" && ok "the shipper's end is logged" ||
	fail "no log line: $(grep -i 'shipper' "$work/custos.log" | tail -3)"
check "audit-status counts the restart" \
	"$(ship_st "s['state'], s['pid'], s['restarts'], s['last_exit'], s['crash_loop']")" \
	"running $(restarted 1) 1 killed by signal 9 False"
ctl metrics 2>/dev/null | grep -q '^custos_audit_shipper_restarts_total 1$' &&
	ok "the metrics count the restart" || fail "metrics: $(ctl metrics | grep shipper)"
send 3
wait_until 30 lag0 && ok "delivered after the restart" || fail "lag after the kill: $(ctl audit-status)"

cur=$(cat "$work/audit/ship/cursor.cef")
printf 'not a number\n' >"$work/audit/ship/cursor.cef"
kill -KILL "$(restarted 1)"
wait_until 30 grep -q "audit shipper: crash loop: 3 ends in a row" "$work/custos.log" &&
	ok "repeated failures are logged as a crash loop" ||
	fail "no crash loop line: $(grep -i 'shipper' "$work/custos.log" | tail -3)"
ship_st "s['state'], s['crash_loop'], s['last_error']" |
	grep -q "^restarting True audit sink cef: $work/audit/ship/cursor.cef: " &&
	ok "audit-status reports the crash loop, naming the cursor file" || fail "audit-status: $(ship_st "s")"
# A cursor that parses but is past the log's end: the shipper starts, its sink sends nothing
# (it would skip the records in between once they are written) and says why.
printf '%s\n' "$((cur + 1000))" >"$work/audit/ship/cursor.cef"
wait_until 30 restarted 2 >/dev/null || fail "not restarted: $(ctl audit-status)"
wait_until 30 grep -q "audit sink cef: $work/audit/ship/cursor.cef says seq $((cur + 1000)) was delivered, but the log ends at seq " \
	"$work/custos.log" && ok "a cursor past the log's end stops its sink, said why" ||
	fail "no refusal: $(grep 'audit sink cef' "$work/custos.log" | tail -3)"
printf '%s\n' "$cur" >"$work/audit/ship/cursor.cef"
kill -KILL "$(restarted 2)"
wait_until 30 restarted 3 >/dev/null && ok "the shipper starts again once its cursor is mended" ||
	fail "not restarted: $(ctl audit-status)"
send 2 # delivered by the stop's drain: the check of every seq below covers them
stop_custos
python3 - "$work"/audit/audit-*.jsonl <<'PY' && ok "the trail records the shipper's ends and restarts" || fail "trail.shipper events"
import json, sys
ev = [json.loads(l) for f in sys.argv[1:] for l in open(f)]
sh = [e for e in ev if e.get("type") == "trail.shipper"]
acts = [e["action"] for e in sh]
assert acts[:2] == ["exit", "restart"], acts
assert sh[0]["signal"] == 9 and sh[0]["restart_in_ms"] == 250, sh[0]
assert "start_failed" in acts and acts[-1] == "restart", acts
assert any(e.get("crash_loop") for e in sh), sh
PY
r=$(wait_complete "$work/rx.seqs") && ok "every seq arrived in order: $r" || fail "delivery: $r"
"$bin" audit verify "$work/audit" >/dev/null && ok "the log verifies" || fail "audit verify"
[ "$fails" -eq 0 ]
