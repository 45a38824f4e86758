#!/usr/bin/env bash
# The egress policy follows every reload of `custos up`, and only a reload that was applied:
# - the admin API's POST /v1/policy (custos ctl policy reload) revokes a data source for the
#   egress proxy too, as SIGHUP does;
# - a SIGHUP refused for a broken custos.yaml changes neither the ingress nor the egress policy,
#   even when the policy file beside it changed;
# - a reload that names another policy file (policy.file) moves the egress proxy to that file
#   too, not only the ingress proxy.
set -u
. "${CUSTOS_SRC:?}/tests/integration/egress_lib.bash"
eg_init egress-reload curl python3

P_HTTP=$(port); P_MODEL=$(port); P_IN=$(port); P_EG=$(port)
cd "$W"
FX="$SRC/tests/integration/egress_upstream.py"
python3 "$FX" data "$P_HTTP" plain & PIDS+=($!)
python3 "$FX" model "$P_MODEL" "http://127.0.0.1:$P_EG" "http://localhost:$P_HTTP/" & PIDS+=($!)

write_config() { # write_config [EXTRA_LINE]
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
  - { id: web-admin, url: "http://localhost:$P_HTTP/admin/", classification: restricted, allow_private_addresses: true }
egress:
  port: $P_EG
audit:
  dir: "$W/audit"
admin:
  socket: "$W/admin.sock"
policy:
  file: "$W/policy.yaml"
${1:-}
EOY
	chmod 600 custos.yaml
}
write_policy() { # write_policy yes|no: whether the egress rule allows web
	local data=web
	[ "$1" = yes ] || data=nothing
	cat >policy.yaml <<EOY
version: 1
models:
  m1: { isolation: none }
data:
  web: { url: "http://localhost:$P_HTTP/", classification: internal }
  web-admin: { url: "http://localhost:$P_HTTP/admin/", classification: restricted }
  nothing: { url: "http://localhost:1/", classification: public }
rules:
  - id: read
    effect: allow
    when: { direction: egress, data: $data, method: GET }
EOY
	chmod 644 policy.yaml
}
write_config
write_policy yes
"$BIN" up -c custos.yaml >up.log 2>&1 & UP=$!
PIDS+=($UP)
eg_up "$UP" up.log "$P_EG" "$P_HTTP"
eg_wait 60 test -S "$W/admin.sock" || bad "no admin socket"
status() { curl -s -o /dev/null -w '%{http_code}' -x "http://127.0.0.1:$P_EG" "http://localhost:$P_HTTP/x"; }
# wait_status WANT: the egress answer, polled until it is WANT or 60 s pass (a reload takes
# effect at once, but the SIGHUP is handled asynchronously, and slowly on a loaded machine)
wait_status() {
	local s
	is_status() { s=$(status); [ "$s" = "$1" ]; }
	eg_wait 60 is_status "$1"
	echo "$s"
}
ctl() { "$BIN" ctl --socket "$W/admin.sock" "$@"; }

check "egress allowed at start" test "$(wait_status 200)" = 200
# A second spelling of a path picks the data source the policy judges (web-admin, refused),
# not the one its raw bytes would (web).
code=$(curl -s -o /dev/null -w '%{http_code}' -x "http://127.0.0.1:$P_EG" "http://localhost:$P_HTTP/%61dmin/x")
check "/%61dmin/x refused ($code)" test "$code" = 403
recorded() { # the event is durable within the batch window
	ev=$(cat "$W"/audit/*.jsonl 2>/dev/null | grep '"egress.request"' | grep '%61dmin' | tail -1)
	[ -n "$ev" ]
}
eg_wait 30 recorded
check "... and recorded against web-admin" grep -q '"data_source":"web-admin"' <<<"$ev"
write_policy no
ctl policy reload >ctl.out 2>&1 || { cat ctl.out; bad "ctl policy reload failed"; }
check "admin-API reload revokes the source for egress (403)" test "$(status)" = 403
write_policy yes
kill -HUP "$UP"
check "SIGHUP reload restores it (200)" test "$(wait_status 200)" = 200
# A broken custos.yaml beside a changed policy: the reload is refused, nothing changes.
write_policy no
write_config "bogus_key: 1"
kill -HUP "$UP"
eg_wait 60 grep -q "reload failed" up.log
check "the broken reload was refused" grep -q "reload failed" up.log
check "egress policy unchanged by the refused reload (still 200)" test "$(status)" = 200
# policy.file names another file: the egress proxy follows it (the old file still allows).
write_policy no
mv policy.yaml policy2.yaml
write_policy yes
write_config
sed -i "s|file: \"$W/policy.yaml\"|file: \"$W/policy2.yaml\"|" custos.yaml
grep -q "policy2.yaml" custos.yaml || bad "policy.file not rewritten"
kill -HUP "$UP"
check "a reload naming another policy file moves egress to it (403)" test "$(wait_status 403)" = 403
kill "$UP"
wait "$UP" 2>/dev/null
[ "$FAILS" -eq 0 ]
