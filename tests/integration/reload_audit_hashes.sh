#!/usr/bin/env bash
# Two reloads at once, one by SIGHUP and one by the admin API (they run one at a time, docs/
# CONFIG.md "What a reload changes"): each one's policy.reload event names the policy in force
# just before it ran and the one it left in force, so the events chain (each old_policy_hash is
# the policy_hash of the reload before it), whichever came first. The first reload is held for
# about 6 s by a sandbox it adds, whose server sleeps before it listens; the second is asked for
# meanwhile and waits for it.
. "$(dirname "$0")/proxy_lib.bash"

[ "$(id -u)" -eq 0 ] || skip "needs root for the process sandbox in this test"
unshare -Urn true 2>/dev/null || skip "user/network namespaces not available"

make_pki
write_policy "$work/policy.yaml"
p1=$(free_port) p2=$(free_port)
# model_yaml ID PORT [SLEEP]: one sandboxed model server (the fixture) under models:, which
# sleeps SLEEP seconds before it starts when SLEEP is given.
model_yaml() {
	local cmd="[/opt/fx/model-server, --listen, \"127.0.0.1:$2\", --model-id, $1]"
	[ -n "${3-}" ] && cmd="[/bin/sh, -c, \"sleep $3; exec /opt/fx/model-server --listen 127.0.0.1:$2 --model-id $1\"]"
	cat <<M
  - id: $1
    sandbox:
      type: process
      profile: fx
      command: $cmd
      env: { ASAN_OPTIONS: "detect_leaks=0" }
      port: $2
      health: { start_timeout: 60s }
M
}
sandbox_conf_template 2s
ctl() { "$bin" ctl --socket "$work/admin.sock" "$@"; }
hash_now() { ctl policy show | sed -n 's/.*"hash":"\([0-9a-f]*\)".*/\1/p' | head -1; }
# event TRIGGER FIELD: FIELD of the last policy.reload event of TRIGGER (sighup, admin).
event() {
	audit_grep '"type":"policy.reload"' | grep "\"trigger\":\"$1\"" | tail -1 |
		sed -n "s/.*\"$2\":\"\\([0-9a-f]*\\)\".*/\\1/p"
}
started() { [ "$(grep -c 'up: model slow-model: sandbox started' "$work/custos.log")" -ge "$1" ]; }
events() { [ "$(audit_grep '"type":"policy.reload"' | wc -l)" -ge "$1" ]; }

# scenario FIRST: on a fresh custos, FIRST (sighup or admin) reloads a configuration adding the slow sandbox and
# a changed policy; the other trigger reloads while FIRST waits for the sandbox.
scenario() {
	local first=$1 second h0 h1 reloader
	[ "$first" = sighup ] && second=admin || second=sighup
	h0=$(hash_now)
	conf_models "$(model_yaml test-model "$p1")
$(model_yaml slow-model "$p2" 6)"
	printf '# %s first\n' "$first" >>"$work/policy.yaml"
	if [ "$first" = sighup ]; then
		kill -HUP "$CU_PID"
	else
		ctl policy reload >"$work/reload.out" 2>&1 &
		reloader=$!
	fi
	wait_until 60 started 1 || fail "$first: the slow sandbox did not start"
	if [ "$second" = sighup ]; then
		kill -HUP "$CU_PID"
		# the SIGHUP is taken (and, before the fix, the old hash read) before the first ends
		wait_until 30 grep -q 'up: SIGHUP: another reload is in progress' "$work/custos.log" ||
			fail "$first: the SIGHUP did not wait for the admin reload"
		wait "$reloader"
	else
		ctl policy reload >"$work/reload.out" 2>&1
	fi
	wait_until 60 events 2 || fail "$first: fewer than 2 policy.reload events"
	h1=$(hash_now)
	[ "$h0" != "$h1" ] && ok "$first: the policy changed ($h0 -> $h1)" || fail "$first: the policy did not change"
	check "$first: its event's old policy" "$(event "$first" old_policy_hash)" "$h0"
	check "$first: its event's new policy" "$(event "$first" policy_hash)" "$h1"
	check "$second: its event's old policy is the first reload's new one" "$(event "$second" old_policy_hash)" "$h1"
	check "$second: its event's new policy" "$(event "$second" policy_hash)" "$h1"
}

conf_models "$(model_yaml test-model "$p1")"
start_custos "$work/custos.yaml"
scenario sighup
kill -TERM "$CU_PID"
wait "$CU_PID"
rm -rf "$work/audit"
mv "$work/custos.log" "$work/custos.log.1"
conf_models "$(model_yaml test-model "$p1")"
start_custos "$work/custos.yaml"
scenario admin
kill -TERM "$CU_PID"
wait "$CU_PID"
check "exit status" "$?" 0
grep -E 'Sanitizer|runtime error' "$work"/custos.log* && fail "sanitizer report in a log" || ok "no sanitizer report"
[ "$fails" -eq 0 ]
