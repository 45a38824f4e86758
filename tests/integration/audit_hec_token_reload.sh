#!/usr/bin/env bash
# audit_hec_token_reload: a reload (SIGHUP to `custos up`) makes the audit shipper read a HEC
# sink's http.token_file again, so a token is rotated without a restart. Against a HEC
# stand-in (fixture: no Splunk here) that accepts, per request, only the token in its own file:
# - delivery works with the token custos started with;
# - the collector moves to a new token: requests are refused (401) and the sink falls behind;
#   the new token is put in place by a rename (as a rotation does) and custos is sent SIGHUP:
#   the log says the file was read again, and the sink catches up with the new token;
# - a token file that does not load at a reload (empty, two words) is refused, the log names
#   the sink and the reason, and delivery goes on with the token read before.
# The token lives in a directory of its own outside $work, as in production through the
# confined `custos up`: the proxy reads it at a reload and hands it to the shipper, whose own
# Landlock view does not hold that directory.
. "$(dirname "$0")/proxy_lib.bash"

command -v python3 >/dev/null || { echo "SKIPPED: python3 not installed"; exit 77; }
R=$(mktemp -d /tmp/custos-hec-token.XXXXXX)
trap 'cleanup; rm -rf "$R"' EXIT
# put TEXT: the token file replaced by a rename (a new inode), mode 0600.
put() { printf '%s\n' "$1" >"$R/.t.new" && chmod 600 "$R/.t.new" && mv -f "$R/.t.new" "$R/hec.token"; }

make_pki
start_fixture model --tokens 4
write_policy "$work/policy.yaml"
ctl() { "$bin" ctl --socket "$work/admin.sock" "$@"; }
chat='{"model":"test-model","messages":[{"role":"user","content":"to the SIEM"}]}'
send() { # send N: N allowed requests through the plain listener
	local i
	for i in $(seq "$1"); do
		curl -sS -o /dev/null --max-time 10 -H "Authorization: Bearer $ALICE" -d "$chat" \
			"http://127.0.0.1:$PORT2/v1/chat/completions" || fail "request $i"
	done
}
lag() {
	ctl audit-status 2>/dev/null | python3 -c 'import json,sys
print([x["lag_events"] for x in json.load(sys.stdin)["sinks"] if x["id"] == "splunk"][0])' 2>/dev/null
}
lag0() { [ "$(lag)" = 0 ]; }
behind() { [ "$(lag)" -gt 0 ] 2>/dev/null; }

# The HEC stand-in (hec_fixture.py): the token it accepts is read from $work/accept at each
# request; refused ones are counted in hec.seqs.401.
echo token-one >"$work/accept"
put token-one
python3 "$(dirname "$0")/hec_fixture.py" "$work/hec.seqs" "$work/hec.port" "@$work/accept" 2>"$work/hec.err" &
pids+=($!)
wait_until 60 test -s "$work/hec.port" || { fail "the HEC stand-in did not start"; exit 1; }
AUDIT_YAML="  sinks:
    - id: splunk
      type: http
      http: { url: \"http://127.0.0.1:$(cat "$work/hec.port")/services/collector/event\", token_file: $R/hec.token }
      retry: { initial: 100ms, max: 500ms }" write_config "$work/custos.yaml" "$FX_PORT"
start_custos "$work/custos.yaml"

# 1. Delivered with the token custos started with.
send 2
wait_until 60 lag0 && ok "start: the sink caught up (lag 0)" || fail "start: lag $(lag) after 60 s"

# 2. The collector's token is rotated: refused until custos reads the new one at a reload.
echo token-two >"$work/accept"
send 2
refused() { [ -s "$work/hec.seqs.401" ]; }
wait_until 60 refused && ok "rotated collector: the old token is refused (401)" ||
	fail "rotated collector: no request refused"
wait_until 60 behind && ok "rotated collector: the sink falls behind (lag $(lag))" ||
	fail "rotated collector: lag $(lag)"
put token-two
n=$(grep -c "audit sink splunk: reload: http.token_file $R/hec.token read again" "$work/custos.log")
kill -HUP "$CU_PID"
wait_log "audit sink splunk: reload: http.token_file $R/hec.token read again: used from the next request on" $((n + 1))
wait_until 60 lag0 && ok "new token after SIGHUP: the sink caught up (lag 0)" ||
	fail "new token after SIGHUP: lag $(lag) after 60 s"

# 3. Token files that do not load at a reload: refused, said why; the token in use stays.
# reload_keeps WHAT TEXT PATTERN
reload_keeps() {
	local n
	put "$2"
	n=$(grep -c -- "$3" "$work/custos.log")
	kill -HUP "$CU_PID"
	wait_until 60 log_lines_reach "$3" $((n + 1)) &&
		ok "$1: refused at the reload: $(grep -o -- "audit sink splunk: reload: .*" "$work/custos.log" | tail -1)" ||
		fail "$1: no refusal logged: $(grep -o -- "audit sink splunk: reload: .*" "$work/custos.log" | tail -1)"
	send 2
	wait_until 60 lag0 && ok "$1: delivery goes on with the token read before (lag 0)" ||
		fail "$1: lag $(lag) after 60 s"
}
reload_keeps "empty token file" "" \
	"warn: audit sink splunk: reload: http.token_file: $R/hec.token: empty token; the token read before stays in use"
reload_keeps "two words" "token two" \
	"warn: audit sink splunk: reload: http.token_file: $R/hec.token: the token must be one word of visible ASCII; the token read before stays in use"

kill -TERM "$CU_PID"
wait "$CU_PID" 2>/dev/null || true
[ "$fails" -eq 0 ] || exit 1
echo "PASS"
