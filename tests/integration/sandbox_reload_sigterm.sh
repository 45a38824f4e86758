#!/usr/bin/env bash
# A SIGTERM while a reload waits for the sandbox it adds (docs/SANDBOX.md, "Reload"), by SIGHUP
# and by the admin API: the reload is given up (refused, audited), the supervisor stops the
# sandbox it was starting, and custos shuts down as usual (audit sealed) without waiting for
# that sandbox's health.start_timeout (120 s here; its command sleeps 300 s before it listens).
. "$(dirname "$0")/proxy_lib.bash"

[ "$(id -u)" -eq 0 ] || skip "needs root for the process sandbox in this test"
unshare -Urn true 2>/dev/null || skip "user/network namespaces not available"

make_pki
p1=18110 p2=18111
write_policy "$work/policy.yaml"
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
      health: { start_timeout: 120s }
M
}
sandbox_conf_template 2s
conf() {
	conf_models "$(model_yaml test-model $p1)
$1"
}
C=(curl -sS --cacert "$work/tls/ca.crt" --max-time 20 -o /dev/null -w '%{http_code}')
chat() { "${C[@]}" -H "Authorization: Bearer $ALICE" -d '{"model":"'"$1"'","messages":[{"role":"user","content":"hi"}]}' "https://localhost:$PORT/v1/chat/completions"; }
answers() { [ "$(chat test-model)" = 200 ]; }
# MODEL's cgroups made by this test's custos (named custos-MODEL-<supervisor pid>-<generation>:
# other tests running at the same time have sandboxes named test-model too).
cgroups_of() { find /sys/fs/cgroup -maxdepth 5 -type d -name "custos-$1-$CU_PID-*" 2>/dev/null; }
no_cgroup() { [ -z "$(cgroups_of "$1")" ]; }
pid_gone() { ! kill -0 "$1" 2>/dev/null; }
exited() { ! kill -0 "$CU_PID" 2>/dev/null; }
started() { grep -q 'up: model slow-model: sandbox started (pid [0-9]*), waiting for port' "$work/custos.log"; }

# scenario HOW: custos with one sandboxed model; a reload (HOW: sighup or admin) adds a model
# whose server sleeps before it listens, so the reload waits for it; a SIGTERM meanwhile.
scenario() {
	local how=$1 spid rc
	rm -rf "$work/audit"
	conf ""
	"$bin" config check "$work/custos.yaml" >/dev/null 2>&1 || { "$bin" config check "$work/custos.yaml"; fail "config check"; return; }
	start_custos "$work/custos.yaml"
	wait_until 60 answers && ok "$how: the first model answers" || fail "$how: test-model: $(chat test-model)"
	conf "$(model_yaml slow-model $p2 300)"
	if [ "$how" = sighup ]; then
		kill -HUP "$CU_PID"
	else
		"$bin" ctl --socket "$work/admin.sock" policy reload >"$work/reload.out" 2>&1 &
		reloader=$!
	fi
	wait_until 60 started && ok "$how: the reload started the slow sandbox" || fail "$how: slow-model not started: $(tail -5 "$work/custos.log")"
	spid=$(grep -o 'up: model slow-model: sandbox started (pid [0-9]*' "$work/custos.log" | grep -o '[0-9]*$' | tail -1)
	[ -n "$spid" ] && kill -0 "$spid" 2>/dev/null && ok "$how: its sandbox runs (pid $spid)" || fail "$how: no pid for slow-model"
	[ -n "$(cgroups_of slow-model)" ] && ok "$how: its cgroup exists" || fail "$how: no cgroup for slow-model"

	# SIGTERM meanwhile: custos exits long before the 120 s start timeout (the limit here is half).
	kill -TERM "$CU_PID"
	wait_until 60 exited && ok "$how: custos exited on SIGTERM during the pending reload" || fail "$how: custos still runs 60 s after SIGTERM"
	wait "$CU_PID" 2>/dev/null
	rc=$?
	check "$how: its exit status" "$rc" 0
	if [ "$how" = admin ]; then
		wait "$reloader"
		rc=$?
		[ "$rc" -ne 0 ] && ok "$how: the admin API reload failed ($(head -c 200 "$work/reload.out"))" || fail "$how: the reload succeeded: $(cat "$work/reload.out")"
	fi
	wait_until 30 pid_gone "$spid" && ok "$how: the sandbox it was starting is gone" || fail "$how: pid $spid still runs"
	wait_until 30 no_cgroup slow-model && ok "$how: no cgroup left" || fail "$how: cgroup left: $(cgroups_of slow-model)"
	no_cgroup test-model && ok "$how: nor the first model's" || fail "$how: cgroup left: $(cgroups_of test-model)"
	# the refusal's reason; by SIGHUP also in the log (proxy_run logs a failed reload)
	[ "$how" = admin ] || { grep -q 'reload: given up, custos is stopping' "$work/custos.log" && ok "$how: the reload was given up" || fail "$how: no 'given up' in the log"; }
	audit_grep '"type":"policy.reload".*"outcome":"refused".*custos is stopping' >/dev/null && ok "$how: its refusal is audited" || fail "$how: refused reload not audited"
	audit_grep '"type":"sandbox.process".*"model":"slow-model".*"action":"stop"' >/dev/null && ok "$how: the slow sandbox's stop is audited" || fail "$how: stop of slow-model not audited"
	audit_grep '"type":"sandbox.process".*"model":"test-model".*"action":"stop"' >/dev/null && ok "$how: the first sandbox's stop is audited" || fail "$how: stop of test-model not audited"
	out=$("$bin" audit verify "$work/audit" 2>&1)
	grep -q "sealed by a shutdown checkpoint" <<<"$out" && ok "$how: the audit log ends with its shutdown seal" || fail "$how: audit verify: $out"
	grep -E 'Sanitizer|runtime error' "$work/custos.log" && fail "$how: sanitizer report in the log" || ok "$how: no sanitizer report"
}
scenario sighup
scenario admin
[ "$fails" -eq 0 ]
