#!/usr/bin/env bash
# Admin API through the real binary: curl over the Unix socket and TCP, `custos ctl`, metrics
# accepted by promtool after traffic, authentication failures (uid not allowed, bad token),
# oversized and malformed bodies, ambiguous body framing (two Content-Lengths, one with chunked,
# a coding other than chunked), escaped paths, a refused caller's 60 KB path audited, ctl's
# checks of a sandbox id and a token file, a slow client timed out without blocking others, the
# decision endpoint, policy reload (a broken policy refused with its errors, the old one kept), every
# admin action in the audit trail.
. "$(dirname "$0")/proxy_lib.bash"

command -v setpriv >/dev/null || skip "setpriv not installed"
command -v python3 >/dev/null || skip "python3 not installed"
curl --help all 2>/dev/null | grep -q -- '--unix-socket' || skip "curl without --unix-socket"

admin_tcp_setup '  socket_mode: "0660"' '  max_body: 64KiB'
start_custos "$work/custos.yaml"
wait_until 60 test -S "$work/admin.sock" || fail "no admin socket $work/admin.sock after 60 s"
[ -S "$work/admin.sock" ] || { fail "admin socket not created"; exit 1; }
check "socket mode" "$(stat -c %a "$work/admin.sock")" 660

U=(curl -sS --max-time 20 --unix-socket "$work/admin.sock")
T=(curl -sS --max-time 20)
code() { "$@" -o /dev/null -w '%{http_code}'; }
ctl() { "$bin" ctl --socket "$work/admin.sock" "$@"; }

check "healthz (unix)" "$(code "${U[@]}" http://admin/healthz)" 200
check "readyz (unix)" "$(code "${U[@]}" http://admin/readyz)" 200
check "healthz (tcp, token)" "$(code "${T[@]}" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$APORT/healthz")" 200
check "tcp without token" "$(code "${T[@]}" "http://127.0.0.1:$APORT/healthz")" 401
check "tcp with a wrong token" "$(code "${T[@]}" -H "Authorization: Bearer nope" "http://127.0.0.1:$APORT/healthz")" 401
check "tcp, lower-case scheme (RFC 9110 11.1)" "$(code "${T[@]}" -H "Authorization: bearer $TOKEN" "http://127.0.0.1:$APORT/healthz")" 200
check "tcp, token of the wrong case" "$(code "${T[@]}" -H "Authorization: Bearer ${TOKEN^^}" "http://127.0.0.1:$APORT/healthz")" 401
check "ctl health" "$(ctl health)" '{"status":"ok"}'
check "ctl over tcp" "$("$bin" ctl --url "http://127.0.0.1:$APORT" --token-file "$work/token" ready >/dev/null; echo $?)" 0
# ctl sends the bearer token over plain http only to a loopback address unless told otherwise:
# 0.0.0.0 reaches this host on Linux, but is not loopback by address, so it stands in for a
# remote one (refused before any connection), then is allowed with --insecure-remote.
out=$("$bin" ctl --url "http://0.0.0.0:$APORT" --token-file "$work/token" ready 2>&1); rc=$?
[ $rc = 2 ] && echo "$out" | grep -q 'not a loopback address.*--insecure-remote' && ok "ctl refuses a non-loopback http URL" || fail "ctl non-loopback http: $rc $out"
out=$("$bin" ctl --url "http://[2001:db8::1]:$APORT" --token-file "$work/token" ready 2>&1); rc=$?
[ $rc = 2 ] && echo "$out" | grep -q 'not a loopback address' && ok "ctl refuses a non-loopback IPv6 http URL" || fail "ctl non-loopback v6 http: $rc $out"
check "ctl --insecure-remote over a non-loopback URL" "$("$bin" ctl --url "http://0.0.0.0:$APORT" --token-file "$work/token" --insecure-remote ready >/dev/null; echo $?)" 0

# Traffic through the proxy (plain listener): allowed, denied, unauthenticated.
chat='{"model":"test-model","messages":[{"role":"user","content":"hi"}]}'
P=(curl -sS --max-time 20 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT2/v1/chat/completions" -d "$chat")
check "alice chat" "$("${P[@]}" -H "Authorization: Bearer $ALICE")" 200
check "bob chat" "$("${P[@]}" -H "Authorization: Bearer $BOB")" 403
"${P[@]}" >/dev/null
curl -sS --max-time 20 -o /dev/null --cacert "$work/tls/ca.crt" -H "Authorization: Bearer $ALICE" \
	-d "$chat" "https://localhost:$PORT/v1/chat/completions"

# The fsync figures below come with the writer's acknowledgements: wait until a commit has been
# acknowledged (a slow disk under parallel builds can hold the first one back).
durable() { ctl audit-status | grep -q '"durable_seq":[1-9]'; }
wait_until 60 durable || fail "no audit commit acknowledged"
"${U[@]}" http://admin/metrics >"$work/metrics.txt"
grep -q '^custos_requests_total{decision="allow",route="/v1/chat/completions",model="test-model",principal="alice"} 2$' "$work/metrics.txt" &&
	ok "metrics count alice's requests" || fail "alice's requests missing from metrics"
grep -q '^custos_requests_total{decision="deny",.*principal="bob"} 1$' "$work/metrics.txt" &&
	ok "metrics count bob's denial" || fail "bob's denial missing"
grep -q '^custos_tls_handshakes_total{result="ok"} [1-9]' "$work/metrics.txt" && ok "TLS handshakes counted" || fail "TLS handshakes not counted"
grep -q '^custos_request_duration_seconds_count [1-9]' "$work/metrics.txt" && ok "latency histogram" || fail "latency histogram empty"
grep -q '^custos_audit_queue_depth ' "$work/metrics.txt" && ok "audit queue depth" || fail "no audit gauge"
n=$(sed -n 's/^custos_audit_fsync_seconds_count \([0-9]*\)$/\1/p' "$work/metrics.txt")
[ "${n:-0}" -gt 0 ] && ok "audit fsync latency histogram ($n commits)" || fail "no audit fsync histogram"
inf=$(sed -n 's/^custos_audit_fsync_seconds_bucket{le="+Inf"} \([0-9]*\)$/\1/p' "$work/metrics.txt")
check "fsync histogram +Inf bucket equals its count" "$inf" "$n"
have_promtool=0
if command -v promtool >/dev/null; then
	have_promtool=1
	if promtool check metrics <"$work/metrics.txt" >"$work/promtool.out" 2>&1; then
		ok "promtool check metrics accepts /metrics"
	else
		fail "promtool: $(cat "$work/promtool.out")"
	fi
	ctl metrics | promtool check metrics >/dev/null 2>&1 && ok "promtool accepts ctl metrics" || fail "ctl metrics rejected"
else
	echo "note: promtool not installed (Debian package prometheus): format check skipped"
fi

# Uid allow-list: the socket's group lets uid 65534 connect (file mode passes), SO_PEERCRED
# refuses it; a uid outside the group cannot even connect.
chmod 711 "$work"
chgrp 65534 "$work/admin.sock"
check "uid 65534 refused by SO_PEERCRED" \
	"$(setpriv --reuid=65534 --regid=65534 --clear-groups curl -s --max-time 10 -o /dev/null -w '%{http_code}' --unix-socket "$work/admin.sock" http://admin/healthz)" 403
check "uid 65534 without the group cannot connect" \
	"$(setpriv --reuid=65534 --regid=65533 --clear-groups curl -s --max-time 10 -o /dev/null -w '%{http_code}' --unix-socket "$work/admin.sock" http://admin/healthz)" 000
chmod 700 "$work"

# Method, path, content type, sizes.
J=(-H 'Content-Type: application/json')
check "GET /v1/decide" "$(code "${U[@]}" http://admin/v1/decide)" 405
check "unknown path" "$(code "${U[@]}" http://admin/nope)" 404
check "decide without JSON content type" "$(code "${U[@]}" -H 'Content-Type: text/plain' -d '{}' http://admin/v1/decide)" 415
head -c 100000 /dev/zero | tr '\0' 'a' >"$work/big.json"
check "decide with 100 KB (max_body 64KiB)" "$(code "${U[@]}" "${J[@]}" --data-binary @"$work/big.json" http://admin/v1/decide)" 413
check "chunked body over the limit" "$(code "${U[@]}" "${J[@]}" -H 'Transfer-Encoding: chunked' --data-binary @"$work/big.json" http://admin/v1/decide)" 413
check "malformed JSON" "$(code "${U[@]}" "${J[@]}" -d '{"direction": ' http://admin/v1/decide)" 400
# An empty body is a client error, never a crash (libyaml aborts on a NULL input).
check "decide, Content-Length: 0" "$(code "${U[@]}" "${J[@]}" -d '' http://admin/v1/decide)" 400
check "decide, chunked body of only its last chunk" "$(code "${U[@]}" "${J[@]}" -H 'Transfer-Encoding: chunked' -d '' http://admin/v1/decide)" 400
out=$(printf 'POST /v1/decide HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n' |
	python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(sys.stdin.buffer.read()); sys.stdout.write(s.makefile("rb").read().decode())' "$work/admin.sock")
echo "$out" | grep -q '^HTTP/1.1 400' && echo "$out" | grep -q 'empty request' && ok "decide, raw 0 CRLF CRLF: 400 empty request" || fail "raw empty chunked: $out"
out=$(ctl decide '' 2>&1); rc=$?
[ $rc = 1 ] && echo "$out" | grep -q 'empty request' && ok "ctl decide '': 400 empty request" || fail "ctl decide '': $rc $out"
check "decide, blanks only" "$(code "${U[@]}" "${J[@]}" -d '  ' http://admin/v1/decide)" 400
check "restart, Content-Length: 0" "$(code "${U[@]}" -X POST -H 'Content-Length: 0' http://admin/v1/sandboxes/nope/restart)" 404
check "POST /v1/policy with a body" "$(code "${U[@]}" "${J[@]}" -d '{"x":1}' http://admin/v1/policy)" 413
check "healthz still fine" "$(code "${U[@]}" http://admin/healthz)" 200

# The path as sent: an escape never reaches a route (libmicrohttpd decoded "%70" to "p" and cut
# "/v1/policy%00x" at the NUL).
check "GET /v1/%70olicy" "$(code "${U[@]}" --path-as-is 'http://admin/v1/%70olicy')" 404
check "GET /v1/policy%00x" "$(code "${U[@]}" --path-as-is 'http://admin/v1/policy%00x')" 404
check "GET /v1/policy?x=1 (a query is no part of the path)" "$(code "${U[@]}" 'http://admin/v1/policy?x=1')" 200
# Body framing: one Content-Length or one chunked Transfer-Encoding (RFC 9112 6.1, 6.3). Each
# answer is read to the server's close: no answer at all would be a hang cut by the watchdog.
rawu() { python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(sys.stdin.buffer.read()); sys.stdout.write(s.makefile("rb").read().decode("latin-1"))' "$work/admin.sock"; }
ctx='{"direction":"ingress","principal":"alice","model":"test-model","route":"POST /v1/chat/completions"}'
hd='POST /v1/decide HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n'
out=$(printf "${hd}Content-Length: ${#ctx}\r\nContent-Length: 5\r\n\r\n%s" "$ctx" | rawu)
echo "$out" | grep -q '^HTTP/1.1 400' && ok "two Content-Lengths: 400" || fail "two Content-Lengths: $out"
out=$(printf "${hd}Content-Length: ${#ctx}\r\nContent-Length: ${#ctx}\r\n\r\n%s" "$ctx" | rawu)
echo "$out" | grep -q '^HTTP/1.1 400' && ok "a repeated Content-Length: 400" || fail "repeated Content-Length: $out"
out=$(printf "${hd}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" ${#ctx} "$ctx" | rawu)
echo "$out" | grep -q '^HTTP/1.1 400' && ok "Content-Length with chunked: 400" || fail "Content-Length with chunked: $out"
out=$(printf "${hd}Transfer-Encoding: gzip, chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" ${#ctx} "$ctx" | rawu)
echo "$out" | grep -q '^HTTP/1.1 501' && ok "Transfer-Encoding gzip, chunked: 501" || fail "gzip, chunked: $out"
out=$(printf "${hd}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" ${#ctx} "$ctx" | rawu)
echo "$out" | grep -q '^HTTP/1.1 200' && ok "chunked alone: 200" || fail "chunked alone: $out"
# A refused caller is audited whatever the length of its path and method (cut, with their
# lengths): a 60 KB path made the event too large to record.
long=$(head -c 60000 /dev/zero | tr '\0' A)
check "tcp, 60 KB path, no token" "$(code "${T[@]}" "http://127.0.0.1:$APORT/LONGPATH$long")" 401
# ctl: a sandbox id goes into the request line as custos.yaml allows it ('/' included), nothing
# else; the token file is one line.
out=$(ctl restart org/model 2>&1); rc=$?
[ $rc = 1 ] && echo "$out" | grep -q 'not found' && ok "ctl restart org/model: asked (404)" || fail "ctl restart org/model: $rc $out"
out=$(ctl restart $'a b\r\nX: y' 2>&1); rc=$?
check "ctl restart with a space and CR LF in the id: usage" "$rc" 2
printf '%s\nX-Injected: 1\n' "$TOKEN" >"$work/token2"
chmod 600 "$work/token2"
out=$("$bin" ctl --url "http://127.0.0.1:$APORT" --token-file "$work/token2" health 2>&1); rc=$?
[ $rc = 1 ] && echo "$out" | grep -q 'one line of visible ASCII' && ok "ctl refuses a token file of two lines" || fail "ctl token of two lines: $rc $out"

# Decision point.
allow_ctx='{"direction":"ingress","principal":"alice","model":"test-model","route":"POST /v1/chat/completions"}'
out=$(ctl decide "$allow_ctx")
echo "$out" | grep -q '"allow":true' && echo "$out" | grep -q '"rules":\["chat"\]' && ok "decide: alice allowed by rule chat" || fail "decide alice: $out"
printf '%s' '{"direction":"ingress","principal":"bob","model":"test-model","route":"POST /v1/chat/completions"}' >"$work/bob.json"
out=$(ctl decide @"$work/bob.json")
echo "$out" | grep -q '"allow":false' && ok "decide: bob denied" || fail "decide bob: $out"
out=$(ctl decide '{"direction":"sideways"}' 2>&1)
echo "$out" | grep -q '"errors"' && ok "decide: bad context answered with its errors" || fail "decide bad: $out"
# The context is strict JSON (RFC 8259), not YAML: a key of 2000 characters is a key (libyaml
# stopped implicit keys at 1024 and answered a syntax error), and what is only YAML is refused
# with its line:col.
python3 -c 'import sys; sys.stdout.write("{\"direction\":\"ingress\",\"" + "k" * 2000 + "\":1}")' >"$work/longkey.json"
out=$("${U[@]}" "${J[@]}" -w ' %{http_code}' --data-binary @"$work/longkey.json" http://admin/v1/decide)
case "$out" in
*"unknown key 'kkkk"*" 400") echo "$out" | grep -q 'syntax' && fail "decide, 2000-char key: $out" || ok "decide, 2000-char key: 400 unknown key, not a syntax error" ;;
*) fail "decide, 2000-char key: $out" ;;
esac
out=$("${U[@]}" "${J[@]}" -w ' %{http_code}' -d '{direction: ingress}' http://admin/v1/decide)
echo "$out" | grep -qF '"line":1,"col":2,"message":"JSON: object keys must be strings in double quotes"' &&
	[ "${out##* }" = 400 ] && ok "decide, unquoted key: 400 at 1:2" || fail "decide, unquoted key: $out"
out=$(ctl decide "{\"direction\":'ingress'}" 2>&1)
echo "$out" | grep -qF 'JSON: strings are in double quotes, not single' && ok "ctl decide, single quotes refused" || fail "ctl decide, single quotes: $out"
out=$("${U[@]}" "${J[@]}" -w ' %{http_code}' -d "$allow_ctx x" http://admin/v1/decide)
echo "$out" | grep -qF 'JSON: unexpected text after the JSON value' && [ "${out##* }" = 400 ] &&
	ok "decide, text after the value: 400" || fail "decide, trailing text: $out"
out=$("${U[@]}" "${J[@]}" -w ' %{http_code}' -d '{"direction":"ingress","principal":"alice","principal":"bob"}' http://admin/v1/decide)
echo "$out" | grep -qF "JSON: duplicate key 'principal' (first at line 1, column 24)" && [ "${out##* }" = 400 ] &&
	ok "decide, a repeated key: 400" || fail "decide, repeated key: $out"
printf '{"direction":"ingress","principal":"alice","model":"test-model",\n "route":"POST /v1/chat/completions","shadow":true}' >"$work/ctx2.json"
out=$(ctl decide @"$work/ctx2.json")
echo "$out" | grep -q '"allow":true' && echo "$out" | grep -q '"shadow":true' && ok "ctl decide @FILE, JSON on two lines with a literal" || fail "ctl decide ctx2: $out"
# A malformed URL is refused, naming the field, not judged as a request to no data source.
for u in 'http://[::1' 'http://[::1]junk/' 'http://h:70000/' 'http://h%zz/' 'http:///x'; do
	out=$(code "${U[@]}" -H 'Content-Type: application/json' \
		-d "{\"direction\":\"egress\",\"principal\":\"alice\",\"url\":\"$u\"}" http://admin/v1/decide)
	check "decide: url $u refused" "$out" 400
done
out=$(ctl decide '{"direction":"egress","principal":"alice","url":"http://[::1"}' 2>&1)
echo "$out" | grep -qF "url: bad url 'http://[::1': unterminated IPv6 literal" && ok "decide: the 400 names the url field" || fail "decide bad url: $out"
out=$(code "${U[@]}" -H 'Content-Type: application/json' \
	-d '{"direction":"egress","principal":"alice","url":"http://[::1]:8080/x"}' http://admin/v1/decide)
check "decide: a well-formed IPv6 url judged" "$out" 200

# Slow client: sends the request head one byte every half second; it is cut off after the admin
# timeout (10 s) while other requests are answered at once.
python3 - "$work/admin.sock" "$work/slow.started" >"$work/slow.out" 2>&1 <<'PY' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
req = b"GET /healthz HTTP/1.1\r\nHost: admin\r\nX-Padding: " + b"x" * 40 + b"\r\n\r\n"
t0 = time.time()
try:
    for i, b in enumerate(req):
        s.send(bytes([b]))
        if i == 0:
            open(sys.argv[2], "w").close()  # connected and begun: the others' turn
        time.sleep(0.5)
    print("slow client finished its request: not cut off", s.recv(100))
except (BrokenPipeError, ConnectionResetError) as e:
    print("cut off after %.0f s" % (time.time() - t0))
PY
slow=$!
wait_until 60 test -e "$work/slow.started" || fail "the slow client did not begin"
check "others served during the slow client" "$(code "${U[@]}" http://admin/healthz)" 200
wait "$slow"
grep -q '^cut off' "$work/slow.out" && ok "slow client timed out ($(cat "$work/slow.out"))" || fail "slow client: $(cat "$work/slow.out")"

# Policy: show, reload (good), reload (broken: refused with errors, old policy kept).
h1=$(ctl policy show | sed -n 's/.*"hash":"\([0-9a-f]*\)".*/\1/p')
[ ${#h1} -eq 64 ] && ok "policy hash shown" || fail "policy show: $(ctl policy show)"
sed -i 's/principal: \[alice, analytics, sso\]/principal: [alice, bob, analytics, sso]/' "$work/policy.yaml"
out=$(ctl policy reload)
echo "$out" | grep -q '"reloaded":true' && ok "reload through the API" || fail "reload: $out"
h2=$(ctl policy show | sed -n 's/.*"hash":"\([0-9a-f]*\)".*/\1/p')
[ "$h1" != "$h2" ] && ok "hash changed" || fail "hash unchanged after reload"
check "bob allowed after the API reload" "$("${P[@]}" -H "Authorization: Bearer $BOB")" 200
cp "$work/policy.yaml" "$work/policy.good"
printf 'version: 1\nrules:\n  - id: x\n    effect: maybe\n' >"$work/policy.yaml"
out=$(ctl policy reload 2>&1)
rc=$?
[ $rc -ne 0 ] && echo "$out" | grep -q '"reloaded":false' && echo "$out" | grep -q '"line":4' &&
	ok "broken policy refused with its errors" || fail "broken reload: rc=$rc $out"
h3=$(ctl policy show | sed -n 's/.*"hash":"\([0-9a-f]*\)".*/\1/p')
check "old policy in force" "$h3" "$h2"
check "bob still allowed (old policy)" "$("${P[@]}" -H "Authorization: Bearer $BOB")" 200
cp "$work/policy.good" "$work/policy.yaml"

check "sandboxes (none configured)" "$(ctl sandboxes)" '{"sandboxes":[]}'
check "restart unknown sandbox" "$(code "${U[@]}" -X POST http://admin/v1/sandboxes/nope/restart)" 404
out=$(ctl audit-status)
echo "$out" | grep -q '"durable_seq":[1-9]' && ok "audit status" || fail "audit status: $out"
echo "$out" | grep -Eq '"head":\{"seq":"[0-9]+","hash":"[0-9a-f]{64}"\}' && ok "audit chain head" || fail "chain head: $out"
echo "$out" | grep -q '"last_checkpoint":' && ok "last checkpoint reported" || fail "checkpoint: $out"
"${U[@]}" http://admin/metrics | grep -q '^custos_policy_reloads_total{result="failed"} 1$' && ok "failed reload counted" || fail "reload counter"

# Every admin action is audited (flushed at shutdown).
kill -TERM "$CU_PID"
wait "$CU_PID" 2>/dev/null
[ -e "$work/admin.sock" ] && fail "socket left behind" || ok "socket removed at shutdown"
grep -E 'Sanitizer|runtime error' "$work/custos.log" && fail "sanitizer report in the log" || ok "no sanitizer report"
check "reloads audited" "$(audit_grep '"type":"admin.request".*"path":"/v1/policy".*"result":"(reloaded|refused)"' | wc -l)" 2
audit_grep '"type":"admin.request".*"path":"/v1/policy","status":413,"result":"this endpoint takes no request body"' >/dev/null &&
	ok "refused body audited" || fail "413 not audited"
audit_grep '"type":"admin.request".*"principal":"uid:65534".*"status":403' >/dev/null && ok "refused uid audited" || fail "403 not audited"
audit_grep '"type":"admin.request".*"status":401' >/dev/null && ok "bad token audited" || fail "401 not audited"
audit_grep '"type":"admin.request".*"path":"/LONGPATHA{1015}","path_bytes":60009,"status":401' >/dev/null &&
	ok "refused caller with a 60 KB path audited (path cut at 1024 bytes)" || fail "60 KB path not audited"
[ "$fails" -eq 0 ] || exit 1
[ "$have_promtool" -eq 1 ] || skip "promtool (Debian package prometheus) not installed: the rest passed"
