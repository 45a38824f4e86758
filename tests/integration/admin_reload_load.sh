#!/usr/bin/env bash
# ctest: serial (loads the machine, or is timing-sensitive under load)
# A policy reload through the admin API under load: wrk keeps sending allowed chat requests
# through the proxy while the policy is reloaded several times (each reload a different policy
# hash); wrk must see no socket error and no non-2xx answer. Then a broken policy is refused
# under load too, with the old one staying in force.
. "$(dirname "$0")/proxy_lib.bash"

command -v wrk >/dev/null || skip "wrk not installed (scripts/deps.sh)"
curl --help all 2>/dev/null | grep -q -- '--unix-socket' || skip "curl without --unix-socket"

make_pki
start_fixture model --tokens 4
TOKENS_PER_HOUR=1000000000 write_policy "$work/policy.yaml"
sed -i 's/requests_per_minute: 6000/requests_per_minute: 100000000/' "$work/policy.yaml"
NO_DEFAULT_ADMIN=1 write_config "$work/custos.yaml" "$FX_PORT"
cat >>"$work/custos.yaml" <<CFG
admin:
  socket: $work/admin.sock
CFG
start_custos "$work/custos.yaml"
wait_until 60 test -S "$work/admin.sock" || fail "no admin socket $work/admin.sock after 60 s"
ctl() { "$bin" ctl --socket "$work/admin.sock" "$@"; }
hash_now() { ctl policy show | sed -n 's/.*"hash":"\([0-9a-f]*\)".*/\1/p'; }

cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"model":"test-model","messages":[{"role":"user","content":"hi"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $ALICE"
LUA
url="http://127.0.0.1:$PORT2/v1/chat/completions"
check "one request before the load" "$(curl -sS -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $ALICE" -d '{"model":"test-model","messages":[{"role":"user","content":"hi"}]}' "$url")" 200

# wrk counts an answer slower than its --timeout (default 2 s) as a socket error: too short
# for ASan on a loaded machine, and not what is checked here (errors and non-2xx answers).
requests() { ctl metrics | awk '/^custos_requests_total[{ ]/ { n += $NF } END { print n + 0 }'; }
before=$(requests)
wrk -t1 -c8 -d10s --timeout 30s -s "$work/post.lua" "$url" >"$work/wrk.out" 2>&1 &
wrk_pid=$!
# The reloads start once the load's requests reach custos (not after a fixed second, which a
# slow start of wrk under load could outlast), then are spread over it, one a second.
load_flowing() { [ "$(requests)" -gt "$before" ]; }
wait_until 60 load_flowing || fail "no request of the load reached custos in 60 s"
prev=$(hash_now)
reloaded=0
for i in 1 2 3 4 5; do
	printf '# reload %s\n' "$i" >>"$work/policy.yaml"
	out=$(ctl policy reload)
	h=$(hash_now)
	if echo "$out" | grep -q '"reloaded":true' && [ "$h" != "$prev" ]; then
		reloaded=$((reloaded + 1))
	else
		fail "reload $i: $out"
	fi
	prev=$h
	sleep 1
done
check "reloads under load" "$reloaded" 5
cp "$work/policy.yaml" "$work/policy.good"
printf 'version: 1\nrules: [ {id: x, effect: maybe} ]\n' >"$work/policy.yaml"
out=$(ctl policy reload 2>&1)
echo "$out" | grep -q '"reloaded":false' && echo "$out" | grep -q '"errors":\[{' && ok "broken policy refused under load, with errors" || fail "broken reload: $out"
check "old policy still in force" "$(hash_now)" "$prev"
wait "$wrk_pid"
cat "$work/wrk.out"
n=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$work/wrk.out")
[ "${n:-0}" -gt 0 ] && ok "wrk sent $n requests" || fail "wrk sent nothing"
grep -q 'Non-2xx' "$work/wrk.out" && fail "non-2xx answers during reloads" || ok "no non-2xx answer"
grep -q 'Socket errors' "$work/wrk.out" && fail "socket errors during reloads" || ok "no socket error"
check "reloads counted" "$(ctl metrics | sed -n 's/^custos_policy_reloads_total{result="ok"} //p')" 5
kill -TERM "$CU_PID"
wait "$CU_PID" 2>/dev/null
grep -E 'Sanitizer|runtime error' "$work/custos.log" && fail "sanitizer report in the log" || ok "no sanitizer report"
[ "$fails" -eq 0 ]
