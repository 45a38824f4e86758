#!/usr/bin/env bash
# The memory custos holds for egress content inspection (docs/EGRESS.md "Limits"): with
# egress.inspect.max_body 64KiB a body past it is refused at the new limit (request 413 by
# Content-Length and chunked, JSON response 502); with egress.inspect.max_held 330KiB (the
# least custos config check accepts for that max_body is 335875 bytes), which counts each body
# with its working copies (docs/EGRESS.md "Content inspection": a 60000-byte text body 184098
# bytes, a form 548199): a form body whose decoded copy and offset map would pass it is
# refused with 503 although the body alone fits; while one 60000-byte
# request body is held (its client waits, between its head and its body, on a FIFO the test
# controls) a second body is refused with 503 and audited with the reason (Content-Length,
# chunked, a JSON response), then passes once the first is done or its client went away.
# At the end a JSON body of max_body bytes, which needs all but 2045 bytes of max_held, passes
# (everything was
# given back, the forward loop's copies of inspected responses included); with test hooks
# (CUSTOS_TEST_EGRESS_HELD_LOG) the count of bytes held is back to 0 after every call. With CUSTOS_EGRESS_FORWARD=threads set by the caller
# (egress_inspect_held_threads.sh) the same checks run on the thread path.
set -u
. "${CUSTOS_SRC:?}/tests/integration/egress_lib.bash"
eg_init egheld curl python3 timeout mkfifo
P_D=$(port); P_IN=$(port); P_EG=$(port)

cd "$W"
FX="$SRC/tests/integration/egress_upstream.py"
EGRESS_SINK="$W/sink.txt" python3 "$FX" data "$P_D" data & PIDS+=($!)

cat >custos.yaml <<EOY
version: 1
log: { level: info, format: json }
listeners:
  - id: local
    address: "127.0.0.1:$P_IN"
models:
  - id: m1
    upstream: { url: "http://127.0.0.1:$P_D" }
data_sources:
  - { id: upr, url: "http://localhost:$P_D/up-redact/", classification: internal, allow_private_addresses: true }
  - { id: red, url: "http://localhost:$P_D/redact/", classification: internal, allow_private_addresses: true }
egress:
  port: $P_EG
  timeouts: { connect: 2s, read: 20s, idle: 20s }
  inspect: { max_body: 64KiB, max_held: 330KiB }
audit:
  dir: "$W/audit"
policy:
  file: "$W/policy.yaml"
EOY
cat >policy.yaml <<EOY
version: 1
mode: enforce
models:
  m1: { isolation: process }
data:
  upr: { url: "http://localhost:$P_D/up-redact/", classification: internal }
  red: { url: "http://localhost:$P_D/redact/", classification: internal }
rules:
  - id: upload-redacted
    effect: allow
    when: { direction: egress, data: upr, method: POST }
    inspect:
      request: { email: redact }
  - id: read-redacted
    effect: allow
    when: { direction: egress, data: red, method: GET }
    inspect:
      response: { email: redact }
EOY
chmod 600 custos.yaml policy.yaml
HOOKS=${CUSTOS_TEST_HOOKS:-0}
CUSTOS_TEST_EGRESS_HELD_LOG=1 "$BIN" up -c custos.yaml >up.log 2>&1 & UP=$!
PIDS+=($UP)
eg_up "$UP" up.log "$P_EG" "$P_D"

PX="http://127.0.0.1:$P_EG"
events() { { cat "$W"/audit/* 2>/dev/null; grep -h '"egress.request' up.log | sed 's/.*audit: //'; } | grep 'egress.request' | sed 's/\\"/"/g'; }
has_event() { events | grep -F "\"path\":\"$1\"" | tail -1 | grep -q .; }
event() { eg_wait 30 has_event "$1" && events | grep -F "\"path\":\"$1\"" | tail -1; }
has() { case "$1" in *"$2"*) return 0 ;; *) return 1 ;; esac; }
post() { # post PATH FILE [curl args]: the status code, the headers in hdr.txt
	local p=$1 f=$2
	shift 2
	curl -s -o body.txt -D hdr.txt -w '%{http_code}' -x "$PX" -H 'Content-Type: text/plain' "$@" \
		--data-binary "@$f" "http://localhost:$P_D/up-redact/$p"
}
head -c 70000 /dev/zero | tr '\0' 'a' >over.bin
head -c 60000 /dev/zero | tr '\0' 'b' >held.bin

# --- egress.inspect.max_body at its configured value
code=$(post over-len over.bin)
check "max_body 64KiB: a 70000-byte body (Content-Length) 413 (code $code), the reason names it" \
	bash -c "[ $code = 413 ] && grep -qi '^x-custos-reason: .*over 65536 bytes' hdr.txt"
code=$(post over-chunked over.bin -H 'Transfer-Encoding: chunked')
check "max_body 64KiB: the same chunked 413 (code $code)" test "$code" = 413
code=$(post fits held.bin)
check "max_body 64KiB: a 60000-byte body passes (code $code)" test "$code" = 200
code=$(curl -s -o body.txt -D hdr.txt -w '%{http_code}' -x "$PX" "http://localhost:$P_D/redact/pii-jsonlarge")
check "max_body 64KiB: a 1 MB JSON response 502 (code $code), the reason names the limit" \
	bash -c "[ $code = 502 ] && grep -qi '^x-custos-reason: .*over 65536 bytes' hdr.txt"
got=$(curl -s -x "$PX" "http://localhost:$P_D/redact/pii-jsonmid" | python3 -c 'import json,sys; print(json.load(sys.stdin)["mail"])')
check "max_body 64KiB: a 44 KB JSON response inspected ($got)" test "$got" = '[REDACTED:EMAIL]'

# --- the working copies count: a form body's masked and decoded copies (2 x 124097 bytes for
# 60000) and its offset map (240004) with the body (60001) pass max_held 330KiB although the
# body alone is far under it
jbody() { # jbody N FILE: a JSON document of N bytes with an address to mask at its end
	python3 -c 'import sys; n=int(sys.argv[1]); t=b"\"mail\":\"jane@example.com\"}"; h=b"{\"pad\":\""; sys.stdout.buffer.write(h+b"x"*(n-len(h)-len(t)-2)+b"\","+t)' "$1" >"$2"
}
jbody 60000 json60k.json
jpost() { curl -s -o body.txt -D hdr.txt -w '%{http_code}' -x "$PX" -H 'Content-Type: application/json' --data-binary "@$2" "http://localhost:$P_D/up-redact/$1"; }
code=$(curl -s -o body.txt -D hdr.txt -w '%{http_code}' -x "$PX" -H 'Content-Type: application/x-www-form-urlencoded' \
	--data-binary @held.bin "http://localhost:$P_D/up-redact/form-copies")
check "max_held 330KiB: a 60000-byte form body refused with 503: its working copies would pass it (code $code)" \
	bash -c "[ $code = 503 ] && grep -qi '^x-custos-reason: .*egress.inspect.max_held' hdr.txt"
code=$(jpost json-fits json60k.json)
check "max_held 330KiB: a 60000-byte JSON body (308195 with its copies) passes, masked (code $code)" \
	bash -c "[ $code = 200 ] && grep -q 'REDACTED:EMAIL' sink.txt && ! grep -q 'jane@example.com' sink.txt"

# --- egress.inspect.max_held: a client holds 60000 bytes (custos has answered its
# Expect: 100-continue, so the length is counted) until the test writes to its FIFO
# hold_client NAME MODE: MODE send (the body, then the answer's status in NAME.out) or drop
# (the connection closed without the body); NAME.held appears once custos holds the body.
hold_client() {
	mkfifo "$W/$1.go"
	timeout 60 python3 - "$P_EG" "$P_D" "$W/$1" "$2" <<'EOP' &
import socket, sys
px, pd, base, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
s = socket.create_connection(("127.0.0.1", px))
s.sendall(("POST http://localhost:%s/up-redact/held-%s HTTP/1.1\r\nHost: localhost:%s\r\n"
           "Content-Type: text/plain\r\nContent-Length: 60000\r\nExpect: 100-continue\r\n\r\n"
           % (pd, base.rsplit("/", 1)[1], pd)).encode())
got = b""
while b"\r\n\r\n" not in got:
    d = s.recv(4096)
    if not d:
        break
    got += d
open(base + ".held", "w").write(got.split(b"\r\n")[0].decode() + "\n")
open(base + ".go").read()  # the test says when
if mode == "drop":
    s.close()
    sys.exit(0)
s.sendall(b"c" * 60000)
got = b""
while b"\r\n" not in got:
    d = s.recv(4096)
    if not d:
        break
    got += d
open(base + ".out", "w").write(got.split(b"\r\n")[0].decode() + "\n")
EOP
	HOLDER=$!
	eg_wait 30 test -s "$W/$1.held" || bad "$1: custos never answered the held body's Expect"
}
hold_client a send
check "holder a: custos took its body (100 Continue)" grep -q ' 100 ' a.held
code=$(post second-len held.bin)
check "max_held 330KiB: a second 60000-byte body (Content-Length) refused with 503 (code $code)" \
	bash -c "[ $code = 503 ] && grep -qi '^x-custos-reason: .*egress.inspect.max_held' hdr.txt"
ev=$(event /up-redact/second-len)
check "max_held: the refusal audited as error, the reason naming max_held" \
	bash -c "echo '$ev' | grep -q '\"decision\":\"error\"' && echo '$ev' | grep -q 'egress.inspect.max_held' && echo '$ev' | grep -q '\"status\":503'"
code=$(post second-chunked held.bin -H 'Transfer-Encoding: chunked')
check "max_held: a second body sent chunked refused with 503 as it grows (code $code)" test "$code" = 503
code=$(curl -s -o body.txt -D hdr.txt -w '%{http_code}' -x "$PX" "http://localhost:$P_D/redact/pii-jsonmid")
check "max_held: a 44 KB JSON response refused with 503 meanwhile (code $code), nothing of it passed" \
	bash -c "[ $code = 503 ] && ! grep -q jane body.txt && grep -qi '^x-custos-reason: .*egress.inspect.max_held' hdr.txt"
echo go >"$W/a.go"
wait "$HOLDER"
check "holder a: its body went through once allowed to send it ($(cat a.out 2>/dev/null))" grep -q ' 200 ' a.out
event /up-redact/held-a >/dev/null
code=$(post after-a held.bin)
check "max_held: the bytes are released once the holder is done: a new body passes (code $code)" test "$code" = 200
# a holder that goes away without its body releases what it held too
hold_client b drop
code=$(post during-b held.bin)
check "holder b holds: a second body refused (code $code)" test "$code" = 503
echo go >"$W/b.go"
wait "$HOLDER"
event /up-redact/held-b >/dev/null
code=$(post after-b held.bin)
check "max_held: a holder that went away released its bytes: a new body passes (code $code)" test "$code" = 200
# everything released, the inspected responses' copies on their way to the client included:
# a JSON body of max_body (65536) bytes needs 335875 bytes (65537 + 2 x 135169) of the 337920
jbody 65536 json64k.json
code=$(jpost json-last json64k.json)
check "max_held: all released after the calls: a JSON body needing 335875 of 337920 bytes passes (code $code)" \
	test "$code" = 200
check "the source never saw a refused body" \
	bash -c "! grep -q -e second- -e during-b -e over- -e form-copies sink.txt"
if [ "$HOOKS" = 1 ]; then
	# every call has ended (each one's event is in): the last count logged is 0
	held_log() { grep -o 'test hook: [^ ]* ended: [0-9]* bytes held' up.log; }
	n=$(held_log | wc -l)
	last=$(held_log | tail -1)
	check "test hook: the bytes held for inspection back to 0 after all calls ($n logged, last: $last)" \
		bash -c "[ $n -ge 10 ] && echo '$last' | grep -q 'ended: 0 bytes held'"
fi

kill $UP; wait $UP; RC=$?
PIDS=("${PIDS[@]/$UP}")
check "custos up stops cleanly (exit $RC, no sanitizer report)" \
	bash -c "[ $RC = 0 ] && ! grep -q -e 'ERROR: AddressSanitizer' -e 'ERROR: LeakSanitizer' -e 'runtime error' $W/up.log"
grep -A12 -e 'ERROR: AddressSanitizer' -e 'ERROR: LeakSanitizer' -e 'runtime error' up.log | head -40
if [ $FAILS -ne 0 ]; then
	echo "--- custos log (tail)"; grep -v '"egress.request' up.log | tail -30 | cut -c1-400
	echo "--- egress events"; events | cut -c1-600
	echo "$FAILS check(s) failed"; exit 1
fi
echo "all egress held-body checks passed"
