#!/usr/bin/env bash
# proxy_reload_relative: relative paths in custos.yaml are taken against custos' working
# directory (docs/CONFIG.md), at start and at a reload. The confined proxy's Landlock view is
# made at start from the files custos.yaml names, a relative one as custos opens it; a reload
# is checked against that view before any open. custos is started from a directory that holds
# only the policy (custos.yaml and the certificates are elsewhere), naming it
# `policy.file: policy.yaml`:
# - the policy in force at start refuses bob; the file is edited (replaced by a rename) to allow
#   him and custos reloads: applied, bob gets 200;
# - a reload naming a relative file outside the view (../elsewhere/policy.yaml) is refused
#   before any open, naming the setting and the file as custos would open it (before: the
#   check skipped relative paths and the reload failed on the bare EACCES of the open).
. "$(dirname "$0")/proxy_lib.bash"

make_pki
start_fixture model --tokens 4
D=$(mktemp -d /tmp/custos-relative-XXXXXX)
E=$(mktemp -d /tmp/custos-relative-other-XXXXXX)
trap 'cleanup; rm -rf "$D" "$E"' EXIT
write_policy "$D/policy.yaml"
chmod 755 "$D"
write_config "$work/custos.yaml" "$FX_PORT"
sed -i "s|file: $work/policy.yaml|file: policy.yaml|" "$work/custos.yaml"
grep -q '^  file: policy.yaml$' "$work/custos.yaml" || { fail "policy.file not made relative"; exit 1; }
cd "$D"
start_custos "$work/custos.yaml"
cd "$work"
C=(curl -sS --cacert "$work/tls/ca.crt" --max-time 20 -o /dev/null -w '%{http_code}')
chat='{"model":"test-model","messages":[{"role":"user","content":"hi"}]}'
bob() { "${C[@]}" -H "Authorization: Bearer $BOB" -d "$chat" "https://localhost:$PORT/v1/chat/completions"; }

check "bob before the reload (relative policy.file in force)" "$(bob)" 403
sed 's/principal: \[alice, analytics, sso\]/principal: [alice, bob, analytics, sso]/' "$D/policy.yaml" >"$D/.p.new"
mv -f "$D/.p.new" "$D/policy.yaml"
kill -HUP "$CU_PID"
wait_until 60 eval 'grep -q "reloaded\|reload failed" "$work/custos.log"' || fail "no reload logged"
grep -q 'proxy: reloaded' "$work/custos.log" && ok "the edited relative policy.file reloads" ||
	fail "reload: $(grep 'reload failed' "$work/custos.log" | tail -1)"
check "bob after the reload" "$(bob)" 200

# A relative file outside the view: refused before the open, naming the setting.
cp "$D/policy.yaml" "$E/policy.yaml"
sed -i "s|^  file: policy.yaml$|  file: ../$(basename "$E")/policy.yaml|" "$work/custos.yaml"
kill -HUP "$CU_PID"
wait_log 'reload failed' 1
grep 'reload failed' "$work/custos.log" | tail -1 |
	grep -q "policy.file: $D/../$(basename "$E")/policy.yaml leads to $E/policy.yaml, outside the proxy's Landlock view" &&
	ok "a relative file outside the view: refused, naming the setting" ||
	fail "reason: $(grep 'reload failed' "$work/custos.log" | tail -1)"
check "bob still served by the policy in force" "$(bob)" 200
[ "$fails" -eq 0 ]
