#!/usr/bin/env bash
# TLS to the upstream through the real binary, with `openssl s_server -WWW` as the model
# server: the upstream certificate is verified against the configured CA and name; a
# certificate from another CA, or for another name, gives 502 (audited), never a silent
# unverified connection.
. "$(dirname "$0")/proxy_lib.bash"

make_pki
mkdir -p "$work/www/v1"
printf '{"object":"list","data":[{"id":"test-model"}]}' >"$work/www/v1/models"
up_port=$(free_port)
(cd "$work/www" && exec openssl s_server -quiet -accept "127.0.0.1:$up_port" \
	-cert "$work/tls/srv.crt" -key "$work/tls/srv.key" -WWW) >"$work/s_server.log" 2>&1 &
pids+=($!)
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$up_port") 2>/dev/null; }
wait_until 60 listening

write_policy "$work/policy.yaml"
write_config "$work/custos.yaml" 1
# test-model over TLS verified against the test CA; down-model: the same server but checked
# against the rogue CA; slow-model: the right CA but another name.
perl -0777 -i -pe 's|url: "http://127.0.0.1:1/"|url: "https://localhost:'"$up_port"'/"\n      ca_file: '"$work"'/tls/ca.crt|' "$work/custos.yaml"
EXTRA="  - id: down-model
    upstream:
      url: \"https://localhost:$up_port/\"
      ca_file: $work/tls/rogue.crt
  - id: slow-model
    upstream:
      url: \"https://localhost:$up_port/\"
      ca_file: $work/tls/ca.crt
      server_name: wrong.example"
perl -0777 -i -pe 's|(      ca_file: [^\n]*/tls/ca.crt\n)|$1'"$(printf '%s' "$EXTRA" | sed 's/|/\\|/g')"'\n|' "$work/custos.yaml"
"$bin" config check "$work/custos.yaml" >/dev/null 2>&1 || { "$bin" config check "$work/custos.yaml"; fail "config"; exit 1; }
start_custos "$work/custos.yaml"
C=(curl -sS --cacert "$work/tls/ca.crt" --max-time 20 -o "$work/out" -w '%{http_code}')
check "GET over a verified TLS upstream" "$("${C[@]}" -H "Authorization: Bearer $ALICE" "https://localhost:$PORT/v1/models")" 200
grep -q '"test-model"' "$work/out" && ok "body from the TLS upstream" || fail "body: $(cat "$work/out")"
check "upstream certificate from an untrusted CA -> 502" "$("${C[@]}" -H "Authorization: Bearer $ALICE" -d '{"model":"down-model","messages":[{"role":"user","content":"x"}]}' "https://localhost:$PORT/v1/chat/completions")" 502
check "upstream certificate for another name -> 502" "$("${C[@]}" -H "Authorization: Bearer $ALICE" -d '{"model":"slow-model","messages":[{"role":"user","content":"x"}]}' "https://localhost:$PORT/v1/chat/completions")" 502
kill -TERM "$CU_PID"
wait "$CU_PID"
check "502s audited" "$(audit_grep '"status":502' | wc -l | tr -d ' ')" 2
[ "$fails" -eq 0 ]
