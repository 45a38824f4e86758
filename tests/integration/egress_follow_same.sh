#!/usr/bin/env bash
# egress_follow_same: after a reload, the egress proxy of `custos up` judges by the very policy
# the ingress proxy compiled, not by a second read of policy.file. The window between the two is
# held open with the test hook CUSTOS_TEST_RELOAD_HOLD (Debug builds, docs/CONTRIBUTING.md "Test
# hooks"), which stops a SIGHUP reload between the ingress proxy's swap and the egress proxy
# following it; the file is edited in that window:
#  1. policy.yaml denies the data source; it is rewritten to allow it; SIGHUP; held: the ingress
#     proxy has compiled "allow". The file is rewritten to deny again, then released: the
#     egress proxy must allow (the ingress proxy's policy), not deny (the file now).
#  2. both on allow; the file says deny at SIGHUP and is broken in the window: the egress
#     proxy must still move to the ingress proxy's policy (deny), not keep allow.
# Both proxies are compared through their own decisions: the egress proxy's answer, and the
# ingress proxy's policy hash (GET /v1/policy) against the hash of what it compiled.
set -u
. "${CUSTOS_SRC:?}/tests/integration/egress_lib.bash"
eg_init egress-follow-same curl python3
[ "${CUSTOS_TEST_HOOKS:-0}" = 1 ] ||
	{ echo "SKIPPED: custos is built without test hooks (CUSTOS_TEST_HOOKS, on in Debug builds)"; exit 77; }

P_HTTP=$(port); P_MODEL=$(port); P_IN=$(port); P_EG=$(port)
cd "$W"
FX="$SRC/tests/integration/egress_upstream.py"
python3 "$FX" data "$P_HTTP" plain & PIDS+=($!)
python3 "$FX" model "$P_MODEL" "http://127.0.0.1:$P_EG" "http://localhost:$P_HTTP/" & PIDS+=($!)

cat >custos.yaml <<EOY
version: 1
listeners:
  - id: local
    address: "127.0.0.1:$P_IN"
models:
  - id: m1
    upstream: { url: "http://127.0.0.1:$P_MODEL" }
data_sources:
  - { id: web, url: "http://localhost:$P_HTTP/", classification: internal, allow_private_addresses: true }
egress:
  port: $P_EG
audit:
  dir: "$W/audit"
admin:
  socket: "$W/admin.sock"
policy:
  file: "$W/policy.yaml"
EOY
chmod 600 custos.yaml
write_policy() { # write_policy DATA: the egress rule allows DATA (web: allowed; nothing: denied)
	cat >policy.yaml.new <<EOY
version: 1
models:
  m1: { isolation: none }
data:
  web: { url: "http://localhost:$P_HTTP/", classification: internal }
  nothing: { url: "http://localhost:1/", classification: public }
rules:
  - id: read
    effect: allow
    when: { direction: egress, data: $1, method: GET }
EOY
	chmod 644 policy.yaml.new
	mv policy.yaml.new policy.yaml
}
write_policy nothing
mkfifo "$W/hold.fifo"
CUSTOS_TEST_RELOAD_HOLD="$W/hold.fifo" "$BIN" up -c custos.yaml >up.log 2>&1 & UP=$!
PIDS+=($UP)
eg_up "$UP" up.log "$P_EG" "$P_HTTP"
eg_wait 60 test -S "$W/admin.sock" || bad "no admin socket"
status() { curl -s -o /dev/null -w '%{http_code}' -x "http://127.0.0.1:$P_EG" "http://localhost:$P_HTTP/x"; }
ingress_hash() {
	curl -s --unix-socket "$W/admin.sock" http://admin/v1/policy |
		python3 -c 'import json,sys; print(json.load(sys.stdin)["policy"]["hash"])'
}
check "at start: the egress proxy refuses (403)" test "$(status)" = 403

held=0
# reload_edited FIRST THEN: policy.yaml says FIRST when SIGHUP is sent; once the ingress proxy
# has applied it and the reload is held, policy.yaml is replaced by THEN (a command), and the
# reload released.
reload_edited() {
	local first=$1
	shift
	write_policy "$first"
	want_hash=$("$BIN" policy check policy.yaml 2>&1 | sed -n 's/.*sha256[: ]*\([0-9a-f]\{64\}\).*/\1/p' | head -1)
	held=$((held + 1))
	kill -HUP "$UP"
	eg_wait 60 eval '[ "$(grep -c "test hook: SIGHUP reload applied to the ingress proxy" up.log)" -ge '$held' ]' ||
		bad "reload $held did not reach the hold: $(tail -5 up.log)"
	"$@"
	echo go >"$W/hold.fifo"
	eg_wait 60 eval '[ "$(grep -c "test hook: SIGHUP reload released" up.log)" -ge '$held' ]' ||
		bad "reload $held was not released"
}

# 1. allow compiled by the ingress proxy, deny in the file when the egress proxy follows.
reload_edited web write_policy nothing
check "1: the ingress proxy runs what it compiled" eval '[ -n "$want_hash" ] && [ "$(ingress_hash)" = "$want_hash" ]'
followed() { [ "$(status)" = 200 ]; }
eg_wait 30 followed
check "1: the egress proxy allows, as the ingress proxy's policy does (200)" test "$(status)" = 200

# 2. deny compiled by the ingress proxy, a broken file when the egress proxy follows. First
# both proxies on allow (a reload with no edit), so that keeping the policy before shows.
reload_edited web true
eg_wait 30 followed
check "2: before: the egress proxy allows (200)" test "$(status)" = 200
broken() { printf 'version: 1\nrules: [ {id: x, effect: allow\n' >policy.yaml; }
reload_edited nothing broken
check "2: the ingress proxy runs what it compiled" eval '[ -n "$want_hash" ] && [ "$(ingress_hash)" = "$want_hash" ]'
refused() { [ "$(status)" = 403 ]; }
eg_wait 30 refused
check "2: the egress proxy refuses, as the ingress proxy's policy does (403)" test "$(status)" = 403

kill "$UP"
wait "$UP" 2>/dev/null
[ "$FAILS" -eq 0 ] || { tail -30 up.log; exit 1; }
