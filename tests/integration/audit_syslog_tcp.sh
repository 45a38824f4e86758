#!/usr/bin/env bash
# audit_syslog_tcp: the plain-TCP syslog sink against a strict RFC 6587 octet-counting reader
# (Python), reading across rotated log files: every frame must be "<len> <RFC 5424 message>" with the exact length, the header
# must parse, and the MSG must be the verified JSON line in CEF when asked. The reader drops
# the connection twice mid-stream; every event must still arrive in order with no gap.
set -euo pipefail
: "${CUSTOS_BIN:?}" "${CUSTOS_FIXTURES:?}"
LOAD="$CUSTOS_FIXTURES/audit-load/audit-load"
[ -x "$LOAD" ] || { echo "SKIPPED: $LOAD not built"; exit 77; }
command -v python3 >/dev/null || { echo "SKIPPED: python3 missing"; exit 77; }
T=$(mktemp -d)
SP=""
cleanup() {
	[ -n "$SP" ] && kill "$SP" 2>/dev/null || true
	[ -n "$SP" ] && wait "$SP" 2>/dev/null || true
	[ -n "${KEEP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

cat >"$T/rx.py" <<'PY'
import re, socket, sys
out, portfile, fmt = sys.argv[1], sys.argv[2], sys.argv[3]
hdr = re.compile(rb'<(\d{1,3})>1 (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) (\S+) custos - '
                 rb'(\S{1,32}) \[origin software="custos" swVersion="[^"]*"\]'
                 rb'\[custos@32473 seq="(\d+)"\] (.*)$', re.S)
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(4)
open(portfile, "w").write(str(srv.getsockname()[1]))
conns = 0
with open(out, "a") as f:
    while True:
        c, _ = srv.accept()
        conns += 1
        data, frames = b"", 0
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            data += chunk
            while True:
                sp = data.find(b" ")
                if sp < 0:
                    break
                n = int(data[:sp])          # octet count: digits only, else ValueError
                if len(data) < sp + 1 + n:
                    break
                msg, data = data[sp + 1:sp + 1 + n], data[sp + 1 + n:]
                m = hdr.match(msg)
                if not m:
                    sys.exit("bad RFC 5424 message: %r" % msg[:200])
                pri, seq, body = int(m.group(1)), int(m.group(5)), m.group(6)
                if pri // 8 != 13:
                    sys.exit("facility is not 13 (log audit): %d" % pri)
                if fmt == "cef" and not body.startswith(b"CEF:0|custos|custos|"):
                    sys.exit("not CEF: %r" % body[:80])
                if fmt == "json" and not body.startswith(b'{"v":1,"seq":%d,' % seq):
                    sys.exit("MSG is not the JSON line of seq %d" % seq)
                f.write("%d\n" % seq)
                f.flush()
                frames += 1
                # Drop the first two connections mid-stream: the sink must replay.
                if conns <= 2 and frames == 3000:
                    c.close()
                    break
            if c.fileno() == -1:
                break
        try:
            c.close()
        except OSError:
            pass
PY
# all_arrived LAST FMT: every seq 1..LAST arrived in $T/seqs, in order (duplicates allowed);
# says so, or exits non-zero naming the first gap or missing seq.
all_arrived() {
	python3 - "$T/seqs" "$1" "$2" <<'PY'
import sys
seqs = [int(l) for l in open(sys.argv[1])]
last = int(sys.argv[2])
prev = 0
for s in seqs:
    if s > prev + 1:
        sys.exit(f"FAIL: gap: seq {s} after {prev}")
    if s == prev + 1:
        prev = s
missing = set(range(1, last + 1)) - set(seqs)
if missing:
    sys.exit(f"FAIL: {len(missing)} events never arrived, first {min(missing)}")
print(f"{sys.argv[3]}: all {last} events in order over 3 connections, "
      f"{len(seqs) - len(set(seqs))} duplicates")
PY
}
for fmt in json cef; do
	rm -f "$T/port" "$T/seqs"
	python3 "$T/rx.py" "$T/seqs" "$T/port" $fmt 2>"$T/rx.err" &
	SP=$!
	for _ in $(seq 600); do [ -s "$T/port" ] && break; sleep 0.1; done
	rm -rf "$T/log"
	"$LOAD" "$T/log" --threads 2 --events 12000 --rotate-bytes 300000 --sink tcp --format $fmt --port "$(cat "$T/port")" \
		--wait-sink 60 --drain-s 20 >"$T/load.out" 2>"$T/load.err" ||
		fail "load driver: $(cat "$T/load.err")"
	kill -0 "$SP" 2>/dev/null || fail "$fmt: the reader rejected a frame: $(cat "$T/rx.err")"
	[ "$(grep -c "resuming at seq" "$T/load.err")" -ge 3 ] || fail "$fmt: no reconnects"
	last=$(tail -1 "$(ls "$T/log"/audit-*.jsonl | tail -1)" | sed 's/^{"v":1,"seq":\([0-9]*\),.*/\1/')
	# The load driver ends once the sink has written everything to its connection; the reader
	# may still be reading the last frames: stopping it now would lose them. Wait (60 s) until
	# its file holds every event, then stop it.
	end=$((SECONDS + 60))
	until all_arrived "$last" "$fmt" >/dev/null 2>&1 || [ "$SECONDS" -ge "$end" ]; do sleep 0.1; done
	kill "$SP"
	wait "$SP" 2>/dev/null || true
	SP=""
	all_arrived "$last" "$fmt"
done
echo "PASS"
