#!/usr/bin/env bash
# ctest: serial (waits on delivery across receiver and custos restarts; timing-sensitive)
# audit_up_sinks: SIEM delivery through the real `custos up` (the shipper is the confined
# proxy's child). Three sinks from custos.yaml: a real rsyslog over TLS with a client
# certificate (imtcp + ossl, x509/certvalid), a strict octet-counting CEF reader on a unix
# socket (Python), and a HEC stand-in with a token file. Requests through the proxy must
# arrive; rsyslog is stopped while requests go on and restarted: nothing may be lost (every
# seq of the verified log, in order); then custos is restarted while rsyslog is down, and
# delivery resumes from the cursor. `custos ctl audit-status` names the sinks with their lag.
# The shipper narrows itself to its own Landlock view: it cannot open the proxy's policy file.
# A sink that cannot be set up (an unreadable CA, a token file readable by others) stops
# `custos up` at start, naming the sink.
. "$(dirname "$0")/proxy_lib.bash"
. "$(dirname "$0")/audit_lib.bash"

need_rsyslog_tls

make_pki
start_fixture model --tokens 4
write_policy "$work/policy.yaml"
tls=$work/tls
ctl() { "$bin" ctl --socket "$work/admin.sock" "$@"; }
chat='{"model":"test-model","messages":[{"role":"user","content":"to the SIEM"}]}'
# send N: N allowed requests through the plain listener.
send() {
	local i
	for i in $(seq "$1"); do
		curl -sS -o /dev/null --max-time 10 -H "Authorization: Bearer $ALICE" -d "$chat" \
			"http://127.0.0.1:$PORT2/v1/chat/completions" || fail "request $i"
	done
}

# -- rsyslog over TLS, requiring a client certificate from our CA.
rsyslog_tls_conf "$tls/ca.crt" "$tls/srv.crt" "$tls/srv.key" x509/certvalid

# -- a strict RFC 6587 octet-counting reader on a unix socket, CEF payloads.
cat >"$work/rx.py" <<'PY'
import os, re, socket, sys
path, out = sys.argv[1], sys.argv[2]
hdr = re.compile(rb'<(\d{1,3})>1 \S+ \S+ custos - (\S{1,32}) \[origin software="custos" '
                 rb'swVersion="[^"]*"\]\[custos@32473 seq="(\d+)"\] (.*)$', re.S)
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
                if sp < 0:
                    break
                n = int(data[:sp])
                if len(data) < sp + 1 + n:
                    break
                msg, data = data[sp + 1:sp + 1 + n], data[sp + 1 + n:]
                m = hdr.match(msg)
                if not m or not m.group(4).startswith(b"CEF:0|custos|custos|"):
                    sys.exit("bad frame: %r" % msg[:200])
                f.write("%d\n" % int(m.group(3)))
                f.flush()
                with open(out + ".msgs", "ab") as g:
                    g.write(m.group(4).replace(b"\n", b" ") + b"\n")
        c.close()
PY
python3 "$work/rx.py" "$work/cef.sock" "$work/cef.seqs" 2>"$work/rx.err" &
RXP=$!
pids+=("$RXP")

# -- a HEC stand-in (hec_fixture.py): token, channel, event objects, indexer acknowledgement.
printf 'hec-s3cret\n' >"$work/hec.token"
chmod 600 "$work/hec.token"
python3 "$(dirname "$0")/hec_fixture.py" "$work/hec.seqs" "$work/hec.port" hec-s3cret 2>"$work/hec.err" &
pids+=($!)
for _ in $(seq 600); do [ -s "$work/hec.port" ] && [ -S "$work/cef.sock" ] && break; sleep 0.1; done
[ -s "$work/hec.port" ] && [ -S "$work/cef.sock" ] || { fail "receivers did not start"; exit 1; }

sinks_yaml() { # sinks_yaml CA TOKEN_FILE
	cat <<Y
  sinks:
    - id: rsys
      type: syslog
      address: "127.0.0.1:$RPORT"
      tls: { ca: $1, cert: $tls/cli.crt, key: $tls/cli.key }
      retry: { initial: 100ms, max: 500ms }
    - id: cef-local
      type: syslog
      format: cef
      address: "unix:$work/cef.sock"
      retry: { initial: 100ms, max: 500ms }
    - id: splunk
      type: http
      http: { url: "http://127.0.0.1:$(cat "$work/hec.port")/services/collector/event", token_file: $2 }
      retry: { initial: 100ms, max: 500ms }
Y
}
AUDIT_YAML=$(sinks_yaml "$tls/ca.crt" "$work/hec.token") write_config "$work/custos.yaml" "$FX_PORT"

# wait_status SECONDS EXPR: until EXPR (Python, over lag = {sink id: lag_events}) holds for
# `custos ctl audit-status`; the last answer stays in status.json.
wait_status() {
	local i
	for i in $(seq $(($1 * 5))); do
		ctl audit-status >"$work/status.json" 2>/dev/null &&
			python3 -c 'import json,sys
lag = {x["id"]: x["lag_events"] for x in json.load(open(sys.argv[1]))["sinks"]}
sys.exit(0 if len(lag) == 3 and eval(sys.argv[2]) else 1)' "$work/status.json" "$2" &&
			return 0
		sleep 0.2
	done
	return 1
}
wait_lag0() { wait_status "$1" 'all(v == 0 for v in lag.values())'; }

start_rsyslog
start_custos "$work/custos.yaml"
grep -q "audit sink rsys: syslog, TLS to 127.0.0.1:$RPORT, format rfc5424" "$work/custos.log" &&
	ok "custos up starts the rsyslog sink" || fail "no rsyslog sink in the log"
grep -q "audit sink cef-local: syslog to unix:$work/cef.sock, format cef" "$work/custos.log" &&
	ok "custos up starts the unix-socket CEF sink" || fail "no unix sink in the log"
grep -q "audit sink splunk: HEC, http to 127.0.0.1:" "$work/custos.log" &&
	ok "custos up starts the HEC sink" || fail "no HEC sink in the log"
# The rsyslog sink's TLS files share $work/tls with the listener's key: the shipper's view
# holds that directory, and custos says so at start, naming the key's setting.
grep -q "warn: up: the audit shipper can read listeners\[0\] (tls).tls key $work/tls/srv.key: its Landlock view holds that directory" "$work/custos.log" &&
	ok "a listener key beside a sink's TLS files is warned at start" || fail "no warning about the listener key"

# The shipper is the child of its supervisor (custos-shipsup), the proxy's child, and both
# run under the proxy's seccomp filter and NO_NEW_PRIVS.
proxy_pid=$(sed -n 's/.*proxy pid \([0-9]*\).*/\1/p' "$work/custos.log" | head -1)
sup="" ship=""
for p in $(pgrep -P "$proxy_pid" 2>/dev/null); do
	[ "$(cat "/proc/$p/comm" 2>/dev/null)" = custos-shipsup ] && sup=$p
done
for p in $(pgrep -P "${sup:-0}" 2>/dev/null); do
	[ "$(cat "/proc/$p/comm" 2>/dev/null)" = custos-ship ] && ship=$p
done
if [ -n "$ship" ]; then
	ok "custos-ship (pid $ship) is a child of custos-shipsup (pid $sup), the proxy's (pid $proxy_pid)"
	check "shipper seccomp mode" "$(awk '/^Seccomp:/ {print $2}' "/proc/$ship/status")" 2
	check "shipper NoNewPrivs" "$(awk '/^NoNewPrivs:/ {print $2}' "/proc/$ship/status")" 1
	check "shipper supervisor seccomp mode" "$(awk '/^Seccomp:/ {print $2}' "/proc/$sup/status")" 2
	check "shipper supervisor NoNewPrivs" "$(awk '/^NoNewPrivs:/ {print $2}' "/proc/$sup/status")" 1
else
	fail "no custos-ship child of a custos-shipsup child of the proxy"
fi

send 20
wait_lag0 30 && ok "every sink caught up (lag 0)" || fail "sinks lag: $(cat "$work/status.json")"
python3 - "$work/status.json" <<'PY' && ok "audit-status names the sinks" || fail "audit-status: $(cat "$work/status.json")"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["shipper_running"] is True, s
assert [x["id"] for x in s["sinks"]] == ["rsys", "cef-local", "splunk"], s
assert all(x["cursor"] == s["durable_seq"] for x in s["sinks"]), s
PY
ctl metrics | grep -q '^custos_audit_sink_lag_events{sink="rsys"} 0$' &&
	ok "metrics: lag per sink id" || fail "no custos_audit_sink_lag_events for rsys"
# lag 0: the sink wrote them to its connection; rsyslog writes out.log a moment later.
rsyslog_has_requests() { [ "$(grep -c '"type":"http.request"' "$work/rs/out.log")" -ge 20 ]; }
wait_until 30 rsyslog_has_requests &&
	ok "rsyslog received the request events" || fail "request events missing in rsyslog"
[ -f "$work/audit/ship/cursor.rsys" ] && ok "ship/cursor.rsys written" || fail "no cursor file"

# -- rsyslog down while requests go on, then back: nothing lost.
stop_rsyslog
send 20
wait_status 20 'lag["rsys"] >= 20 and lag["cef-local"] == 0 and lag["splunk"] == 0' &&
	ok "rsyslog down: only its sink lags" || fail "lag while down: $(cat "$work/status.json")"
start_rsyslog
send 5
wait_lag0 60 && ok "rsyslog back: the sink caught up" || fail "after the outage: $(cat "$work/status.json")"
r=$(wait_complete "$work/rs/out.log") && ok "rsyslog across its outage: $r" || fail "rsyslog: $r"

# -- the shipper narrows itself to its own Landlock view: the log directory, the trust store and
#    the resolver's files, not the proxy's files. A link in the log directory, named as the next
#    file the rsys sink opens, leads to the policy, which the proxy's view holds and the
#    shipper's user may read: the kernel must refuse the shipper's open (EACCES). Under the
#    proxy's view the shipper would read the policy as a log file.
ABI=$(sed -n 's/.*proxy confined: .*landlock abi \([0-9]*\).*/\1/p' "$work/custos.log" | head -1)
if [ "${ABI:-0}" -gt 0 ] && [ -n "$ship" ]; then
	su=$(awk '/^Uid:/ {print $2}' "/proc/$ship/status")
	sg=$(awk '/^Gid:/ {print $2}' "/proc/$ship/status")
	setpriv --reuid="$su" --regid="$sg" --clear-groups cat "$work/policy.yaml" >/dev/null &&
		ok "the shipper's user ($su) may read the policy by its file mode" ||
		fail "the policy is not readable by uid $su: the check below would prove nothing"
	retries() { grep -c "audit sink rsys: .*retrying" "$work/custos.log" || true; }
	n0=$(retries)
	stop_rsyslog
	# The sink has seen the connection close (it logs the retry): its cursor stays until it
	# connects again, and then it opens the file holding cursor + 1.
	for _ in $(seq 300); do [ "$(retries)" -gt "$n0" ] && break; sleep 0.1; done
	[ "$(retries)" -gt "$n0" ] || fail "the rsys sink did not notice rsyslog stopping"
	cur=$(cat "$work/audit/ship/cursor.rsys")
	link="$work/audit/$(printf 'audit-%020d.jsonl' $((cur + 1)))"
	ln -s "$work/policy.yaml" "$link"
	start_rsyslog
	denied="audit sink rsys: $link: open: Permission denied"
	for _ in $(seq 300); do grep -qF "$denied" "$work/custos.log" && break; sleep 0.1; done
	grep -qF "$denied" "$work/custos.log" &&
		ok "the shipper cannot open the proxy's policy file (Landlock, landlock abi $ABI): $denied" ||
		fail "the shipper's open of the policy was not refused: $(grep 'audit sink rsys' "$work/custos.log" | tail -3)"
	rm "$link"
	wait_lag0 60 && ok "the link removed: the sink delivers again" ||
		fail "after the link: $(cat "$work/status.json")"
else
	echo "ok   - # SKIP the shipper's Landlock view: the kernel has no Landlock"
fi

# -- custos restarted while rsyslog is down: delivery resumes from the cursor.
stop_rsyslog
send 10
kill -TERM "$CU_PID"
wait "$CU_PID" 2>/dev/null
[ "$(cat "$work/audit/ship/cursor.rsys")" -lt "$(last_seq)" ] &&
	ok "custos stopped with undelivered events (cursor $(cat "$work/audit/ship/cursor.rsys") < $(last_seq))" ||
	fail "nothing was left to resume"
mv "$work/custos.log" "$work/custos.1.log"
start_rsyslog
start_custos "$work/custos.yaml"
send 5
wait_lag0 60 && ok "after the restart every sink caught up" || fail "after restart: $(cat "$work/status.json")"
grep -q "audit sink rsys: connected to 127.0.0.1:$RPORT, resuming at seq" "$work/custos.log" &&
	ok "the new shipper resumed from the cursor" || fail "no resume line"
r=$(wait_complete "$work/rs/out.log") && ok "rsyslog across a custos restart: $r" || fail "rsyslog: $r"
r=$(wait_complete "$work/cef.seqs") && ok "unix-socket CEF sink: $r" || fail "CEF sink: $r"
r=$(complete "$work/hec.seqs") && ok "HEC sink: $r" || fail "HEC sink: $r"
kill -0 "$RXP" 2>/dev/null || fail "the CEF reader rejected a frame: $(cat "$work/rx.err")"
# The client's address (remote) reaches CEF's typed source keys.
grep -aqE '^CEF:0\|custos\|custos\|[^|]*\|http\.request\|.* src=127\.0\.0\.1 spt=[0-9]+( |$)' "$work/cef.seqs.msgs" &&
	ok "the CEF sink carries the client as src and spt" ||
	fail "no http.request with src/spt: $(grep -a 'http.request' "$work/cef.seqs.msgs" | head -1)"
kill -TERM "$CU_PID"
wait "$CU_PID" 2>/dev/null
"$bin" audit verify "$work/audit" >/dev/null && ok "the log verifies" || fail "audit verify"

# -- a sink that cannot be set up fails the start, naming it.
# up_fails YAML_FILE PATTERN: custos up exits non-zero and its log matches PATTERN.
up_fails() {
	local rc=0
	chmod 600 "$1"
	timeout 30 "$bin" --log-format text up -c "$1" 2>"$work/bad.log" || rc=$?
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && grep -q -- "$2" "$work/bad.log"; then
		ok "refused at start: $(grep -m1 -o -- "$2.*" "$work/bad.log")"
	else
		fail "custos up (exit $rc) did not fail naming the sink: $(tail -5 "$work/bad.log")"
	fi
}
printf 'not a certificate\n' >"$tls/bad-ca.crt"
AUDIT_YAML=$(sinks_yaml "$tls/bad-ca.crt" "$work/hec.token") write_config "$work/bad1.yaml" "$FX_PORT"
up_fails "$work/bad1.yaml" "audit sink rsys: cannot load CA file $tls/bad-ca.crt"
cp "$work/hec.token" "$work/open.token"
chmod 644 "$work/open.token"
AUDIT_YAML=$(sinks_yaml "$tls/ca.crt" "$work/open.token") write_config "$work/bad2.yaml" "$FX_PORT"
up_fails "$work/bad2.yaml" "audit sink splunk: .*open.token"

[ "$fails" -eq 0 ] || exit 1
echo "PASS"
