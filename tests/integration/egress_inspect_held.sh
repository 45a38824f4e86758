#!/usr/bin/env bash
# The memory custos holds for egress content inspection (docs/EGRESS.md "Limits"): with
# egress.inspect.max_body 64KiB a body past it is refused at the new limit (request 413 by
# Content-Length and chunked, JSON response 502); with egress.inspect.max_held 849KiB (869376
# bytes: the least custos config check accepts for that max_body is 868361, 13 x 65536 +
# 16393, what one multipart body of max_body bytes counts with its working copies), a form
# body and a multipart body of exactly max_body bytes each pass, inspected and masked (the
# multipart one needs all but 1015 bytes of max_held); while one 60000-byte multipart request
# body is held (796393 bytes counted; its client waits, between its head and its body, on a
# FIFO the test controls) a second body is refused with 503 and audited with the reason
# (Content-Length, chunked when its working copy would pass the bound, a JSON response), then
# passes once the first is done or its client went away. At the end the multipart body of
# max_body bytes passes again (everything was given back, the forward loop's copies of
# inspected responses included); with test hooks (CUSTOS_TEST_EGRESS_HELD_LOG) the count of
# bytes held is back to 0 after every call. With CUSTOS_EGRESS_FORWARD=threads set by the
# caller (egress_inspect_held_threads.sh) the same checks run on the thread path.
set -u
. "${CUSTOS_SRC:?}/tests/integration/egress_lib.bash"
eg_init egheld curl python3 timeout mkfifo
P_D=$(port); P_IN=$(port); P_EG=$(port)

cd "$W"
FX="$SRC/tests/integration/egress_upstream.py"
EGRESS_SINK="$W/sink.txt" python3 "$FX" data "$P_D" data & PIDS+=($!)

SRCS="$(eg_source_yaml upr "http://localhost:$P_D/up-redact/" internal)
$(eg_source_yaml red "http://localhost:$P_D/redact/" internal)"
eg_m1_conf info "$SRCS" "  timeouts: { connect: 2s, read: 20s, idle: 20s }
  inspect: { max_body: 64KiB, max_held: 849KiB }"
eg_m1_policy <<EOY
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
CUSTOS_TEST_EGRESS_HELD_LOG=1 eg_start "$P_D" # the variable is in custos up's environment
# event PATH: the (last) audit event of the request for PATH (exactly), waiting (30 s)
event() { eg_event "$1\""; }
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

# --- one body of max_body bytes of any media type fits max_held alone (what config check
# asks): a form (9 x 65536 + 8199 = 598023 bytes with its copies and offset map) and a
# multipart body (13 x 65536 + 16393 = 868361 of 869376), both inspected and masked
jbody() { # jbody N FILE: a JSON document of N bytes with an address to mask at its end
	python3 -c 'import sys; n=int(sys.argv[1]); t=b"\"mail\":\"jane@example.com\"}"; h=b"{\"pad\":\""; sys.stdout.buffer.write(h+b"x"*(n-len(h)-len(t)-2)+b"\","+t)' "$1" >"$2"
}
# mpbody N FILE [FILL]: a multipart/form-data body (boundary XyZ) of exactly N bytes, one text
# part with an address to mask (none when FILL is given: FILL bytes only)
mpbody() {
	python3 - "$1" "$2" "${3:-}" <<'EOP'
import sys
n, out, fill = int(sys.argv[1]), sys.argv[2], sys.argv[3]
pre = b'--XyZ\r\nContent-Disposition: form-data; name="f"\r\n\r\n'
post = b"\r\n--XyZ--\r\n"
head = b"" if fill else b"mail jane@example.com "
pad = (fill or "p").encode()
open(out, "wb").write(pre + head + pad * (n - len(pre) - len(post) - len(head)) + post)
EOP
}
# sunk PATH: what the source received for POST PATH
sunk() { awk -v p="POST /up-redact/$1" '$0==p{f=1;next} f&&$0=="--"{f=0} f' sink.txt; }
jpost() { curl -s -o body.txt -D hdr.txt -w '%{http_code}' -x "$PX" -H 'Content-Type: application/json' --data-binary "@$2" "http://localhost:$P_D/up-redact/$1"; }
mppost() { # mppost PATH FILE [curl args]
	local p=$1 f=$2
	shift 2
	curl -s -o body.txt -D hdr.txt -w '%{http_code}' -x "$PX" -H 'Content-Type: multipart/form-data; boundary=XyZ' "$@" \
		--data-binary "@$f" "http://localhost:$P_D/up-redact/$p"
}
python3 -c 'import sys; h=b"mail=jane%40example.com&pad="; sys.stdout.buffer.write(h+b"f"*(65536-len(h)))' >form64k.txt
code=$(curl -s -o body.txt -D hdr.txt -w '%{http_code}' -x "$PX" -H 'Content-Type: application/x-www-form-urlencoded' \
	--data-binary @form64k.txt "http://localhost:$P_D/up-redact/form-max")
got=$(sunk form-max)
check "max_held 849KiB: a form body of max_body (65536) bytes passes, masked (code $code)" \
	bash -c "[ $code = 200 ] && grep -qF 'mail=%5BREDACTED%3AEMAIL%5D' <<<\"\$1\" && ! grep -q jane <<<\"\$1\"" _ "$got"
mpbody 65536 mp64k.bin
code=$(mppost mp-max mp64k.bin)
got=$(sunk mp-max)
check "max_held 849KiB: a multipart body of max_body bytes (868361 of 869376 with its copies) passes, masked (code $code)" \
	bash -c "[ $code = 200 ] && grep -qF 'mail [REDACTED:EMAIL]' <<<\"\$1\" && ! grep -q jane <<<\"\$1\"" _ "$got"
code=$(mppost mp-max-chunked mp64k.bin -H 'Transfer-Encoding: chunked')
got=$(sunk mp-max-chunked)
check "max_held 849KiB: the same multipart body sent chunked passes too (code $code)" \
	bash -c "[ $code = 200 ] && grep -qF 'mail [REDACTED:EMAIL]' <<<\"\$1\"" _ "$got"
jbody 60000 json60k.json
code=$(jpost json-fits json60k.json)
check "max_held 849KiB: a 60000-byte JSON body (308195 with its copies) passes, masked (code $code)" \
	bash -c "[ $code = 200 ] && grep -q 'REDACTED:EMAIL' sink.txt && ! grep -q 'jane@example.com' sink.txt"

# --- egress.inspect.max_held: a client holds a 60000-byte multipart body, 796393 bytes with
# its working copies (custos has answered its Expect: 100-continue, so the length is counted
# whole), until the test writes to its FIFO; 72983 bytes are left
# hold_client NAME MODE: MODE send (the body, then the answer's status in NAME.out) or drop
# (the connection closed without the body); NAME.held appears once custos holds the body.
hold_client() {
	mkfifo "$W/$1.go"
	timeout 60 python3 - "$P_EG" "$P_D" "$W/$1" "$2" <<'EOP' &
import socket, sys
px, pd, base, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
s = socket.create_connection(("127.0.0.1", px))
s.sendall(("POST http://localhost:%s/up-redact/held-%s HTTP/1.1\r\nHost: localhost:%s\r\n"
           "Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 60000\r\n"
           "Expect: 100-continue\r\n\r\n"
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
s.sendall(open(base.rsplit("/", 1)[0] + "/mp60k.bin", "rb").read())
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
mpbody 60000 mp60k.bin c
hold_client a send
check "holder a: custos took its body (100 Continue)" grep -q ' 100 ' a.held
code=$(post second-len held.bin)
check "max_held 849KiB: a second 60000-byte body (Content-Length, 184098 with its copy) refused with 503 (code $code)" \
	bash -c "[ $code = 503 ] && grep -qi '^x-custos-reason: .*egress.inspect.max_held' hdr.txt"
ev=$(event /up-redact/second-len)
check "max_held: the refusal audited as error, the reason naming max_held" \
	bash -c "echo '$ev' | grep -q '\"decision\":\"error\"' && echo '$ev' | grep -q 'egress.inspect.max_held' && echo '$ev' | grep -q '\"status\":503'"
code=$(post second-chunked held.bin -H 'Transfer-Encoding: chunked')
check "max_held: a second body sent chunked refused with 503 (its 65536 bytes fit, its working copy does not) (code $code)" test "$code" = 503
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
# the multipart body of max_body bytes needs 868361 bytes of the 869376 again
code=$(mppost mp-last mp64k.bin)
check "max_held: all released after the calls: a multipart body needing 868361 of 869376 bytes passes (code $code)" \
	test "$code" = 200
check "the source never saw a refused body" \
	bash -c "! grep -q -e second- -e during-b -e over- sink.txt"
if [ "$HOOKS" = 1 ]; then
	# every call has ended (each one's event is in): the last count logged is 0
	held_log() { grep -o 'test hook: [^ ]* ended: [0-9]* bytes held' up.log; }
	n=$(held_log | wc -l)
	last=$(held_log | tail -1)
	check "test hook: the bytes held for inspection back to 0 after all calls ($n logged, last: $last)" \
		bash -c "[ $n -ge 10 ] && echo '$last' | grep -q 'ended: 0 bytes held'"
fi

eg_stop
if [ $FAILS -ne 0 ]; then
	echo "--- custos log (tail)"; grep -v '"egress.request' up.log | tail -30 | cut -c1-400
	echo "--- egress events"; eg_events | cut -c1-600
	echo "$FAILS check(s) failed"; exit 1
fi
echo "all egress held-body checks passed"
