#!/usr/bin/env bash
# Every refusal custos writes itself leaves an audit event that says what it refused (AUDIT.md:
# bad input gets an HTTP status and an event; fail closed). Through the real binary with curl
# and raw sockets, each refusal's answer gives its status and X-Request-Id, and the trail (polled:
# the audit writer is asynchronous) then holds that request's event with its type, status,
# decision and reason: request smuggling (Content-Length with Transfer-Encoding), a transfer
# coding other than chunked (501), HTTP/2.0 in a request line (505), an unknown expectation
# (417), two Host fields, no credentials, Basic credentials, two Authorization fields (401),
# no route (404), a policy deny (403), body_max and the policy's max_body (413), malformed
# JSON (400), the request rate (429), upstream down (502), upstream silent (504), an upstream
# response head cut (502), a response body cut or stalled (502/504, or a truncated 200), an
# incomplete head and a stalled body (408), a head the client closed its side in (400). Also:
# a connection over limits.max_connections is closed at accept, unanswered, and audited
# (connection.reject, custos_connections_shed_total), and an allowed admin API caller's
# refused requests (two framings, an unknown path) are audited (admin.request with the status
# and the error).
. "$(dirname "$0")/proxy_lib.bash"
command -v python3 >/dev/null || skip "python3 not installed"

make_pki
start_fixture model --tokens 4
down_port=$(free_port)
# A silent upstream: its listen backlog completes the TCP handshake, nothing ever answers.
silent_port=$(free_port)
python3 -c '
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(16)
open(sys.argv[2], "w").write("ready")
time.sleep(600)
' "$silent_port" "$work/silent.ready" &
pids+=($!)
wait_until 60 test -s "$work/silent.ready" || skip "silent upstream did not start"
# A broken upstream: reads a request head (and its Content-Length body), then as X-Break says:
# cut-head: part of a response head, then closes; short-body: a head with Content-Length: 100
# and 10 bytes, then closes; stall-body: the same 10 bytes, then nothing.
broken_port=$(free_port)
python3 -c '
import re, socket, sys, threading, time
def serve(c):
    d = b""
    while b"\r\n\r\n" not in d:
        k = c.recv(65536)
        if not k:
            c.close()
            return
        d += k
    head, rest = d.split(b"\r\n\r\n", 1)
    m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    n = int(m.group(1)) if m else 0
    while len(rest) < n:
        rest += c.recv(65536)
    mode = re.search(rb"(?i)\r\nx-break: *([a-z-]+)", head).group(1)
    if mode == b"cut-head":
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: applic")
    else:
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{\"id\":\"x\",")
        if mode == b"stall-body":
            time.sleep(120)
    c.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(16)
open(sys.argv[2], "w").write("ready")
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
' "$broken_port" "$work/broken.ready" &
pids+=($!)
wait_until 60 test -s "$work/broken.ready" || skip "broken upstream did not start"

CAROL=sk-test-carol
cat >"$work/policy.yaml" <<POL
version: 1
principals:
  alice: { match: { api_key_sha256: "$(sha256hex $ALICE)" } }
  bob: { match: { api_key_sha256: "$(sha256hex $BOB)" } }
  carol: { match: { api_key_sha256: "$(sha256hex $CAROL)" } }
models:
  test-model: { isolation: none }
  down-model: { isolation: none }
  slow-model: { isolation: none }
  broken-model: { isolation: none }
rules:
  - id: chat
    effect: allow
    when:
      direction: ingress
      principal: alice
      route: "POST /v1/chat/completions"
      model: [test-model, down-model, slow-model, broken-model]
    limits: { max_body: 64KiB }
  - id: carol-one-a-minute
    effect: allow
    when: { direction: ingress, principal: carol, route: "POST /v1/chat/completions", model: test-model }
    limits: { requests_per_minute: 1 }
POL
chmod 644 "$work/policy.yaml"
EXTRA_MODELS="  - id: down-model
    upstream: { url: \"http://127.0.0.1:$down_port/\" }
  - id: slow-model
    upstream: { url: \"http://127.0.0.1:$silent_port/\", timeouts: { read: 2s } }
  - id: broken-model
    upstream: { url: \"http://127.0.0.1:$broken_port/\", timeouts: { read: 2s } }"
WORKERS=1 HEADER_TIMEOUT=3s EXTRA_LIMITS="  max_connections: 4
" write_config "$work/custos.yaml" "$FX_PORT"
perl -i -pe 's/^(    client_header: .*)$/$1\n    client_body: 3s/' "$work/custos.yaml"
start_custos "$work/custos.yaml"
wait_until 60 test -S "$work/admin.sock" || fail "no admin socket after 60 s"

A="Authorization: Bearer $ALICE"
chat='{"model":"test-model","messages":[{"role":"user","content":"hi"}]}'
ADM=(curl -sS --max-time 20 --unix-socket "$work/admin.sock")
metric() { "${ADM[@]}" http://localhost/metrics | sed -n "s/^$1 \([0-9]*\)$/\1/p"; }
metric_is() { [ "$(metric "$1")" = "$2" ]; }

# ---- a connection over max_connections (4, one worker): closed at accept, audited
exec 5<>"/dev/tcp/127.0.0.1/$PORT2" 6<>"/dev/tcp/127.0.0.1/$PORT2" \
	7<>"/dev/tcp/127.0.0.1/$PORT2" 8<>"/dev/tcp/127.0.0.1/$PORT2"
wait_until 30 metric_is custos_open_connections 4 || fail "4 connections not open after 30 s: $(metric custos_open_connections)"
got=$(python3 -c '
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
try:
    d = s.recv(1)
except ConnectionResetError:
    d = b""
print("closed" if d == b"" else "answered")
' "$PORT2")
check "fifth connection closed at accept, unanswered" "$got" closed
shed_ev='"type":"connection.reject","direction":"ingress","remote":"127\.0\.0\.1:[0-9]+","decision":"deny","reason":"max_connections \(4\) reached: closed at accept","count":1[,}]'
wait_until 30 audit_grep "$shed_ev" >/dev/null && ok "shed connection audited (connection.reject)" ||
	fail "no connection.reject event for the shed connection"
check "custos_connections_shed_total" "$(metric custos_connections_shed_total)" 1
exec 5>&- 6>&- 7>&- 8>&-
wait_until 30 metric_is custos_open_connections 0 || fail "held connections not closed after 30 s"

# ---- request refusals: status and X-Request-Id on the answer, then that request's event
# send FILE-CONTENT...: printf's bytes on one plain connection; the answer in $work/ans.
send() {
	printf "$@" >"$work/req.http"
	raw_http "$PORT2" "$work/req.http" >"$work/ans"
}
st() { head -1 "$work/ans" | cut -d' ' -f2; }
rid() { sed -n 's/^[Xx]-[Rr]equest-[Ii]d: *\([0-9a-f]*\).*/\1/p' "$work/ans" | tr -d '\r' | head -1; }
# refused NAME STATUS TYPE DECISION REASON-REGEX: the answer in $work/ans has STATUS and a
# request id whose event (type TYPE) has STATUS, DECISION and a reason matching REASON-REGEX.
refused() {
	local name=$1 status=$2 type=$3 decision=$4 reason=$5 id
	check "$name: status" "$(st)" "$status"
	id=$(rid)
	[ ${#id} -eq 32 ] || {
		fail "$name: no X-Request-Id"
		return
	}
	if wait_until 30 audit_grep "\"type\":\"$type\",\"request_id\":\"$id\".*\"status\":$status,\"decision\":\"$decision\",\"reason\":\"$reason\"" >/dev/null; then
		ok "$name: audited ($type, $decision)"
	else
		fail "$name: no $type event with status $status, decision $decision, reason /$reason/ for $id: $(audit_grep "\"request_id\":\"$id\"")"
	fi
}
curl_ans() { curl -sS --max-time 30 -D - -o /dev/null "$@" >"$work/ans"; }

send 'POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\n%s\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n' "$A"
refused "Content-Length with Transfer-Encoding" 400 http.reject deny "both Content-Length and Transfer-Encoding"
send 'POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\n%s\r\nTransfer-Encoding: gzip\r\n\r\n' "$A"
refused "Transfer-Encoding gzip" 501 http.reject deny "transfer coding other than chunked"
send 'GET /v1/models HTTP/2.0\r\nHost: t\r\n\r\n'
refused "HTTP/2.0 request line" 505 http.reject deny "HTTP version other than 1.0 or 1.1"
send 'POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\n%s\r\nExpect: 200-ok\r\nContent-Length: 2\r\n\r\n{}' "$A"
refused "unknown expectation" 417 http.reject deny "unsupported expectation"
send 'GET /v1/models HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n'
refused "two Host fields" 400 http.reject deny "more than one Host field"
send 'POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\n%s\r\nContent-Length: 2000000\r\n\r\n' "$A"
refused "Content-Length over body_max" 413 http.reject deny "request body larger than max_body"

curl_ans -d "$chat" "http://127.0.0.1:$PORT2/v1/chat/completions"
refused "no credentials" 401 http.reject deny "credentials required"
curl_ans -u a:b -d "$chat" "http://127.0.0.1:$PORT2/v1/chat/completions"
refused "Basic credentials" 401 http.reject deny "unsupported Authorization scheme \\(Bearer expected\\)"
curl_ans -H "$A" -H "$A" -d "$chat" "http://127.0.0.1:$PORT2/v1/chat/completions"
refused "two Authorization fields" 401 http.reject deny "more than one Authorization field"
curl_ans -H "$A" -d '{"model":"no-such-model","messages":[]}' "http://127.0.0.1:$PORT2/v1/chat/completions"
refused "unknown model" 404 http.reject deny "no route for this path and model"
curl_ans -H "Authorization: Bearer $BOB" -d "$chat" "http://127.0.0.1:$PORT2/v1/chat/completions"
refused "no rule allows" 403 http.reject deny "[^\"]+"
head -c 70000 /dev/zero | tr '\0' 'a' | sed 's/^/{"model":"test-model","messages":[{"role":"user","content":"/; s/$/"}]}/' >"$work/big.json"
curl_ans -H "$A" --data-binary @"$work/big.json" "http://127.0.0.1:$PORT2/v1/chat/completions"
refused "body over the policy's max_body" 413 http.reject deny "request body larger than the policy's max_body"
curl_ans -H "$A" -d '{"model":' "http://127.0.0.1:$PORT2/v1/chat/completions"
refused "malformed JSON" 400 http.reject deny "[^\"]+"
curl_ans -H "Authorization: Bearer $CAROL" -d "$chat" "http://127.0.0.1:$PORT2/v1/chat/completions"
check "carol's first request" "$(st)" 200
curl_ans -H "Authorization: Bearer $CAROL" -d "$chat" "http://127.0.0.1:$PORT2/v1/chat/completions"
refused "request rate" 429 http.reject deny "request rate limit exceeded"
curl_ans -H "$A" -d '{"model":"down-model","messages":[]}' "http://127.0.0.1:$PORT2/v1/chat/completions"
refused "upstream down" 502 http.request error "[^\"]+"
curl_ans -H "$A" -d '{"model":"slow-model","messages":[]}' "http://127.0.0.1:$PORT2/v1/chat/completions"
refused "upstream silent" 504 http.request error "upstream timed out"
curl_ans -H "$A" -H "X-Break: cut-head" -d '{"model":"broken-model","messages":[]}' "http://127.0.0.1:$PORT2/v1/chat/completions"
refused "upstream response head cut" 502 http.request error "truncated upstream response head"
# A body cut or stalled after its head: a 502/504 while nothing of it has reached the client,
# else the head's 200 and a truncated body; either way the event says so, with the status sent.
for b in "short-body:upstream response truncated" "stall-body:upstream read timed out mid-response"; do
	curl_ans -H "$A" -H "X-Break: ${b%%:*}" -d '{"model":"broken-model","messages":[]}' "http://127.0.0.1:$PORT2/v1/chat/completions"
	case "$(st)" in
	200) refused "upstream ${b%%:*} (after the head)" 200 http.request error "${b#*:}" ;;
	*) refused "upstream ${b%%:*}" "$(st)" http.request error "${b#*:}" ;;
	esac
done

# An incomplete head, and a body that stops: 408 when client_header / client_body (3 s) end.
send 'GET /v1/models HTTP/1.1\r\nHost: t\r\n'
refused "incomplete head" 408 http.reject deny "request head not received in time"
send 'POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\n%s\r\nContent-Length: 100\r\n\r\n{"model"' "$A"
refused "stalled body" 408 http.reject deny "request body not received in time"

# A head the client gives up on (closes its side inside it): 400 in the trail, as the body case.
lport=$(python3 -c '
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: t\r\n")
s.shutdown(socket.SHUT_WR)
try:
    while s.recv(4096):
        pass
except ConnectionResetError:
    pass
print(s.getsockname()[1])
' "$PORT2")
wait_until 30 audit_grep "\"type\":\"http.reject\".*\"remote\":\"127\.0\.0\.1:$lport\".*\"status\":400,\"decision\":\"deny\",\"reason\":\"client closed inside the request head\"" >/dev/null &&
	ok "head cut by the client: audited" || fail "head cut by the client (port $lport): not audited"

# ---- the admin API: an allowed caller's refused requests are audited too
got=$(python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(20)
s.connect(sys.argv[1])
s.sendall(b"POST /v1/decide HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
          b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n")
d = b""
while True:
    k = s.recv(4096)
    if not k:
        break
    d += k
print(d.split(b" ")[1].decode() if d else "nothing")
' "$work/admin.sock")
check "admin: Content-Length with Transfer-Encoding" "$got" 400
wait_until 30 audit_grep '"type":"admin.request","principal":"uid:[0-9]+","method":"POST","path":"/v1/decide","status":400,"result":"one Content-Length or one Transfer-Encoding, not both or several"' >/dev/null &&
	ok "admin: two framings audited" || fail "admin: two framings not audited"
check "admin: unknown path" "$("${ADM[@]}" -o /dev/null -w '%{http_code}' http://localhost/v1/no-such-thing)" 404
wait_until 30 audit_grep '"type":"admin.request","principal":"uid:[0-9]+","method":"GET","path":"/v1/no-such-thing","status":404,"result":"not found"' >/dev/null &&
	ok "admin: unknown path audited" || fail "admin: unknown path not audited"

[ "$fails" -eq 0 ]
