# Helpers for the audit sink tests (after proxy_lib.bash, which sets $work): the trail is
# $work/audit.

# last_seq: the highest seq in the log (the durable head once custos stopped or is idle).
last_seq() {
	tail -qn1 "$(ls "$work"/audit/audit-*.jsonl | tail -1)" | sed 's/^{"v":1,"seq":\([0-9]*\),.*/\1/'
}
# complete FILE: every seq 1..head of the log arrived in FILE (rsyslog's lines, or
# one seq per line), in order, without gap; duplicates allowed (at-least-once).
complete() {
	python3 - "$1" "$(last_seq)" <<'PY'
import re, sys
seqs = []
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    m = re.match(r'\s*(?:\{"v":1,"seq":)?(\d+)', line)
    if not m:
        sys.exit("unexpected line: " + line[:200])
    seqs.append(int(m.group(1)))
last, prev = int(sys.argv[2]), 0
for s in seqs:
    if s > prev + 1:
        sys.exit(f"gap: seq {s} arrived after {prev}")
    prev = max(prev, s)
missing = set(range(1, last + 1)) - set(seqs)
if missing:
    sys.exit(f"{len(missing)} of {last} events never arrived, first {min(missing)}")
print(f"all {last} events in order ({len(seqs) - len(set(seqs))} duplicates)")
PY
}
