#!/usr/bin/env bash
# ops_reload_overrides: a reload whose custos.yaml changes only a setting the command line
# overrides (log.level under --log-level, log.format under --log-format) is accepted, by
# SIGHUP and by the admin API; the command line keeps winning (debug lines go on, the format
# stays text) and the log says the file's new value is not applied. Without the flag the same
# change is still refused as a start-only setting.
. "$(dirname "$0")/proxy_lib.bash"

make_pki
start_fixture model
write_policy "$work/policy.yaml"
write_config "$work/base.yaml" "$FX_PORT"
with_log() { # with_log LOG_YAML: custos.yaml with that log: section
	{ cat "$work/base.yaml"; printf 'log: %s\n' "$1"; } >"$work/custos.yaml"
	chmod 600 "$work/custos.yaml"
}
admin() { curl -sS --max-time 20 --unix-socket "$work/admin.sock" -o "$work/admin.out" -w '%{http_code}' "$@"; }
reloads() { grep -c "proxy: reloaded (generation\|up: admin API: reloaded" "$work/custos.log" || true; }
more_reloads() { [ "$(reloads)" -gt "$1" ]; }
refusals() { grep -c "reload: log\.\(level\|format\) (.*) changed: custos reads it at start only" "$work/custos.log" || true; }
# probe: a TCP connection to the TLS listener closed at once, which custos logs at debug level.
probe() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }
probes() { grep -c "debug: tls: 127.0.0.1:[0-9]* closed without sending anything" "$work/custos.log" || true; }
more_probes() { [ "$(probes)" -gt "$1" ]; }
bob() {
	curl -sS -o /dev/null -w '%{http_code}' --max-time 20 -H "Authorization: Bearer $BOB" \
		-d '{"model":"test-model","messages":[{"role":"user","content":"hi"}]}' \
		"http://127.0.0.1:$PORT2/v1/chat/completions"
}

# -- start with log: {level: info, format: text}; the command line says debug and text.
with_log "{ level: info, format: text }"
start_custos "$work/custos.yaml" # --log-level debug --log-format text

# SIGHUP: log.level changed to warn in the file, and the policy lets bob in.
with_log "{ level: warn, format: text }"
sed -i 's/principal: \[alice, analytics, sso\]/principal: [alice, bob, analytics, sso]/' "$work/policy.yaml"
n=$(reloads)
kill -HUP "$CU_PID"
wait_until 60 more_reloads "$n" && ok "SIGHUP: the reload changing only log.level was applied" ||
	fail "SIGHUP: not reloaded: $(grep 'reload' "$work/custos.log" | tail -2)"
grep -q "warn: up: reload: log.level changed in the file (info -> warn): not applied, --log-level debug on the command line wins" "$work/custos.log" &&
	ok "SIGHUP: the log says the command line wins" || fail "SIGHUP: no override line"
check "SIGHUP: the new policy is in force (bob)" "$(bob)" 200
n=$(probes)
probe
wait_until 30 more_probes "$n" && ok "SIGHUP: debug lines still logged (--log-level debug)" ||
	fail "SIGHUP: no debug line after the reload"

# Admin API: log.level error and log.format json in the file.
with_log "{ level: error, format: json }"
n=$(reloads)
check "admin: POST /v1/policy changing log.level and log.format" "$(admin -X POST http://admin/v1/policy)" 200
grep -q '"reloaded": *true' "$work/admin.out" || fail "admin: $(cat "$work/admin.out")"
wait_until 30 more_reloads "$n" || fail "admin: no reloaded line"
grep -q "up: reload: log.level changed in the file (info -> error): not applied, --log-level debug on the command line wins" "$work/custos.log" &&
	grep -q "up: reload: log.format changed in the file (text -> json): not applied, --log-format text on the command line wins" "$work/custos.log" &&
	ok "admin: the log says the command line wins for both" || fail "admin: no override lines"
n=$(probes)
probe
wait_until 30 more_probes "$n" && ok "admin: debug lines still logged, as text" ||
	fail "admin: no text debug line after the reload"
check "no refusal for an overridden setting" "$(refusals)" 0
two_reloads_audited() { audit_grep '"type":"policy.reload"' | grep -c '"outcome":"reloaded"' | grep -qx 2; }
wait_until 30 two_reloads_audited &&
	ok "both reloads audited as reloaded" || fail "reload events: $(audit_grep '"type":"policy.reload"')"

# A setting the command line does not override is still start-only: log.file.
with_log "{ level: info, format: text, file: $work/other.log }"
check "admin: a log.file change is refused" "$(admin -X POST http://admin/v1/policy)" 422
grep -q "reload: log.file (unset -> $work/other.log) changed: custos reads it at start only" "$work/admin.out" ||
	fail "log.file refusal: $(cat "$work/admin.out")"
kill -TERM "$CU_PID"
wait "$CU_PID"
mv "$work/custos.log" "$work/custos.1.log"

# -- without --log-level, the file's log.level is in force and its change is refused.
with_log "{ level: info }"
chmod 600 "$work/custos.yaml"
"$bin" --log-format text up -c "$work/custos.yaml" 2>"$work/custos.log" &
CU_PID=$!
pids+=("$CU_PID")
wait_until 120 grep -q 'worker(s) serving' "$work/custos.log" || { fail "custos did not start"; exit 1; }
with_log "{ level: debug }"
check "no --log-level: admin reload changing log.level refused" "$(admin -X POST http://admin/v1/policy)" 422
grep -q "reload: log.level (info -> debug) changed: custos reads it at start only" "$work/admin.out" ||
	fail "refusal: $(cat "$work/admin.out")"
kill -TERM "$CU_PID"
wait "$CU_PID"
[ "$fails" -eq 0 ]
