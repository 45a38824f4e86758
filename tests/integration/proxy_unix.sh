#!/usr/bin/env bash
# Unix sockets both ways through the real binary: a client on custos' Unix-socket listener
# (plain HTTP is allowed there), a model server reached over a Unix socket, keep-alive across
# the two workers' shared listener, and the socket file removed at shutdown.
. "$(dirname "$0")/proxy_lib.bash"

make_pki
"$fixture" --unix "$work/model.sock" --port-file "$work/m.port" --model-id test-model --tokens 3 \
	>"$work/model.log" 2>&1 &
pids+=($!)
wait_until 60 test -S "$work/model.sock"
[ -S "$work/model.sock" ] || skip "fixture did not listen on a Unix socket"
write_policy "$work/policy.yaml"
write_config "$work/custos.yaml" 1
perl -0777 -i -pe 's|url: "http://127.0.0.1:1/"|url: "unix:'"$work"'/model.sock"|' "$work/custos.yaml"
perl -0777 -i -pe 's|  - id: plain\n    address: "127.0.0.1:\d+"|  - id: plain\n    address: "unix:'"$work"'/custos.sock"|' "$work/custos.yaml"
grep -q "unix:$work/custos.sock" "$work/custos.yaml" || { fail "config rewrite"; exit 1; }
start_custos "$work/custos.yaml"
[ -S "$work/custos.sock" ] && ok "listener socket created" || fail "no listener socket"
chat='{"model":"test-model","messages":[{"role":"user","content":"over unix sockets"}]}'
code=$(curl -sS --unix-socket "$work/custos.sock" -o "$work/out" -w '%{http_code}' \
	-H "Authorization: Bearer $ALICE" -d "$chat" http://localhost/v1/chat/completions)
check "chat over Unix sockets both ways" "$code" 200
grep -q 'over unix sockets' "$work/out" && ok "reply from the Unix-socket model" || fail "reply: $(cat "$work/out")"
n=$(curl -sS --unix-socket "$work/custos.sock" -o /dev/null -o /dev/null -w '%{num_connects}\n' \
	-H "Authorization: Bearer $ALICE" http://localhost/v1/models http://localhost/v1/models |
	awk '{s += $1} END {print s}')
check "keep-alive on the Unix listener" "$n" 1
kill -TERM "$CU_PID"
wait "$CU_PID"
check "exit status" "$?" 0
[ ! -e "$work/custos.sock" ] && ok "socket file removed at shutdown" || fail "socket file left behind"
[ "$fails" -eq 0 ]
