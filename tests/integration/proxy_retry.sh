#!/usr/bin/env bash
# Upstream retries through the real binary with curl, against an upstream fixture that fails on
# purpose (retry_upstream.py): custos retries once, and only when that is safe:
#  - the first connection fails before any request byte was sent (a TLS upstream that drops the
#    handshake): retried on a new connection, any method, the client gets 200;
#  - a reused keep-alive connection dies before answering an idempotent GET: retried, 200;
#  - the same for a POST (its bytes were sent): not retried, 502, audited;
#  - a POST partially sent on a fresh connection (the upstream resets it after 1000 body bytes):
#    not retried, 502, audited (custos used to count a write call that failed after some bytes
#    went out as "nothing sent", and retried such a POST at random);
#  - an upstream that answers early (413) before reading a large body: the answer is forwarded and
#    the half-written connection is closed, never pooled (it would desynchronise the next request).
. "$(dirname "$0")/proxy_lib.bash"
command -v python3 >/dev/null || skip "python3 not installed"

make_pki
# upstream NAME PLAN...: starts the fixture; sets UP_PORT.
upstream() {
	local name=$1
	shift
	python3 "$src/tests/integration/retry_upstream.py" "$work/$name.port" "$work/$name.req" "$@" \
		>"$work/$name.out" 2>&1 &
	pids+=($!)
	wait_until 60 test -s "$work/$name.port"
	UP_PORT=$(cat "$work/$name.port" 2>/dev/null)
	[ -n "$UP_PORT" ] || { cat "$work/$name.out"; skip "retry_upstream.py did not start"; }
}
upstream tls --tls "$work/tls/srv.crt" "$work/tls/srv.key" tls-abort
tls_port=$UP_PORT
upstream ka serve,close
ka_port=$UP_PORT
upstream post serve,close
post_port=$UP_PORT
upstream big rst-partial
big_port=$UP_PORT
upstream early early-413
early_port=$UP_PORT

cat >"$work/policy.yaml" <<POL
version: 1
principals:
  alice: { match: { api_key_sha256: "$(sha256hex $ALICE)" } }
models:
  tls-model: { isolation: none }
  ka-model: { isolation: none }
  post-model: { isolation: none }
  big-model: { isolation: none }
  early-model: { isolation: none }
rules:
  - id: alice-anything
    effect: allow
    when: { direction: ingress, principal: alice }
POL
chmod 644 "$work/policy.yaml"
cat >"$work/custos.yaml" <<CFG
version: 1
workers: 1
limits:
  body_max: 8MiB
  timeouts: { upstream_connect: 2s, upstream_read: 10s }
listeners:
  - id: plain
    address: "127.0.0.1:$(free_port)"
auth:
  api_keys: [{ id: alice, sha256: "$(sha256hex $ALICE)" }]
models:
  - id: tls-model
    upstream: { url: "https://127.0.0.1:$tls_port/", ca_file: $work/tls/ca.crt, server_name: localhost }
  - id: ka-model
    upstream: { url: "http://127.0.0.1:$ka_port/" }
  - id: post-model
    upstream: { url: "http://127.0.0.1:$post_port/" }
  - id: big-model
    upstream: { url: "http://127.0.0.1:$big_port/" }
  - id: early-model
    upstream: { url: "http://127.0.0.1:$early_port/" }
routes:
  - { path: /tls, model: tls-model }
  - { path: /ka, model: ka-model }
  - { path: /post, model: post-model }
  - { path: /big, model: big-model }
  - { path: /early, model: early-model }
audit:
  dir: $work/audit
admin:
  socket: $work/admin.sock
policy:
  file: $work/policy.yaml
CFG
start_custos "$work/custos.yaml"
base="http://127.0.0.1:$PORT"
A=(-sS --max-time 20 -H "Authorization: Bearer $ALICE")
rid() { sed -n 's/^[Xx]-[Rr]equest-[Ii]d: *\([0-9a-f]*\).*/\1/p' "$1" | tr -d '\r'; }
has() { grep -c -- "$2" "$work/$1.req" 2>/dev/null || true; }

# ---- 1. nothing sent: the TLS upstream drops the first handshake -> retried, 200 (a POST too)
code=$(curl "${A[@]}" -o "$work/1.out" -w '%{http_code}' -d '{"model":"x","input":"hi"}' "$base/tls/echo")
check "TLS handshake dropped, nothing sent: POST retried" "$code" 200
grep -q '"conn":2' "$work/1.out" && ok "... answered on the second connection" || fail "answer: $(cat "$work/1.out")"
check "... the first attempt died in the handshake" "$(has tls 'req 1 1 - - 0 tls-abort')" 1
check "... the upstream saw the request once" "$(has tls 'POST /tls/echo')" 1

# ---- 2. a reused connection dies before answering a GET -> retried on a new one, 200
codes=$(curl "${A[@]}" -o /dev/null -o "$work/2.out" -w '%{http_code} ' "$base/ka/a" "$base/ka/b")
check "GET, GET on one client connection" "$codes" "200 200 "
check "... the second GET reused the pooled upstream connection" "$(has ka 'req 1 2 GET /ka/b 0 close')" 1
check "... and was retried on a new connection" "$(has ka 'req 2 1 GET /ka/b 0 serve')" 1
grep -q '"conn":2' "$work/2.out" && ok "... which answered" || fail "answer: $(cat "$work/2.out")"

# ---- 3. the same for a POST: its bytes were sent, the upstream may have acted -> 502
printf '{"model":"x","messages":[{"role":"user","content":"charge me once"}]}' >"$work/post.json"
codes=$(curl "${A[@]}" -o /dev/null -w '%{http_code} ' "$base/post/a" \
	--next "${A[@]}" -D "$work/3.hdr" -o "$work/3.out" -w '%{http_code}' --data-binary @"$work/post.json" "$base/post/b")
check "GET, then POST on the reused connection that dies" "$codes" "200 502"
id3=$(rid "$work/3.hdr")
check "... the POST reached the upstream once" "$(has post 'POST /post/b')" 1
check "... and no second connection was made" "$(has post 'conn 2')" 0

# ---- 4. a POST partially sent on a fresh connection (RST after 1000 body bytes) -> 502
# (7 MiB: more than the kernel's send and receive buffers hold, so custos is still writing)
head -c 7340032 /dev/zero | tr '\0' 'a' >"$work/big.body"
code=$(curl "${A[@]}" -D "$work/4.hdr" -o "$work/4.out" -w '%{http_code}' -H 'Content-Type: text/plain' \
	--data-binary @"$work/big.body" "$base/big/upload")
check "POST of 7 MiB reset after 1000 bytes: not retried" "$code" 502
id4=$(rid "$work/4.hdr")
check "... the upstream read 1000 bytes of it, then reset" "$(has big 'req 1 1 POST /big/upload 1000 rst-partial')" 1
check "... one connection only" "$(has big 'conn 2')" 0

# ---- 5. an early answer while the body is still being sent: forwarded; connection not pooled
head -c 7340032 /dev/zero | tr '\0' 'b' >"$work/early.body"
code=$(curl "${A[@]}" -o /dev/null -w '%{http_code}' --data-binary @"$work/early.body" "$base/early/up")
check "upstream answers 413 before reading a 7 MiB body" "$code" 413
for i in $(seq 600); do
	[ "$(has early '^drain')" -gt 0 ] && break
	sleep 0.1
done
drained=$(sed -n 's/^drain 1 \([0-9]*\) \(eof\|open\)$/\1 \2/p' "$work/early.req")
check "... custos closed the half-written connection (not pooled)" "${drained#* }" eof
[ "${drained% *}" -lt 7340032 ] && ok "... which had carried only part of the body (${drained% *} bytes)" ||
	fail "body was sent whole (${drained% *} bytes): nothing shown"
check "the next request gets a new connection" "$(curl "${A[@]}" -o /dev/null -w '%{http_code}' "$base/early/next")" 200
check "... connection 2 served it" "$(has early 'req 2 1 GET /early/next 0 serve')" 1

kill -TERM "$CU_PID"
wait "$CU_PID"
for v in "3:$id3" "4:$id4"; do
	line=$(audit_grep "\"request_id\":\"${v#*:}\"")
	grep -q '"status":502' <<<"$line" && ok "502 of case ${v%%:*} audited" || fail "case ${v%%:*} audit: $line"
done
check "first attempts that failed (cases 1 to 4)" "$(grep -c 'attempt 1)' "$work/custos.log")" 4
check "retries that failed (none)" "$(grep -c 'attempt 2)' "$work/custos.log")" 0
[ "$fails" -eq 0 ]
