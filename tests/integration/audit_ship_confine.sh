#!/usr/bin/env bash
# audit_ship_confine: the SIEM shipper of `custos up` reads the trail and writes only its cursor
# state (docs/AUDIT.md section 6, docs/SANDBOX.md "Privilege separation"). Its Landlock layer
# holds audit.dir read-only and audit.dir/ship read-write: through the test hook
# CUSTOS_TEST_SHIPPER_PROBE (Debug builds, docs/CONTRIBUTING.md "Test hooks") the confined
# shipper tries to create a file in the audit directory, rename one and truncate one, and each
# must fail with EACCES from the kernel, while replacing a file in ship/ by rename works. A
# cursor an older custos left in the audit directory itself is moved to ship/ at start and the
# sink resumes from it; a restart resumes from the cursor in ship/.
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
stop_custos
r=$(wait_complete "$work/rx.seqs") && ok "every seq arrived in order: $r" || fail "delivery: $r"
"$bin" audit verify "$work/audit" >/dev/null && ok "the log verifies" || fail "audit verify"
[ "$fails" -eq 0 ]
