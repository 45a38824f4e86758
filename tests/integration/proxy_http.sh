#!/usr/bin/env bash
# Ingress proxy through the real binary with curl and raw sockets: allowed, 401, 403, 413, 400
# paths, the request-smuggling corpus (each rejected with its status and audited), keep-alive,
# pipelining (answers in order), 100-continue, 408 for an incomplete head, SSE streaming, upstream down -> 502, slow
# upstream -> 504, X-Request-Id on every answer and in the audit trail, graceful shutdown.
. "$(dirname "$0")/proxy_lib.bash"

make_pki
start_fixture slow --tokens 6 --delay-ms 300
slow_port=$FX_PORT
down_port=$(free_port)
start_fixture model --tokens 8
EXTRA_MODELS="  - id: down-model
    upstream: { url: \"http://127.0.0.1:$down_port/\" }
  - id: slow-model
    upstream: { url: \"http://127.0.0.1:$slow_port/\", timeouts: { read: 1s } }"
write_policy "$work/policy.yaml"
HEADER_TIMEOUT=2s write_config "$work/custos.yaml" "$FX_PORT"
start_custos "$work/custos.yaml"
base="https://localhost:$PORT"
plain="http://127.0.0.1:$PORT2"
C=(curl -sS --cacert "$work/tls/ca.crt" --max-time 20)
chat='{"model":"test-model","messages":[{"role":"user","content":"hello proxy"}]}'

# status ARGS...: prints the HTTP status of one curl request.
status() { "${C[@]}" -o "$work/last.out" -D "$work/last.hdr" -w '%{http_code}' "$@"; }
rid() { sed -n 's/^[Xx]-[Rr]equest-[Ii]d: *\([0-9a-f]*\).*/\1/p' "$work/last.hdr" | tr -d '\r'; }

# -- allowed, with a request id that is also in the audit trail
check "allowed chat over TLS" "$(status -H "Authorization: Bearer $ALICE" -d "$chat" "$base/v1/chat/completions")" 200
id=$(rid)
[ ${#id} -eq 32 ] && ok "X-Request-Id returned ($id)" || fail "no X-Request-Id"
grep -q '"content":"hello proxy"' "$work/last.out" && ok "echoed body" || fail "body not echoed"
check "plain listener on loopback" "$(status -H "Authorization: Bearer $ALICE" -d "$chat" "$plain/v1/chat/completions")" 200

# -- rejections
check "no credentials -> 401" "$(status -d "$chat" "$base/v1/chat/completions")" 401
grep -qi '^WWW-Authenticate: Bearer' "$work/last.hdr" && ok "401 carries WWW-Authenticate" || fail "no WWW-Authenticate"
id401=$(rid)
check "unknown API key -> 401" "$(status -H 'Authorization: Bearer sk-nobody' -d "$chat" "$base/v1/chat/completions")" 401
check "Basic scheme -> 401" "$(status -u a:b -d "$chat" "$base/v1/chat/completions")" 401
check "known principal without a rule -> 403" "$(status -H "Authorization: Bearer $BOB" -d "$chat" "$base/v1/chat/completions")" 403
id403=$(rid)
big=$(head -c 70000 /dev/zero | tr '\0' 'a')
check "body over policy max_body (64 KiB) -> 413" "$(status -H "Authorization: Bearer $ALICE" -d "{\"model\":\"test-model\",\"messages\":[{\"role\":\"user\",\"content\":\"$big\"}]}" "$base/v1/chat/completions")" 413
head -c 1100000 /dev/zero >"$work/huge"
check "body over body_max (1 MiB) -> 413" "$(status -H "Authorization: Bearer $ALICE" --data-binary @"$work/huge" "$base/v1/chat/completions")" 413
check "malformed JSON -> 400" "$(status -H "Authorization: Bearer $ALICE" -d '{"model":' "$base/v1/chat/completions")" 400
check "max_tokens above the policy limit -> 403" "$(status -H "Authorization: Bearer $ALICE" -d '{"model":"test-model","max_tokens":5000,"messages":[]}' "$base/v1/chat/completions")" 403
check "unknown model -> 404" "$(status -H "Authorization: Bearer $ALICE" -d '{"model":"nope","messages":[]}' "$base/v1/chat/completions")" 404

# -- 100-continue
check "Expect: 100-continue" "$(status -H 'Expect: 100-continue' -H "Authorization: Bearer $ALICE" -d "$chat" "$base/v1/chat/completions")" 200

# -- keep-alive: two requests, one connection
n=$("${C[@]}" -o /dev/null -o /dev/null -w '%{num_connects}\n' -H "Authorization: Bearer $ALICE" "$base/v1/models" "$base/v1/models" | awk '{s += $1} END {print s}')
check "keep-alive: connections for two requests" "$n" 1

# -- pipelining: three requests in one write, answered in order
{
	printf 'GET /v1/models HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n\r\n' "$ALICE"
	printf 'POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s' "$BOB" ${#chat} "$chat"
	printf 'POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' "$ALICE" ${#chat} "$chat"
} >"$work/pipe.http"
got=$(raw_http "$PORT2" "$work/pipe.http" | grep -ao 'HTTP/1.1 [0-9][0-9][0-9]' | cut -d' ' -f2 | paste -sd' ')
check "pipelined answers in order" "$got" "200 403 200"

# -- SSE streaming
"${C[@]}" -N -o "$work/sse.out" -H "Authorization: Bearer $ALICE" \
	-d '{"model":"test-model","stream":true,"messages":[{"role":"user","content":"one two three"}]}' \
	"$base/v1/chat/completions"
check "SSE events forwarded" "$(grep -c '^data: ' "$work/sse.out")" 9
grep -q '^data: \[DONE\]' "$work/sse.out" && ok "stream ends with [DONE]" || fail "no [DONE]"

# -- a head that never completes (slowloris): 408 after client_header (2 s here), audited
got=$(
	exec 3<>"/dev/tcp/127.0.0.1/$PORT2"
	printf 'GET /v1/models HTTP/1.1\r\nHost: t\r\n' >&3
	timeout 10 cat <&3 | head -1 | cut -d' ' -f2
)
check "incomplete head -> 408" "$got" 408
# Trickling a header line every 0.5 s does not extend the 2 s head deadline.
got=$(
	exec 3<>"/dev/tcp/127.0.0.1/$PORT2"
	{
		printf 'GET /v1/models HTTP/1.1\r\nHost: t\r\n'
		for i in $(seq 30); do
			sleep 0.5
			printf 'X-Slow-%d: y\r\n' "$i"
		done
	} >&3 2>/dev/null &
	# 12 s to answer (2 s due, the rest slack for a loaded machine) while the trickle would go
	# on for 15 s
	timeout 12 cat <&3 | head -1 | cut -d' ' -f2
)
check "trickled head -> 408 at the head deadline" "$got" 408

# -- upstream failures
check "upstream down -> 502" "$(status -H "Authorization: Bearer $ALICE" -d '{"model":"down-model","messages":[]}' "$base/v1/chat/completions")" 502
check "slow upstream -> 504" "$(status -H "Authorization: Bearer $ALICE" -d '{"model":"slow-model","messages":[{"role":"user","content":"x"}]}' "$base/v1/chat/completions")" 504

# -- request smuggling corpus: each vector answered with its status (file name) and audited.
# Vectors named *.ok.http are valid requests the codec must accept: sent without credentials
# they reach authentication (401), or the ingress rule that only origin-form targets are
# proxied (400 naming it).
auth_line="Authorization: Bearer $ALICE"
total=0 good=0 nok=0
for f in "$src"/tests/fixtures/smuggling/*.http; do
	name=$(basename "$f" .http)
	want=${name##*.}
	if [ "$want" = ok ]; then
		nok=$((nok + 1))
		ans=$(raw_http "$PORT2" "$f")
		got=$(head -1 <<<"$ans" | cut -d' ' -f2)
		if [ "$got" = 401 ] || { [ "$got" = 400 ] && grep -q 'origin-form' <<<"$ans"; }; then
			continue
		fi
		fail "valid vector $name: got '${got:-no answer}' ($(tail -1 <<<"$ans"))"
		continue
	fi
	total=$((total + 1))
	# Credentials after the request line, so body-framing vectors reach the body decoder.
	perl -0777 -pe "s/\r\n/\r\n$auth_line\r\n/" "$f" >"$work/vec.http"
	got=$(raw_http "$PORT2" "$work/vec.http" | head -1 | cut -d' ' -f2)
	if [ "$got" = "$want" ]; then
		good=$((good + 1))
	else
		fail "smuggling vector $name: got '${got:-no answer}', want $want"
	fi
done
[ "$good" -eq "$total" ] && ok "smuggling corpus: $good/$total vectors rejected as expected ($nok valid ones passed the codec)"

# -- graceful shutdown: a stream in flight completes, new connections are refused
"${C[@]}" -N -o "$work/drain.out" -H "Authorization: Bearer $ALICE" \
	-d '{"model":"slow-model","stream":true,"messages":[{"role":"user","content":"drain me"}]}' \
	"$base/v1/chat/completions" &
bg=$!
# SIGTERM once the stream is in flight (its first event is out), not after a fixed time
wait_until 60 grep -q '^data: ' "$work/drain.out" || fail "the stream to drain did not begin"
kill -TERM "$CU_PID"
# Each worker closes its listener when it wakes up to drain: wait until none accepts (one still
# accepted is served, which is harmless), then custos must still be running (draining), not
# refusing because it is gone.
refused() { ! curl -sS --max-time 5 -o /dev/null "$plain/v1/models" 2>/dev/null; }
running() { [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status"; }
if wait_until 60 refused && running "$CU_PID"; then
	ok "new connections refused while draining"
else
	fail "new connections accepted after SIGTERM until custos was gone"
fi
wait "$bg"
check "in-flight stream finished during drain" "$(grep -c '^data: \[DONE\]' "$work/drain.out")" 1
wait "$CU_PID"
check "custos exit status after SIGTERM" "$?" 0

# -- the audit trail (written by the audit writer; sealed at shutdown)
if ls "$work"/audit/*.jsonl >/dev/null 2>&1; then
	[ -n "$(audit_grep "\"request_id\":\"$id\".*\"status\":200")" ] && ok "allowed request audited" || fail "allowed request $id not in the audit trail"
	[ -n "$(audit_grep "\"request_id\":\"$id401\".*\"status\":401")" ] && ok "401 audited" || fail "401 not audited"
	[ -n "$(audit_grep "\"request_id\":\"$id403\".*\"status\":403")" ] && ok "403 audited" || fail "403 not audited"
	check "502 audited" "$(audit_grep '"status":502' | wc -l | tr -d ' ')" 1
	check "408 audited" "$(audit_grep '"status":408' | wc -l | tr -d ' ')" 2
	check "smuggling vectors audited" "$(audit_grep '"status":(400|413|414|417|431|501|505)' | wc -l | tr -d ' ' | awk -v t="$total" '{print ($1 >= t) ? "all" : $1 " of " t}')" all
	if "$bin" audit verify "$work/audit" >"$work/verify.out" 2>&1; then ok "audit verify"; else fail "audit verify: $(cat "$work/verify.out")"; fi
else
	fail "no audit trail written"
fi
[ "$fails" -eq 0 ]
