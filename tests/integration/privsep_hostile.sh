#!/usr/bin/env bash
# The supervisor of `custos up` against a compromised proxy that sends what the protocol's
# checks let through, at the wrong time (docs/SANDBOX.md "What the supervisor accepts from the
# proxy"), driven by the test hook CUSTOS_TEST_PSX_FILE (Debug builds only, docs/CONTRIBUTING.md
# "Test hooks"): each line appended to $work/psx is sent by the proxy to the supervisor. With one
# process sandbox (test-model, slot 0) and more added and removed by reloads:
#  1. IDLE and FREED for a running sandbox, RESTART of a pid that is not its instance, a second
#     SECCOMP, RELOAD with a digest of no file, a second RELOAD before the first's COMMIT: each
#     is ignored or refused with a log line; the proxy and its sandbox serve on.
#  2. A flood of 3000 such messages: the same, and the supervisor holds no more fds after it.
#  3. A forged IDLE (the fix of 58559a2): slot 2's sandbox, removed by a reload that still
#     drains slot 1's, was stopped and its slot freed; a later reload put another sandbox in
#     slot 2. An IDLE for slot 2 then must not mark that one idle: removed with a stream in
#     flight, it is stopped once the stream ended, which completes.
#  4. A proxy that reads nothing for a while (stall) and asks meanwhile for sockets of a slot
#     that a reload gives to a new sandbox: the supervisor blocks on the full socket; once the
#     proxy reads again, that sandbox can still be stopped (its count of users did not wrap).
#  5. FREED for a slot whose sandbox is being stopped: ignored (the stop still uses the slot,
#     which a reload could otherwise reuse under it).
#  6. A stalled proxy that floods RELOAD/COMMIT pairs: the supervisor runs at most 16 reload
#     threads and refuses the rest, instead of one thread per pair.
# Then SIGTERM stops custos up (exit 0) with no sanitizer report, and the trail verifies.
. "$(dirname "$0")/proxy_lib.bash"
[ "${CUSTOS_TEST_HOOKS:-0}" = 1 ] ||
	skip "custos is built without test hooks (CUSTOS_TEST_HOOKS, on in Debug builds)"
[ "$(id -u)" -eq 0 ] || skip "needs root for the process sandboxes in this test"
unshare -Urn true 2>/dev/null || skip "user/network namespaces not available"

make_pki
write_policy "$work/policy.yaml"
# model_yaml ID PORT TOKENS: one sandboxed model server (the fixture); streamed tokens come
# 250 ms apart.
model_yaml() {
	cat <<M
  - id: $1
    sandbox:
      type: process
      profile: fx
      command: [/opt/fx/model-server, --listen, "127.0.0.1:$2", --tokens, "$3", --delay-ms, "250", --model-id, $1]
      env: { ASAN_OPTIONS: "detect_leaks=0" }
      port: $2
      health: { start_timeout: 20s }
M
}
sandbox_conf_template 60s
# conf [EXTRA]: test-model, and EXTRA (more models) after it.
conf() {
	conf_models "$(model_yaml test-model 18140 4)
${1-}"
}
conf
: >"$work/psx"
touch "$work/read-go" "$work/stop-go"
export CUSTOS_TEST_PSX_FILE="$work/psx" CUSTOS_TEST_SUP_READ_HOLD="$work/read-go" \
	CUSTOS_TEST_SUP_STOP_HOLD="$work/stop-go"
start_custos "$work/custos.yaml"
unset CUSTOS_TEST_PSX_FILE CUSTOS_TEST_SUP_READ_HOLD CUSTOS_TEST_SUP_STOP_HOLD
wait_until 60 test -S "$work/admin.sock" || fail "no admin socket $work/admin.sock after 60 s"
SUP=$(sed -n 's/.*supervisor pid \([0-9]*\), proxy pid.*/\1/p' "$work/custos.log" | head -1)
PX=$(sed -n 's/.*supervisor pid [0-9]*, proxy pid \([0-9]*\).*/\1/p' "$work/custos.log" | head -1)
ctl() { "$bin" ctl --socket "$work/admin.sock" "$@"; }
reload() {
	local out rc
	out=$(ctl policy reload 2>&1)
	rc=$?
	echo "reload: $out" >&2
	check "$1" "$rc" 0
}
C=(curl -sS --cacert "$work/tls/ca.crt" --max-time 30)
chat() { "${C[@]}" -o "${2:-/dev/null}" -w '%{http_code}' -H "Authorization: Bearer $ALICE" -d '{"model":"'"$1"'","messages":[{"role":"user","content":"hi"}]}' "https://localhost:$PORT/v1/chat/completions"; }
# stream MODEL NAME: a streamed chat with MODEL in the background, into $work/NAME.out (its
# status in NAME.code); sets SPID; returns once its first token came.
stream() {
	curl -sS -N --cacert "$work/tls/ca.crt" --max-time 60 -o "$work/$2.out" -w '%{http_code}' \
		-H "Authorization: Bearer $ALICE" \
		-d '{"model":"'"$1"'","stream":true,"messages":[{"role":"user","content":"a b"}]}' \
		"https://localhost:$PORT/v1/chat/completions" >"$work/$2.code" 2>"$work/$2.err" &
	SPID=$!
	wait_until 30 grep -q '^data: ' "$work/$2.out" || fail "the stream from $1 did not start"
}
sent=0
# psx SPEC: the proxy sends SPEC (cli/privsep.c, test_hook_send); waits until it did.
psx() {
	printf '%s\n' "$1" >>"$work/psx"
	sent=$((sent + 1))
	wait_log 'test hook: the proxy sent the supervisor' "$sent"
	[ "$(alive)" = alive ] || { fail "the proxy or the supervisor is gone after $1"; exit 1; }
}
sup_fds() { find "/proc/$SUP/fd" -mindepth 1 -maxdepth 1 | grep -c .; }
sup_threads() { sed -n 's/^Threads:[[:space:]]*//p' "/proc/$SUP/status"; }
alive() { kill -0 "$PX" 2>/dev/null && kill -0 "$SUP" 2>/dev/null && echo alive || echo gone; }
zeros=0000000000000000000000000000000000000000000000000000000000000000
# Message types (cli/privsep.h): WANT 32, RESTART 33, SECCOMP 36, RELOAD 37, COMMIT 38,
# IDLE 39, FREED 40. A spec: type,model,gen,arg,len,nfds[:payload].

check "test-model answers" "$(chat test-model)" 200
fds0=$(sup_fds)

# 1. Allowed by the checks, wrong in the state they come in: ignored or refused, said so.
psx "39,0,0,0,0,0"
wait_log "the proxy said slot 0 is idle, which no reload drains: ignored" 1
psx "40,0,0,0,0,0"
wait_log "the proxy freed slot 0, which holds no stopped sandbox: ignored" 1
psx "33,0,0,1,0,0"
wait_log "model test-model: restart of pid 1 asked by the proxy: No such process" 1
psx "36,0,0,0,0,1"
wait_log "unexpected seccomp listener message from the proxy: ignored" 1
psx "37,0,1001,0,64,0:$zeros;37,0,1002,0,64,0:$zeros"
wait_log "reload 1002 asked by the proxy: refused, another reload is being prepared" 1
wait_log "changed between the proxy's reading and the supervisor's" 1
psx "38,0,1001,0,0,0;38,0,1002,0,0,0"
check "1: the proxy and the supervisor live on" "$(alive)" alive
check "1: test-model answers" "$(chat test-model)" 200
check "1: test-model was not restarted" "$(grep -c 'sandbox test-model: .*"kind":"exit"' "$work/custos.log")" 0

# 2. A flood of the same.
psx "1000*39,0,0,0,0,0;40,0,0,0,0,0;33,0,0,1,0,0"
check "2: the proxy and the supervisor live on" "$(alive)" alive
check "2: test-model answers" "$(chat test-model)" 200
wait_until 10 test "$(sup_fds)" -le "$fds0" && ok "2: the supervisor holds $fds0 fds as before" ||
	fail "2: the supervisor holds $(sup_fds) fds, $fds0 before: $(ls -l "/proc/$SUP/fd")"

# 3. The forged IDLE. slow-model takes slot 1 and has a stream in flight; a-model, added by a
# later reload, takes slot 2. A reload removes both: a-model is stopped at once (nothing holds
# it) and slot 2 freed, while the reload still drains slow-model (its stream holds the
# configuration it came with). down-model, added next, takes slot 2.
conf "$(model_yaml slow-model 18142 200)"
reload "3: reload adding slow-model"
stream slow-model slow
spid_slow=$SPID
conf "$(model_yaml slow-model 18142 200)
$(model_yaml a-model 18141 4)"
reload "3: reload adding a-model"
conf
reload "3: reload removing both"
wait_log "up: model a-model: sandbox stopped and removed" 1
wait_log "the proxy freed slot 2: a reload may reuse it" 1
conf "$(model_yaml down-model 18143 12)"
reload "3: reload adding down-model (slot 2, a-model's)"
psx "39,2,0,0,0,0"
wait_log "the proxy said slot 2 is idle, which no reload drains: ignored" 1
stream down-model down
spid_down=$SPID
conf
reload "3: reload removing down-model while its stream is in flight"
wait "$spid_down"
check "3: the stream from down-model completed" "$(cat "$work/down.code")" 200
grep -q '^data: \[DONE\]' "$work/down.out" && ok "3: to its end" || fail "3: stream cut: $(cat "$work/down.out" "$work/down.err")"
wait_log "up: model down-model: no request in flight to its removed sandbox" 1
check "3: slow-model's stream was in flight all along" "$(kill -0 "$spid_slow" 2>/dev/null && echo yes)" yes
kill "$spid_slow" 2>/dev/null
wait "$spid_slow" 2>/dev/null
wait_log "up: model slow-model: sandbox stopped and removed" 1
wait_log "the proxy freed slot 1: a reload may reuse it" 1
wait_log "the proxy freed slot 2: a reload may reuse it" 2

# 4. Stalled, the proxy asks for sockets of slot 1 (no sandbox) until the supervisor blocks on
# the full socket; meanwhile a reload it asked for gives slot 1 to a-model (its reading of
# custos.yaml held until then). Refused at COMMIT, a-model must still stop.
rm "$work/read-go"
conf "$(model_yaml a-model 18141 4)"
sha=$(sha256sum "$work/custos.yaml" | cut -c1-64)
wants() { grep -c "privsep: WANT for slot 1, which runs no sandbox\|privsep: model [a-z-]*: no sandbox running" "$work/custos.log"; }
printf '%s\n' "stall:5000" "37,0,2001,0,64,0:$sha" "3000*32,1,0,1,0,0" >>"$work/psx"
sent=$((sent + 3))
# Blocked: no more refused WANTs logged for half a second.
n=-1
for _ in $(seq 100); do
	sleep 0.5
	m=$(wants)
	[ "$m" -gt 0 ] && [ "$m" = "$n" ] && break
	n=$m
done
touch "$work/read-go"
wait_log "reload 2001: the supervisor reads $work/custos.yaml now" 1
sleep 0.5 # the reload thread takes slot 1 at once (sup_model_new), then waits to send ADDED
wait_log 'test hook: the proxy sent the supervisor' "$sent"
wait_log "up: reload: model a-model added: starting its sandbox" 2
psx "38,0,2001,0,0,0"
wait_until 30 log_lines_reach "up: model a-model: sandbox stopped and removed" 2 &&
	ok "4: a-model, refused at COMMIT, is stopped" ||
	fail "4: a-model is not stopped 30 s after its reload was refused"
check "4: the proxy and the supervisor live on" "$(alive)" alive
check "4: test-model answers" "$(chat test-model)" 200
conf

# 5. FREED for slot 1 while the sandbox a reload removed from it is being stopped (held there
# by CUSTOS_TEST_SUP_STOP_HOLD): ignored (the slot is still in use); the proxy's own FREED,
# after REMOVED, frees it.
wait_log "the proxy freed slot 1: a reload may reuse it" 2
conf "$(model_yaml a-model 18141 4)"
reload "5: reload adding a-model (slot 1)"
rm "$work/stop-go"
conf
reload "5: reload removing it"
wait_log "up: test hook: model a-model: its stop holds until $work/stop-go exists" 1
psx "40,1,0,0,0,0"
wait_log "the proxy freed slot 1, which holds no stopped sandbox: ignored" 1
check "5: the slot is not freed before the stop is over" "$(grep -c "the proxy freed slot 1: a reload may reuse it" "$work/custos.log")" 2
touch "$work/stop-go"
wait_log "the proxy freed slot 1: a reload may reuse it" 3

# 6. Stalled, the proxy floods RELOAD/COMMIT pairs, whose answers (RELOADED, each sent by its
# reload's thread) soon fill its socket: at most 16 reload threads.
t0=$(sup_threads)
printf '%s\n' "stall:3000" "1000*37,0,3000,0,64,0:$zeros;38,0,3000,0,0,0" >>"$work/psx"
sent=$((sent + 2))
# Until the proxy has sent them all (after the stall): the most threads seen meanwhile.
tmax=$t0
end=$((SECONDS + 60))
while [ "$SECONDS" -lt "$end" ] && ! log_lines_reach 'test hook: the proxy sent the supervisor' "$sent"; do
	t=$(sup_threads)
	[ "${t:-0}" -gt "$tmax" ] && tmax=$t
	sleep 0.05
done
[ "$tmax" -le $((t0 + 16)) ] && ok "6: at most 16 more threads ($t0, then at most $tmax)" ||
	fail "6: the supervisor ran $tmax threads, $t0 before"
wait_log 'test hook: the proxy sent the supervisor' "$sent"
wait_log "reload 3000 asked by the proxy: refused, 16 reloads still draining or stopping sandboxes" 1
wait_until 30 test "$(sup_threads)" -le "$t0" && ok "6: back to $t0 threads" || fail "6: $(sup_threads) threads, $t0 before"
check "6: the proxy and the supervisor live on" "$(alive)" alive
check "6: test-model answers" "$(chat test-model)" 200
wait_until 10 test "$(sup_fds)" -le "$fds0" && ok "the supervisor holds $fds0 fds as at the start" ||
	fail "the supervisor holds $(sup_fds) fds, $fds0 at the start: $(ls -l "/proc/$SUP/fd")"

kill -TERM "$CU_PID"
if wait_until 60 bash -c "! kill -0 $CU_PID 2>/dev/null"; then
	wait "$CU_PID"
	check "SIGTERM: custos up ends with exit 0" "$?" 0
else
	fail "custos up still runs 60 s after SIGTERM: killed"
	kill -KILL "$CU_PID"
fi
check "no sanitizer report" "$(grep -cE 'AddressSanitizer|LeakSanitizer|runtime error' "$work/custos.log")" 0
"$bin" audit verify "$work/audit" >"$work/verify.out" 2>&1
check "the trail verifies ($(tail -1 "$work/verify.out"))" "$?" 0
[ "$fails" -eq 0 ] || exit 1
echo "all hostile proxy checks passed"
