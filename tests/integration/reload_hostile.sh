#!/usr/bin/env bash
# ctest: serial (bursts of reloads under load, streams timed against reloads and a shutdown)
# Hostile reloads and shutdowns through the real binary (docs/PROXY.md "Reload and shutdown"):
# an SSE stream and a slow large upload in flight across a reload finish under the state they
# started with, each with exactly one audit event; a burst of SIGHUPs under load loses no
# request and audits every reload once; a certificate whose key no longer matches, a policy or
# custos.yaml with a syntax error (named at file:line:col), an unreadable file and half-written
# files (truncated, cut short) and FIFOs in a file's place are refused with the old state kept;
# a SIGTERM right after a SIGHUP and SIGHUPs during the drain: the stream in flight completes,
# custos exits 0 and the trail verifies; SIGHUPs sent without pause do not hold a SIGTERM off, nor end custos by their
# signal once it stopped; a stream longer than the shutdown timeout is cut at it and audited.
. "$(dirname "$0")/proxy_lib.bash"

make_pki
# A slow streaming model (40 events, 150 ms apart: 6 s) beside a fast one.
start_fixture slow --tokens 40 --delay-ms 150
SLOW_PORT=$FX_PORT
start_fixture model --tokens 4
TOKENS_PER_HOUR=100000000 write_policy "$work/policy.yaml"
sed -i 's/max_body: 64KiB/max_body: 2MiB/; s/requests_per_minute: 6000/requests_per_minute: 1000000/' "$work/policy.yaml"
EXTRA_MODELS="  - id: slow-model
    upstream:
      url: \"http://127.0.0.1:$SLOW_PORT/\"" SHUTDOWN=30s write_config "$work/custos.yaml" "$FX_PORT"
start_custos "$work/custos.yaml"
cp "$work/policy.yaml" "$work/policy.good"
cp "$work/custos.yaml" "$work/custos.good"

url="https://localhost:$PORT/v1/chat/completions"
C=(curl -sS --cacert "$work/tls/ca.crt" --max-time 60)
chat='{"model":"test-model","messages":[{"role":"user","content":"hi"}]}'
code() { "${C[@]}" -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $1" -d "$chat" "$url"; }
ctl() { "$bin" ctl --socket "$work/admin.sock" "$@"; }
hash_now() { ctl policy show | sed -n 's/.*"hash":"\([0-9a-f]*\)".*/\1/p' | head -1; }
applied() { grep -c 'proxy: reloaded (generation' "$work/custos.log"; }
refused() { grep -c 'proxy: reload failed' "$work/custos.log"; }
last_refusal() { grep 'proxy: reload failed' "$work/custos.log" | tail -1; }
serial() {
	timeout 10 openssl s_client -connect "127.0.0.1:$PORT" -servername localhost </dev/null 2>/dev/null |
		openssl x509 -noout -serial 2>/dev/null
}
# events_of ID: the audit events of request ID.
events_of() { audit_grep "\"request_id\":\"$1\""; }
req_id() { tr -d '\r' <"$1" | sed -n 's/^[Xx]-[Rr]equest-[Ii]d: //p' | head -1; }
restore() {
	cp "$work/policy.good" "$work/policy.yaml"
	cp "$work/custos.good" "$work/custos.yaml"
	chmod 600 "$work/custos.yaml"
	chmod 644 "$work/policy.yaml"
}

check "alice before" "$(code "$ALICE")" 200
hash0=$(hash_now)
[ -n "$hash0" ] && ok "policy hash in force ($hash0)" || fail "no policy hash from ctl policy show"

# ---- 1. An SSE stream across a reload that takes alice's access away: the stream finishes
# under the old policy (200, every event, [DONE]) and has one audit event, with the old policy's
# hash; a new request of alice's is refused by the new policy.
sse='{"model":"slow-model","stream":true,"messages":[{"role":"user","content":"hi"}]}'
"${C[@]}" -N -D "$work/sse.h" -H "Authorization: Bearer $ALICE" -d "$sse" "$url" \
	>"$work/sse.out" 2>"$work/sse.err" &
sse_pid=$!
stream_started() { grep -q '^data: {' "$work/sse.out" 2>/dev/null; }
wait_until 60 stream_started || fail "the stream did not start: $(cat "$work/sse.err")"
sed -i 's/principal: \[alice, analytics, sso\]/principal: [analytics, sso]/' "$work/policy.yaml"
kill -HUP "$CU_PID"
wait_log 'proxy: reloaded (generation' 1
kill -0 "$sse_pid" 2>/dev/null && ok "the reload was applied while the stream ran" ||
	fail "the stream ended before the reload was applied: the test proves nothing"
check "alice after the reload (new policy)" "$(code "$ALICE")" 403
wait "$sse_pid"
check "stream: curl exit" "$?" 0
check "stream: status" "$(tr -d '\r' <"$work/sse.h" | sed -n 's/^HTTP\/[0-9.]* \([0-9]*\).*/\1/p' | tail -1)" 200
tail -2 "$work/sse.out" | grep -q '^data: \[DONE\]' &&
	ok "stream: ends with [DONE]" || fail "stream: $(tail -3 "$work/sse.out")"
check "stream: all 40 events" "$(grep -c '"chat.completion.chunk"' "$work/sse.out")" 40
sid=$(req_id "$work/sse.h")
one_event() { [ "$(events_of "$1" | wc -l)" -ge 1 ]; }
wait_until 30 one_event "$sid" || fail "stream $sid: no audit event"
sleep 1 # a second event would come now
check "stream: one audit event" "$(events_of "$sid" | wc -l)" 1
events_of "$sid" | grep -q "\"status\":200.*\"policy_hash\":\"$hash0\"\|\"policy_hash\":\"$hash0\".*\"status\":200" &&
	ok "stream: audited as 200 under the old policy's hash" || fail "stream event: $(events_of "$sid")"
restore
kill -HUP "$CU_PID"
wait_log 'proxy: reloaded (generation' 2
check "alice again" "$(code "$ALICE")" 200

# ---- 2. A slow large upload across a reload that lowers limits.body_max below its size: it
# was accepted under the old limit and finishes (200, one audit event); an upload over the new
# limit after the reload is refused (413).
big=$(head -c 600000 /dev/zero | tr '\0' a)
printf '{"model":"test-model","messages":[{"role":"user","content":"%s"}]}' "$big" >"$work/big.json"
"${C[@]}" -o /dev/null -w '%{http_code}' --limit-rate 100k -D "$work/up.h" \
	-H "Authorization: Bearer $ALICE" -H 'Content-Type: application/json' \
	--data-binary @"$work/big.json" "$url" >"$work/up.code" 2>"$work/up.err" &
up_pid=$!
sleep 1
sed -i 's/body_max: 1MiB/body_max: 100KiB/' "$work/custos.yaml"
kill -HUP "$CU_PID"
wait_log 'proxy: reloaded (generation' 3
kill -0 "$up_pid" 2>/dev/null && ok "the reload was applied while the upload ran" ||
	fail "the upload ended before the reload was applied: the test proves nothing"
wait "$up_pid"
check "upload across the reload: status" "$(cat "$work/up.code")" 200
uid=$(req_id "$work/up.h")
wait_until 30 one_event "$uid" || fail "upload $uid: no audit event"
sleep 1
check "upload: one audit event" "$(events_of "$uid" | wc -l)" 1
# 120 kB (over the new 100 KiB): small enough for the socket buffers to take it whole, so that
# the early 413 is read, not lost to a reset while curl still sends.
printf '{"model":"test-model","messages":[{"role":"user","content":"%s"}]}' "${big:0:120000}" >"$work/big2.json"
check "an upload over the new limit after the reload" \
	"$("${C[@]}" -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $ALICE" --data-binary @"$work/big2.json" "$url")" 413
restore
kill -HUP "$CU_PID"
wait_log 'proxy: reloaded (generation' 4

# ---- 3. Ten SIGHUPs in a row under load: no request fails, custos lives, and every reload
# (signals may merge) is logged once and audited once.
: >"$work/load.codes"
load() {
	local end=$((SECONDS + $1))
	while [ "$SECONDS" -lt "$end" ]; do
		# One write per line (O_APPEND): the two loops' lines never interleave.
		printf '%s\n' "$(code "$ALICE")" >>"$work/load.codes"
	done
}
load 8 &
l1=$!
load 8 &
l2=$!
sleep 2
for i in 1 2 3 4 5 6 7 8 9 10; do
	printf '# burst %s\n' "$i" >>"$work/policy.yaml"
	kill -HUP "$CU_PID"
done
wait "$l1" "$l2"
kill -0 "$CU_PID" 2>/dev/null && ok "custos survives the burst" || fail "custos died in the burst"
settled() {
	local a=$(($(applied) + $(refused)))
	sleep 1
	[ "$a" -eq "$(($(applied) + $(refused)))" ]
}
wait_until 60 settled
n=$(grep -c . "$work/load.codes")
bad=$(grep -vc '^200$' "$work/load.codes")
[ "$n" -gt 10 ] && ok "load: $n requests" || fail "load: only $n requests"
check "load: answers other than 200" "$bad" 0
check "burst: no reload refused" "$(refused)" 0
[ "$(applied)" -ge 5 ] && ok "burst: $(applied) reloads applied in all" || fail "burst: only $(applied) applied"
all_audited() { [ "$(audit_grep '"type":"policy.reload"' | wc -l)" -eq $(($(applied) + $(refused))) ]; }
wait_until 30 all_audited
check "every reload audited once" "$(audit_grep '"type":"policy.reload"' | wc -l)" $(($(applied) + $(refused)))
check "the policy in force is the last audited reload's" "$(hash_now)" \
	"$(audit_grep '"type":"policy.reload"' | tail -1 | sed -n 's/.*"policy_hash":"\([0-9a-f]*\)".*/\1/p')"
restore

# refuse NAME WHY: SIGHUP with the files as they are; the reload must be refused, the last
# refusal's log line must contain WHY (grep -E), the old state serve on (alice 200, the
# certificate in force, the policy hash), and the refusal be audited with its reason.
refuse() {
	local name=$1 why=$2 n h s
	n=$(refused)
	h=$(hash_now)
	s=$(serial)
	kill -HUP "$CU_PID"
	wait_log 'proxy: reload failed' $((n + 1))
	last_refusal | grep -Eq -- "$why" && ok "$name: refused, naming $why" || fail "$name: $(last_refusal)"
	check "$name: alice still served" "$(code "$ALICE")" 200
	check "$name: the policy in force stays" "$(hash_now)" "$h"
	check "$name: the certificate in force stays" "$(serial)" "$s"
	refusal_audited() { audit_grep '"type":"policy.reload"' | tail -1 | grep '"outcome":"refused"' | grep -Eq -- "$why"; }
	wait_until 30 refusal_audited && ok "$name: the refusal is audited with its reason" ||
		fail "$name: audit: $(audit_grep '"type":"policy.reload"' | tail -1)"
	restore
}

# ---- 4. Certificates: a new certificate whose key is not the one in place is refused; the
# pair together is applied.
(
	cd "$work/tls" || exit 1
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
		-keyout new.key -out new.csr &&
		openssl x509 -req -in new.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
			-extfile srv.ext -out new.crt && chmod 600 new.key
) >/dev/null 2>&1 || fail "openssl: new certificate"
cp "$work/tls/srv.crt" "$work/tls/srv.crt.good"
cp "$work/tls/new.crt" "$work/tls/srv.crt"
refuse "certificate whose key does not match" "srv\.(crt|key)"
cp "$work/tls/srv.crt.good" "$work/tls/srv.crt"
# Half-written certificate (cut mid-PEM).
head -c 200 "$work/tls/srv.crt.good" >"$work/tls/srv.crt"
refuse "certificate cut short" "srv\.crt"
cp "$work/tls/srv.crt.good" "$work/tls/srv.crt"

# ---- 5. Syntax errors, named at file:line:col.
printf 'version: 1\nrules:\n  - id: x\n    effect: [\n' >"$work/policy.yaml"
refuse "policy with a syntax error" "policy\.yaml:[0-9]+:[0-9]+"
sed -i 's/^workers: 2$/workers: [2/' "$work/custos.yaml"
refuse "custos.yaml with a syntax error" "custos\.yaml:[0-9]+:[0-9]+"

# ---- 6. Files truncated or half-written (truncate, then write: a reload between the two).
: >"$work/policy.yaml"
refuse "empty policy file" "policy\.yaml"
head -c "$(($(wc -c <"$work/policy.good") / 2))" "$work/policy.good" >"$work/policy.yaml"
refuse "policy cut in half" "policy\.yaml"
: >"$work/custos.yaml"
refuse "empty custos.yaml" "custos\.yaml"
# custos.yaml cut before its policy: section (the last): still well-formed YAML.
sed '/^policy:/,$d' "$work/custos.good" >"$work/custos.yaml"
refuse "custos.yaml cut before policy:" "policy"

# ---- 7. Unreadable files (the proxy holds no capability, root or not).
chmod 000 "$work/policy.yaml"
refuse "unreadable policy" "policy\.yaml"
chmod 000 "$work/custos.yaml"
refuse "unreadable custos.yaml" "custos\.yaml"
chmod 000 "$work/tls/srv.key"
refuse "unreadable key" "srv\.key"
chmod 600 "$work/tls/srv.key"

# ---- 7b. A FIFO in a file's place: the reload must not wait for a writer (it would hold the
# loop that takes SIGTERM, for ever); refused as not a regular file.
fifo_refused() {
	local name=$1 file=$2 n
	n=$(refused)
	mv "$file" "$file.real"
	mkfifo -m 600 "$file"
	kill -HUP "$CU_PID"
	if wait_until 20 log_lines_reach 'proxy: reload failed' $((n + 1)); then
		last_refusal | grep -q "$file: not a regular file" && ok "$name as a FIFO: refused, not waited on" ||
			fail "$name as a FIFO: $(last_refusal)"
	else
		fail "$name as a FIFO: no refusal in 20 s (the reload waits for a writer)"
		timeout 5 sh -c ": >'$file'" # a writer, so that custos can go on
	fi
	rm -f "$file"
	mv "$file.real" "$file"
	check "$name as a FIFO: alice still served" "$(code "$ALICE")" 200
}
fifo_refused "certificate" "$work/tls/srv.crt"
fifo_refused "key" "$work/tls/srv.key"
fifo_refused "policy" "$work/policy.yaml"
fifo_refused "custos.yaml" "$work/custos.yaml"

# ---- 8. SIGTERM right after a SIGHUP, then SIGHUPs during the drain: the stream in flight
# completes, custos exits 0, the stream has one audit event, every reload one policy.reload,
# and the trail verifies.
"${C[@]}" -N -D "$work/sse2.h" -H "Authorization: Bearer $ALICE" -d "$sse" "$url" \
	>"$work/sse.out" 2>"$work/sse.err" &
sse_pid=$!
wait_until 60 stream_started || fail "the second stream did not start: $(cat "$work/sse.err")"
printf '# last\n' >>"$work/policy.yaml"
kill -HUP "$CU_PID"
kill -TERM "$CU_PID"
draining() { grep -q 'proxy: SIGTERM: draining' "$work/custos.log"; }
wait_until 30 draining || fail "no drain logged"
for i in 1 2 3; do
	kill -HUP "$CU_PID" 2>/dev/null
	sleep 0.2
done
wait "$sse_pid"
check "stream across SIGTERM: curl exit" "$?" 0
tail -2 "$work/sse.out" | grep -q '^data: \[DONE\]' && ok "stream across SIGTERM: ends with [DONE]" ||
	fail "stream across SIGTERM: $(tail -3 "$work/sse.out")"
wait "$CU_PID"
check "custos exit status after SIGHUPs during the drain" "$?" 0
sid=$(req_id "$work/sse2.h")
check "stream across SIGTERM: one audit event" "$(events_of "$sid" | wc -l)" 1
check "every reload audited once (at the end)" "$(audit_grep '"type":"policy.reload"' | wc -l)" $(($(applied) + $(refused)))
"$bin" audit verify "$work/audit" >"$work/verify.out" 2>&1 && ok "the trail verifies" ||
	fail "audit verify: $(cat "$work/verify.out")"
grep -E 'Sanitizer|runtime error' "$work/custos.log" && fail "sanitizer report in the log" || ok "no sanitizer report"
mv "$work/custos.log" "$work/custos.log.1"

# ---- 9. SIGHUPs sent without pause, a SIGTERM among them: the shutdown is not held off by
# the reloads (sigtimedwait hands SIGHUP out before SIGTERM), and custos exits 0 although
# SIGHUPs keep coming until it has exited (none may end it by that signal).
start_custos "$work/custos.yaml"
(
	while kill -HUP "$CU_PID" 2>/dev/null; do :; done
) &
storm=$!
pids+=("$storm")
wait_log 'proxy: reloaded (generation' 3
kill -TERM "$CU_PID"
wait "$CU_PID"
check "custos exit status after a SIGTERM among SIGHUPs" "$?" 0
wait "$storm"
after=$(sed -n '/up: SIGTERM: stopping/,$p' "$work/custos.log" | grep -c 'proxy: reloaded (generation')
# One reload may be under way when the SIGTERM comes, and its line land after the supervisor's.
[ "$after" -le 1 ] && ok "reloads once the SIGTERM was forwarded: $after" ||
	fail "reloads once the SIGTERM was forwarded: $after (the SIGHUPs held the shutdown off)"
"$bin" audit verify "$work/audit" >"$work/verify.out" 2>&1 && ok "the trail verifies after the storm" ||
	fail "audit verify: $(cat "$work/verify.out")"
mv "$work/custos.log" "$work/custos.log.2"

# ---- 10. The drain is bounded: a stream longer than limits.timeouts.shutdown (2 s) is cut at
# the deadline, custos exits 0 in time, and the stream has one audit event saying why.
sed -i 's/shutdown: 30s/shutdown: 2s/' "$work/custos.yaml"
start_custos "$work/custos.yaml"
"${C[@]}" -N -D "$work/sse3.h" -H "Authorization: Bearer $ALICE" -d "$sse" "$url" \
	>"$work/sse.out" 2>"$work/sse.err" &
sse_pid=$!
wait_until 60 stream_started || fail "the third stream did not start: $(cat "$work/sse.err")"
t0=$SECONDS
kill -TERM "$CU_PID"
wait "$CU_PID"
check "custos exit status after a drain cut at its deadline" "$?" 0
[ $((SECONDS - t0)) -le 15 ] && ok "stopped $((SECONDS - t0)) s after SIGTERM" ||
	fail "stopped $((SECONDS - t0)) s after SIGTERM (shutdown: 2s)"
wait "$sse_pid"
sid=$(req_id "$work/sse3.h")
check "stream cut by the shutdown: one audit event" "$(events_of "$sid" | wc -l)" 1
events_of "$sid" | grep -q '"reason":"shutdown deadline passed"' && ok "stream cut by the shutdown: audited as such" ||
	fail "stream cut by the shutdown: $(events_of "$sid")"
grep -E 'Sanitizer|runtime error' "$work"/custos.log* && fail "sanitizer report in a log" || ok "no sanitizer report"
[ "$fails" -eq 0 ]
