#!/usr/bin/env bash
# The drain of a SIGTERM through the real binary (docs/PROXY.md "Reload and shutdown"), one
# custos, one drain, every kind of connection at once (proxy_drain_client.py): a complete
# request that reaches an idle keep-alive connection (plain and TLS), or a new connection still
# in the listener's queue, as the drain begins is answered with Connection: close, not dropped;
# a request pipelined behind a stream in flight is answered after it; an idle connection is
# closed at once; a request with no answer begun at the shutdown deadline gets 503, a stream
# past it ends with an error event, [DONE] and its last chunk, both audited `shutdown deadline
# passed`. A Unix-socket listener is closed and removed, not left queuing. /readyz says
# draining (503); an admin API reload during the drain is refused (503, policy.reload
# refused), a SIGHUP during it too (one event for several), a second SIGTERM changes nothing;
# custos exits 0 and the trail verifies.
. "$(dirname "$0")/proxy_lib.bash"

command -v python3 >/dev/null || skip "python3 not installed"
[ "${CUSTOS_TEST_HOOKS:-0}" = 1 ] ||
	skip "custos is built without test hooks (CUSTOS_TEST_HOOKS, on in Debug builds)"

make_pki
start_fixture slow --tokens 40 --delay-ms 150
slow_port=$FX_PORT
start_fixture model --tokens 4
EXTRA_MODELS="  - id: slow-model
    upstream: { url: \"http://127.0.0.1:$slow_port/\" }"
TOKENS_PER_HOUR=100000000 write_policy "$work/policy.yaml"
WORKERS=1 SHUTDOWN=4s write_config "$work/custos.yaml" "$FX_PORT"
# A third listener on a Unix socket (one socket the workers share).
W="$work" perl -0777 -i -pe 's/(  - id: plain\n    address: "[^"]*"\n)/$1  - id: unix\n    address: "unix:$ENV{W}\/l.sock"\n/' "$work/custos.yaml"
grep -q 'l.sock' "$work/custos.yaml" || { fail "no unix listener in custos.yaml"; exit 1; }
export CUSTOS_TEST_DRAIN_HOLD_MS=1000
start_custos "$work/custos.yaml"
unset CUSTOS_TEST_DRAIN_HOLD_MS
ctl() { "$bin" ctl --socket "$work/admin.sock" "$@"; }
hash_before=$(ctl policy show | sed -n 's/.*"hash":"\([0-9a-f]*\)".*/\1/p' | head -1)
readyz() { curl -sS --max-time 10 --unix-socket "$work/admin.sock" -w ' %{http_code}' http://admin/readyz; }
got=$(readyz)
[[ "$got" == *'"draining":false'*' 200' ]] && ok "readyz before the SIGTERM: 200, not draining" ||
	fail "readyz before the SIGTERM: $got"

python3 "$src/tests/integration/proxy_drain_client.py" "$PORT2" "$PORT" "$work/tls/ca.crt" \
	"$ALICE" "$CU_PID" "$work/custos.log" "$work" >"$work/client.out" 2>&1 &
client=$!
phase_is() { [ "$(cat "$work/phase" 2>/dev/null)" = "$1" ]; }
wait_until 60 phase_is held || fail "the client did not reach the drain: $(cat "$work/client.out")"
# During the drain (4 s from the SIGTERM): two SIGHUPs and a second SIGTERM, then /readyz and
# an admin reload of a policy that would be applied.
kill -HUP "$CU_PID"
sleep 0.1
kill -HUP "$CU_PID"
kill -TERM "$CU_PID"
printf '# changed during the drain\n' >>"$work/policy.yaml"
got=$(readyz)
[[ "$got" == *'"ready":false'*'"draining":true'*' 503' ]] && ok "readyz during the drain: 503, draining" ||
	fail "readyz during the drain: $got"
ctl policy reload >"$work/reload.out" 2>&1
rc=$?
[ "$rc" -ne 0 ] && grep -q '503' "$work/reload.out" && grep -q 'custos is stopping' "$work/reload.out" &&
	ok "admin reload during the drain refused (503)" ||
	fail "admin reload during the drain: exit $rc: $(cat "$work/reload.out")"
# The Unix listener is closed (and its path removed) once the worker drains, not left queuing
# connections that are never answered; the drain itself lasts until the deadline.
wait_log 'test hook: drain hold over' 1
unix_gone() { [ ! -S "$work/l.sock" ]; }
wait_until 2 unix_gone && ok "unix listener removed at the drain" ||
	fail "unix listener still there 2 s into the drain"
curl -sS --max-time 10 --unix-socket "$work/l.sock" -H "Authorization: Bearer $ALICE" \
	-o /dev/null http://x/v1/models 2>/dev/null
check "unix listener during the drain: connect refused (curl exit)" "$?" 7
wait "$client"
crc=$?
cat "$work/client.out"
[ "$crc" -eq 0 ] || fail "the client saw a failure (above)"
wait "$CU_PID"
check "custos exit status after the drain" "$?" 0

check "no reload applied during the drain" \
	"$(grep -cE 'proxy: reloaded \(generation|up: admin API: reloaded' "$work/custos.log")" 0
check "SIGHUP during the drain: refused once, logged" \
	"$(grep -c 'reload failed.*custos is stopping' "$work/custos.log")" 1
grep -q 'SIGTERM again while draining' "$work/custos.log" && ok "second SIGTERM logged" ||
	fail "no line for the second SIGTERM"
refusals=$(audit_grep '"type":"policy.reload"' | grep '"outcome":"refused"' | grep -c 'custos is stopping')
check "reloads during the drain audited as refused (admin, SIGHUP)" "$refusals" 2
audit_grep '"type":"policy.reload"' | grep -q '"trigger":"admin".*custos is stopping\|custos is stopping.*"trigger":"admin"' &&
	ok "admin refusal audited with its trigger" || fail "no admin policy.reload refusal: $(audit_grep '"type":"policy.reload"')"
[ -z "$(audit_grep '"type":"policy.reload"' | grep -v "\"policy_hash\":\"$hash_before\"")" ] &&
	ok "the policy in force stayed $hash_before" || fail "a policy.reload names another hash"
rid=$(tr -d '\r\n' <"$work/long.rid" 2>/dev/null)
[ -n "$rid" ] && [ "$(audit_grep "\"request_id\":\"$rid\"" | grep -c '"reason":"shutdown deadline passed"')" = 1 ] &&
	ok "the stream cut at the deadline: one event, shutdown deadline passed" ||
	fail "the stream cut at the deadline: $(audit_grep "\"request_id\":\"${rid:-none}\"")"
check "the request answered 503 at the deadline audited" \
	"$(audit_grep '"status":503' | grep -c '"reason":"shutdown deadline passed"')" 1
check "requests answered during the drain audited (200)" \
	"$(audit_grep '"type":"http.request"' | grep '"path":"/v1/models"' | grep -c '"status":200')" 7
"$bin" audit verify "$work/audit" >"$work/verify.out" 2>&1 && ok "audit verify" ||
	fail "audit verify: $(cat "$work/verify.out")"
grep -E 'Sanitizer|runtime error' "$work/custos.log" && fail "sanitizer report in the log" || ok "no sanitizer report"
[ "$fails" -eq 0 ]
