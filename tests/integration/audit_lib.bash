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

# wait_complete FILE: complete FILE once it holds, waiting for it (60 s); its message (or the
# last failure's) either way. A sink's lag is 0 once it wrote the events to its connection;
# syslog has no acknowledgement, so the receiver (rsyslog's omfile, a reader of the test)
# appends them to FILE a moment later.
wait_complete() {
	wait_until 60 complete "$1" >/dev/null 2>&1
	complete "$1"
}

# need_rsyslog_tls: sets RSYSLOGD, or skips the test when rsyslog, its OpenSSL driver or
# python3 is missing.
need_rsyslog_tls() {
	RSYSLOGD=$(command -v rsyslogd || echo /usr/sbin/rsyslogd)
	[ -x "$RSYSLOGD" ] || skip "rsyslogd not installed"
	ls /usr/lib/*/rsyslog/lmnsd_ossl.so >/dev/null 2>&1 ||
		skip "rsyslog-openssl (lmnsd_ossl) not installed"
	command -v python3 >/dev/null || skip "python3 not installed"
}
# rsyslog_tls_conf CA CERT KEY AUTHMODE: $work/rsyslog.conf for an rsyslog on 127.0.0.1:$RPORT
# (a new port) over TLS (the ossl driver; AUTHMODE anon, or x509/certvalid to require a client
# certificate from CA) that writes each message's text to $work/rs/out.log (made empty).
rsyslog_tls_conf() {
	RPORT=$(free_port)
	mkdir -p "$work/rs"
	cat >"$work/rsyslog.conf" <<CONF
global(workDirectory="$work/rs" maxMessageSize="64k"
       DefaultNetstreamDriver="ossl"
       DefaultNetstreamDriverCAFile="$1"
       DefaultNetstreamDriverCertFile="$2"
       DefaultNetstreamDriverKeyFile="$3")
main_queue(queue.type="Direct")
module(load="imtcp" StreamDriver.Name="ossl" StreamDriver.Mode="1"
       StreamDriver.AuthMode="$4")
input(type="imtcp" port="$RPORT" address="127.0.0.1")
template(name="raw" type="string" string="%msg%\n")
action(type="omfile" file="$work/rs/out.log" template="raw")
CONF
	: >"$work/rs/out.log"
	RSP=""
}
# start_rsyslog: rsyslogd ($RSYSLOGD) with $work/rsyslog.conf, in the foreground of a background
# job (pid in RSP, stopped with the test); waits until it listens (fails the test after 60 s).
start_rsyslog() {
	"$RSYSLOGD" -n -f "$work/rsyslog.conf" -i "$work/rs/rsyslog.pid" >>"$work/rs/stderr" 2>&1 &
	RSP=$!
	pids+=("$RSP")
	local end=$((SECONDS + 60))
	while [ "$SECONDS" -lt "$end" ]; do
		(exec 3<>"/dev/tcp/127.0.0.1/$RPORT") 2>/dev/null && return 0
		sleep 0.1
	done
	fail "rsyslog did not start in 60 s: $(cat "$work/rs/stderr")"
	exit 1
}
stop_rsyslog() {
	kill -TERM "$RSP"
	wait "$RSP" 2>/dev/null || true
	RSP=""
}
