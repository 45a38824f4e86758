#!/usr/bin/env bash
# audit_cursor_durable: each move of a sink's cursor is durable, as docs/AUDIT.md says. A crash
# test cannot show it (a power cut is what loses an unsynced rename), so the shipper's system
# calls are read under strace: every rename onto ship/cursor.<id> is preceded, in the same
# thread, by an fsync of the new file and followed by an fsync of the ship/ directory before
# the next cursor write. The cursor holds the last delivered seq, "<seq>\n".
set -euo pipefail
: "${CUSTOS_BIN:?}" "${CUSTOS_FIXTURES:?}"
LOAD="$CUSTOS_FIXTURES/audit-load/audit-load"
[ -x "$LOAD" ] || { echo "SKIPPED: $LOAD not built"; exit 77; }
command -v python3 >/dev/null || { echo "SKIPPED: python3 missing"; exit 77; }
command -v strace >/dev/null || { echo "SKIPPED: strace missing"; exit 77; }
strace -qq -o /dev/null true 2>/dev/null || { echo "SKIPPED: ptrace not allowed here"; exit 77; }
T=$(mktemp -d)
SP=""
cleanup() {
	[ -n "$SP" ] && kill "$SP" 2>/dev/null || true
	[ -n "$SP" ] && wait "$SP" 2>/dev/null || true
	[ -n "${KEEP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# A plain TCP receiver that reads and drops everything (TCP confirmation moves the cursor).
python3 - "$T/port" <<'PY' &
import os, socket, sys, threading
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(4)
open(sys.argv[1] + ".tmp", "w").write(str(srv.getsockname()[1]))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
def drain(c):
    while c.recv(65536):
        pass
while True:
    c, _ = srv.accept()
    threading.Thread(target=drain, args=(c,), daemon=True).start()
PY
SP=$!
end=$((SECONDS + 60))
while [ "$SECONDS" -lt "$end" ]; do [ -s "$T/port" ] && break; kill -0 "$SP" || fail "receiver died"; sleep 0.1; done
[ -s "$T/port" ] || fail "the receiver did not start"

# LeakSanitizer cannot run under ptrace; ASan's other checks still do.
ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" strace -f -qq -y -o "$T/trace" \
	-e trace=/^rename,fsync "$LOAD" "$T/log" --events 200 --sink tcp --port "$(cat "$T/port")" \
	--wait-sink 60 --drain-s 10 >"$T/load.out" 2>"$T/load.err" ||
	fail "load driver: $(cat "$T/load.err")"
grep -q '^sink_lag=0 ' "$T/load.out" || fail "the sink did not deliver everything: $(cat "$T/load.out")"
last=$(tail -1 "$(ls "$T/log"/audit-*.jsonl | tail -1)" | sed 's/^{"v":1,"seq":\([0-9]*\),.*/\1/')
[ "$(cat "$T/log/ship/cursor.siem")" = "$last" ] ||
	fail "ship/cursor.siem holds '$(cat "$T/log/ship/cursor.siem")', not the last seq $last"
[ "$(stat -c %a "$T/log/ship/cursor.siem")" = 600 ] || fail "ship/cursor.siem is not mode 600"
ls "$T/log/ship" | grep -q '\.tmp' && fail "a replacement was left in ship/: $(ls "$T/log/ship")"

python3 - "$T/trace" "$T/log/ship" <<'PY'
import re, sys
trace, ship = sys.argv[1], sys.argv[2]
cursor = ship + "/cursor.siem"
state = {}  # per thread: None, "file-synced", "renamed"
renames = 0
for line in open(trace):
    m = re.match(r"(\d+) +(\w+)\((.*)\) = (-?\d+)", line)
    if not m:
        continue
    tid, call, args, rc = m.group(1), m.group(2), m.group(3), int(m.group(4))
    if call == "fsync":
        path = re.match(r"\d+<(.*)>", args)
        path = path.group(1) if path else ""
        if path.startswith(cursor + ".tmp") and rc == 0:
            if state.get(tid) == "renamed":
                sys.exit("FAIL: a cursor renamed into place, and the next written, without "
                         "fsyncing %s between" % ship)
            state[tid] = "file-synced"
        elif path == ship and rc == 0 and state.get(tid) == "renamed":
            state[tid] = None
    elif call.startswith("rename") and re.search(r'"%s"(, \w+)?$' % re.escape(cursor), args):
        if state.get(tid) != "file-synced":
            sys.exit("FAIL: a cursor renamed into place without fsyncing the file first")
        state[tid] = "renamed"
        renames += 1
if renames == 0:
    sys.exit("FAIL: no cursor rename seen in the trace")
for tid, st in state.items():
    if st == "renamed":
        sys.exit("FAIL: the last cursor rename (thread %s) was not followed by an fsync of %s"
                 % (tid, ship))
print("ok   %d cursor writes: each file fsynced, renamed, then ship/ fsynced" % renames)
PY
echo "PASS"
