#!/usr/bin/env bash
# Integration test of the model-server TEST FIXTURE itself (tests/fixtures/model-server): the
# endpoints, echo and canned replies, SSE streaming, HTTP/1.1 framing, the request and head logs
# and a clean SIGTERM exit, over TCP and a Unix socket. Exit 0 all passed, 1 a failure, 77 skipped (reason printed).
set -euo pipefail

BIN="${CUSTOS_FIXTURES:?CUSTOS_FIXTURES is not set}/model-server/model-server"
for tool in curl python3; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "SKIPPED: $tool is not installed"
		exit 77
	fi
done
if [ ! -x "$BIN" ]; then
	echo "FAIL: fixture binary not built: $BIN"
	exit 1
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fixture-model-server.XXXXXX")
SERVER_PID=""
FAILED=0
CURL=(curl --silent --show-error --max-time 20)
# fetch CURL-ARGS...: curl that reports a failed transfer as FAIL instead of ending the script.
fetch() {
	"${CURL[@]}" "$@" || fail "request failed: curl $*"
}

stop_server() {
	local pid=$SERVER_PID _
	SERVER_PID=""
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null
}
cleanup() {
	stop_server || true
	rm -rf "$WORK"
}
trap cleanup EXIT

pass() { echo "PASS: $1"; }
fail() {
	echo "FAIL: $1"
	FAILED=1
}
# check NAME COMMAND...: runs the command, PASS when it succeeds.
check() {
	local name=$1
	shift
	if "$@"; then pass "$name"; else fail "$name"; fi
}
# jq-free JSON assertions: pyassert EXPR FILE [ARG], with the document bound to d and ARG to arg.
pyassert() {
	python3 -c '
import json, sys
d = json.load(open(sys.argv[2], encoding="utf-8"))
arg = sys.argv[3] if len(sys.argv) > 3 else None
ok = eval(sys.argv[1])
if not ok:
    sys.stderr.write("assertion failed: %s\n  on %s\n" % (sys.argv[1], json.dumps(d)[:600]))
sys.exit(0 if ok else 1)
' "$@"
}

# start_server ARGS...: starts the fixture on 127.0.0.1:0 and sets SERVER_PID and PORT.
start_server() {
	local _
	rm -f "$WORK/port"
	"$BIN" --listen 127.0.0.1:0 --port-file "$WORK/port" "$@" 2>>"$WORK/server.err" &
	SERVER_PID=$!
	local end=$((SECONDS + 60)) # a start under ASan on a loaded machine
	while [ "$SECONDS" -lt "$end" ]; do
		[ -s "$WORK/port" ] && break
		kill -0 "$SERVER_PID" 2>/dev/null || break
		sleep 0.1
	done
	if [ ! -s "$WORK/port" ]; then
		echo "FAIL: fixture did not start"
		cat "$WORK/server.err"
		exit 1
	fi
	PORT=$(cat "$WORK/port")
	URL="http://127.0.0.1:$PORT"
}

# stop_and_check NAME: SIGTERM must end the fixture with status 0 (ASan/LSan would make it fail).
stop_and_check() {
	local rc=0
	stop_server || rc=$?
	if [ "$rc" -eq 0 ]; then pass "$1"; else fail "$1 (exit status $rc)"; fi
}

# --- help says it is a fixture
if "$BIN" --help | grep -q "TEST FIXTURE"; then pass "--help names it a test fixture"; else fail "--help"; fi
if "$BIN" --mode nonsense --listen 127.0.0.1:0 >/dev/null 2>&1; then
	fail "bad option refused"
else
	pass "bad option refused"
fi

# --- TCP, echo mode
TOKENS=5
start_server --tokens "$TOKENS" --model-id alpha --model-id beta --log "$WORK/requests.log" \
	--log-headers "$WORK/heads.log"

fetch -o "$WORK/health" "$URL/health"
check "GET /health is ok" test "$(cat "$WORK/health")" = ok

fetch -o "$WORK/models.json" "$URL/v1/models"
check "GET /v1/models lists the models" pyassert \
	'd["object"] == "list" and [m["id"] for m in d["data"]] == ["alpha", "beta"] and all(m["object"] == "model" for m in d["data"])' \
	"$WORK/models.json"

PROMPT='Hello, fixture! "quoted" \ back\slash, tab	and é 😀'
python3 -c '
import json, sys
print(json.dumps({"model": "alpha", "messages": [{"role": "user", "content": sys.argv[1]}]}))
' "$PROMPT" >"$WORK/chat.req"
fetch -H 'Content-Type: application/json' --data-binary @"$WORK/chat.req" \
	-o "$WORK/chat.json" "$URL/v1/chat/completions"
check "chat completion echoes the prompt" pyassert \
	'd["object"] == "chat.completion" and d["model"] == "alpha" and d["choices"][0]["message"]["role"] == "assistant" and d["choices"][0]["message"]["content"] == arg and d["choices"][0]["finish_reason"] == "stop"' \
	"$WORK/chat.json" "$PROMPT"
check "chat completion usage" pyassert \
	'd["usage"]["completion_tokens"] == '"$TOKENS"' and d["usage"]["prompt_tokens"] == 9 and d["usage"]["total_tokens"] == 9 + '"$TOKENS" \
	"$WORK/chat.json"

fetch --data-binary '{"messages":[{"role":"system","content":"sys"},{"role":"user","content":[{"type":"text","text":"part1 "},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"part2 \ud83d\ude00 \u00e9\n"}]}]}' \
	-o "$WORK/parts.json" "$URL/v1/chat/completions"
check "content parts and \\u escapes are decoded" pyassert \
	'd["choices"][0]["message"]["content"] == "sys\npart1 part2 \U0001F600 \u00e9\n"' "$WORK/parts.json"

# Streaming: TOKENS data events, usage in the last, then [DONE]; each event its own chunk; the
# multibyte characters check that the reply is split between UTF-8 sequences.
fetch -N --data-binary '{"model":"beta","stream":true,"messages":[{"role":"user","content":"one two three ééé 😀😀😀 six seven"}]}' \
	-D "$WORK/stream.head" -o "$WORK/stream.txt" "$URL/v1/chat/completions"
check_stream() {
	python3 - "$WORK/stream.txt" "$TOKENS" <<'EOF'

import json, sys
text = open(sys.argv[1], encoding="utf-8").read()
n = int(sys.argv[2])
assert text.endswith("data: [DONE]\n\n"), "no [DONE] at the end"
events = [e for e in text.split("\n\n") if e]
assert all(e.startswith("data: ") for e in events), events
data = [json.loads(e[6:]) for e in events[:-1]]
assert len(data) == n, "%d events" % len(data)
assert all(d["object"] == "chat.completion.chunk" and d["model"] == "beta" for d in data)
assert data[0]["choices"][0]["delta"]["role"] == "assistant"
assert "".join(d["choices"][0]["delta"]["content"] for d in data) == "one two three ééé 😀😀😀 six seven"
assert all(d["choices"][0]["finish_reason"] is None and not d.get("usage") for d in data[:-1])
assert data[-1]["choices"][0]["finish_reason"] == "stop"
assert data[-1]["usage"] == {"prompt_tokens": 7, "completion_tokens": n, "total_tokens": 7 + n}
EOF
}
check "stream: $TOKENS events, usage in the last, then [DONE]" check_stream
check "stream is text/event-stream, chunked" grep -qi '^content-type: text/event-stream' "$WORK/stream.head"
check "stream uses Transfer-Encoding: chunked" grep -qi '^transfer-encoding: chunked' "$WORK/stream.head"
fetch -N --raw --data-binary '{"stream":true,"messages":[{"role":"user","content":"abc"}]}' \
	-o "$WORK/raw.txt" "$URL/v1/chat/completions"
check "each stream event is one HTTP chunk" python3 -c '
import sys
raw = open(sys.argv[1], "rb").read()
chunks = []
while True:
    line, raw = raw.split(b"\r\n", 1)
    size = int(line, 16)
    if size == 0:
        break
    chunks.append(raw[:size])
    assert raw[size:size + 2] == b"\r\n"
    raw = raw[size + 2:]
assert raw == b"\r\n", raw
assert len(chunks) == int(sys.argv[2]) + 1, len(chunks)
assert all(c.startswith(b"data: ") and c.endswith(b"\n\n") and c.count(b"data: ") == 1 for c in chunks)
' "$WORK/raw.txt" "$TOKENS"

# max_tokens below --tokens cuts the reply: finish_reason "length".
fetch --data-binary '{"prompt":"abcdefghij","max_tokens":2,"stream":true}' \
	-o "$WORK/len.txt" "$URL/v1/completions"
check "completions stream honours max_tokens" python3 -c '
import json, sys
ev = [json.loads(e[6:]) for e in open(sys.argv[1]).read().split("\n\n") if e and e != "data: [DONE]"]
assert len(ev) == 2 and ev[-1]["choices"][0]["finish_reason"] == "length", ev
assert ev[-1]["object"] == "text_completion" and ev[-1]["usage"]["completion_tokens"] == 2
assert "".join(e["choices"][0]["text"] for e in ev) == "abcd"
' "$WORK/len.txt"

fetch --data-binary '{"input":["a b","c"]}' -o "$WORK/emb1.json" "$URL/v1/embeddings"
fetch --data-binary '{"input":["a b","c"]}' -o "$WORK/emb2.json" "$URL/v1/embeddings"
check "embeddings are deterministic" cmp -s "$WORK/emb1.json" "$WORK/emb2.json"
check "embeddings shape" pyassert \
	'len(d["data"]) == 2 and all(len(e["embedding"]) == 8 for e in d["data"]) and d["usage"]["prompt_tokens"] == 3' \
	"$WORK/emb1.json"

# Errors.
code=$(fetch -o "$WORK/404.json" -w '%{http_code}' "$URL/v1/nothing")
check "unknown path is 404" test "$code" = 404
check "404 body is an OpenAI error" pyassert 'd["error"]["type"] == "invalid_request_error" and "message" in d["error"]' "$WORK/404.json"
code=$(fetch -o "$WORK/400.json" -w '%{http_code}' --data-binary '{"messages": [' "$URL/v1/chat/completions")
check "bad JSON is 400" test "$code" = 400
check "400 body is an OpenAI error" pyassert 'd["error"]["type"] == "invalid_request_error"' "$WORK/400.json"
code=$(fetch -o /dev/null -w '%{http_code}' --data-binary '{"model":"alpha"}' "$URL/v1/chat/completions")
check "missing messages is 400" test "$code" = 400

# HTTP/1.1 framing: chunked request body with Expect: 100-continue, keep-alive reuse.
printf '{"messages":[{"role":"user","content":"chunked body"}]}' >"$WORK/chunked.req"
fetch -H 'Transfer-Encoding: chunked' -H 'Expect: 100-continue' --data-binary @"$WORK/chunked.req" \
	-o "$WORK/chunked.json" "$URL/v1/chat/completions"
check "chunked request body with Expect: 100-continue" pyassert \
	'd["choices"][0]["message"]["content"] == "chunked body"' "$WORK/chunked.json"
fetch -v -o /dev/null -o /dev/null "$URL/health" "$URL/health" 2>"$WORK/ka.txt"
check "keep-alive connection is reused" grep -qi 're-using existing connection' "$WORK/ka.txt"
check "the log records each request" grep -qx 'POST /v1/chat/completions 55' "$WORK/requests.log"
# --log-headers: every head on one line, fields as received, whatever the request became.
fetch -o /dev/null -H 'Accept-Encoding: gzip, br' -H 'X-Fixture-Probe: one' "$URL/health"
fetch -o /dev/null -H 'X-Fixture-Probe: two' "$URL/v1/nothing"
check "the head log records the fields as received" \
	grep -qE '^GET /health HTTP/1.1 \| Host: 127.0.0.1:[0-9]+ \| .*\| Accept-Encoding: gzip, br \| X-Fixture-Probe: one$' "$WORK/heads.log"
check "... of a request answered 404 too" grep -qE '^GET /v1/nothing HTTP/1.1 \| .*X-Fixture-Probe: two$' "$WORK/heads.log"
check "... one line per request" test "$(grep -c '^' "$WORK/heads.log")" = "$(grep -c '^' "$WORK/requests.log")"
stop_and_check "SIGTERM ends the TCP fixture cleanly"

# --- Unix socket, canned mode, a pool of two worker threads
SOCK="$WORK/model.sock"
"$BIN" --unix "$SOCK" --mode canned --canned 'Canned answer.' --tokens 3 --delay-ms 100 --threads 2 \
	2>>"$WORK/server.err" &
SERVER_PID=$!
end=$((SECONDS + 60))
while [ "$SECONDS" -lt "$end" ]; do
	"${CURL[@]}" --max-time 2 --unix-socket "$SOCK" -o /dev/null http://fixture/health 2>/dev/null && break
	sleep 0.1
done
fetch --unix-socket "$SOCK" --data-binary '{"messages":[{"role":"user","content":"ignored"}]}' \
	-o "$WORK/unix.json" http://fixture/v1/chat/completions
check "Unix socket, canned reply" pyassert \
	'd["choices"][0]["message"]["content"] == "Canned answer." and d["usage"]["completion_tokens"] == 3' \
	"$WORK/unix.json"
# Only a lower bound: 3 tokens at 100 ms each cannot arrive sooner than 0.3 s.
elapsed=$(fetch --unix-socket "$SOCK" -o /dev/null -w '%{time_total}' \
	--data-binary '{"stream":true,"messages":[{"role":"user","content":"x"}]}' \
	http://fixture/v1/chat/completions)
check "--delay-ms paces the stream" python3 -c 'import sys; sys.exit(float(sys.argv[1]) < 0.3)' "$elapsed"
stop_and_check "SIGTERM ends the Unix-socket fixture cleanly"
check "the Unix socket is removed at exit" test ! -e "$SOCK"

if [ "$FAILED" -ne 0 ]; then
	echo "server stderr:"
	cat "$WORK/server.err"
	exit 1
fi
echo "all model-server fixture checks passed"
