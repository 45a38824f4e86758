#!/usr/bin/env bash
# Egress inspection of what is encoded (docs/EGRESS.md "Content inspection"), end to end: the
# real custos binary (custos up), curl through the egress listener, a loopback data source
# that records what it receives. multipart request bodies (curl -F; multipart/related, nested, encrypted refused) parsed part by
# part: base64 and quoted-printable parts decoded and masked, encoded again as sent, a JSON
# part on its decoded values, a value in a file name, a text file labelled octet-stream; a
# deny in a base64 part (403, the source sees nothing), a binary part (415), malformed bodies
# and a missing boundary (400); chunked. The query string of request URLs percent-decoded and
# inspected under the same request: rules (redact rewrites it, deny 403, invalid
# percent-encoding 400; the audit never holds the value). Form responses decoded (masks
# percent-encoded, deny 403, invalid 502) and multipart responses parsed part by part. custos config check, custos up and a SIGHUP reload
# refuse egress.inspect.max_held below 13 x max_body + 16393 bytes (at its line and column). With
# CUSTOS_EGRESS_FORWARD=threads set by the caller (egress_inspect_decode_threads.sh) the same
# checks run on the thread path.
set -u
. "${CUSTOS_SRC:?}/tests/integration/egress_lib.bash"
eg_init egdec curl python3
P_IN=$(port); P_EG=$(port)

cd "$W"
# The data source: binds port 0 (its port in src.port); every request's body, target and
# framing recorded in got-NAME.* (NAME: the last path segment); /form* answers with a form.
cat >src.py <<'EOP'
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
W = sys.argv[1]
FORMS = {
    "form": b"to=jane.doe%40example.com&card=%34111+1111+1111+1111&n=1",
    "form-key": b"k=AKIA%49OSFODNN7EXAMPLE&n=1",
    "form-bad": b"a=%zz&b=jane.doe%40example.com",
    "form-clean": b"a=b&c=d%20e+f",
}
import base64
def mp(*parts):
    return b"".join(b"--r0\r\n" + p for p in parts) + b"--r0--\r\n"
MPS = {
    "mp-resp": mp(b"Content-Type: application/json\r\n\r\n{\"owner\":\"jane.doe@example.com\"}\r\n",
                  b"Content-Transfer-Encoding: base64\r\n\r\n"
                  + base64.b64encode(b"card 4111 1111 1111 1111 on file\n") + b"\r\n"),
    "mp-resp-key": mp(b"Content-Transfer-Encoding: base64\r\n\r\n"
                      + base64.b64encode(b"key AKIAIOSFODNN7EXAMPLE\n") + b"\r\n"),
    "mp-resp-bad": b"--r0\r\n\r\njane.doe@example.com\r\n--r0junk\r\n",
    "mp-resp-clean": mp(b"\r\nhello\r\n", b"Content-Type: text/plain\r\n\r\nworld\r\n"),
}
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                n = int(self.rfile.readline().split(b";")[0], 16)
                if n == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return body
                body += self.rfile.read(n)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))
    def record(self, body):
        name = self.path.split("?")[0].rsplit("/", 1)[1]
        open("%s/got-%s.body" % (W, name), "wb").write(body)
        open("%s/got-%s.meta" % (W, name), "w").write(json.dumps({
            "target": self.path, "cl": self.headers.get("Content-Length"),
            "te": self.headers.get("Transfer-Encoding"), "ct": self.headers.get("Content-Type")}))
        return name
    def send(self, body, ctype="text/plain"):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        name = self.record(b"")
        if name in FORMS:
            self.send(FORMS[name], "application/x-www-form-urlencoded")
        elif name in MPS:
            self.send(MPS[name], "multipart/mixed; boundary=r0")
        elif name == "mp-resp-enc":
            self.send(b"--r0\r\n\r\nVersion: 1\r\n--r0--\r\n",
                      'multipart/encrypted; protocol="application/pgp-encrypted"; boundary=r0')
        else:
            self.send(("target %s\n" % self.path).encode())
    def do_POST(self):
        body = self.read_body()
        self.record(body)
        self.send(b"posted %d\n" % len(body))
s = ThreadingHTTPServer(("127.0.0.1", 0), H)
open(W + "/src.port.tmp", "w").write(str(s.server_address[1]))
import os; os.rename(W + "/src.port.tmp", W + "/src.port")
s.serve_forever()
EOP
python3 src.py "$W" & PIDS+=($!)
P_D=$(eg_port_file "$W/src.port") || exit 1

SRCS=$(for s in up rd pl; do eg_source_yaml "$s" "http://localhost:$P_D/$s/" internal; done)
eg_m1_conf info "$SRCS" "$EG_TIMEOUTS"
eg_m1_policy <<EOY
  up: { url: "http://localhost:$P_D/up/", classification: internal }
  rd: { url: "http://localhost:$P_D/rd/", classification: internal }
  pl: { url: "http://localhost:$P_D/pl/", classification: internal }
rules:
  - id: upload
    effect: allow
    when: { direction: egress, data: up, method: [GET, POST] }
    inspect:
      request: { email: redact, payment_card: redact, aws_access_key: deny }
  - id: read
    effect: allow
    when: { direction: egress, data: rd, method: GET }
    inspect:
      response: { email: redact, payment_card: redact, aws_access_key: deny }
  - id: plain
    effect: allow
    when: { direction: egress, data: pl, method: GET }
EOY
chmod 600 custos.yaml policy.yaml

# --- egress.inspect.max_held below what one body at max_body needs (a multipart one, the
# most of any type): refused up front
sed 's/^  timeouts: .*/&\n  inspect:\n    max_body: 1MiB\n    max_held: 5MiB/' custos.yaml >small.yaml
chmod 600 small.yaml
out=$("$BIN" config check small.yaml 2>&1); rc=$?
check "config check: max_held 5MiB < 13 x max_body 1MiB + 16393 refused (exit $rc) at its line:col, naming both and the minimum" \
	bash -c "[ $rc != 0 ] && grep -q \"small.yaml:18:15: error: 'egress.inspect.max_held' (5242880 bytes) is less than 13 x 'egress.inspect.max_body' (1048576 bytes) + 16393 bytes = 13647881 bytes\" <<<\"\$1\"" _ "$out"
# (bounded: a custos that accepted the config would serve until stopped)
timeout 60 "$BIN" up -c small.yaml >small.log 2>&1; rc=$?
check "custos up refuses it too (exit $rc)" \
	bash -c "[ $rc != 0 ] && [ $rc != 124 ] && grep -q 'egress.inspect.max_held' small.log"
sed -i 's/max_held: 5MiB/max_held: 13647880/' small.yaml
out=$("$BIN" config check small.yaml 2>&1); rc=$?
check "config check: max_held one byte short (13647880) refused (exit $rc)" \
	bash -c "[ $rc != 0 ] && grep -q 'max_held to at least 13647881' <<<\"\$1\"" _ "$out"
sed -i 's/max_held: 13647880/max_held: 13647881/' small.yaml
out=$("$BIN" config check small.yaml 2>&1); rc=$?
check "config check: max_held at exactly the minimum (13647881) passes (exit $rc)" test "$rc" = 0
out=$("$BIN" config check "$SRC/conf/custos.example.yaml" 2>&1 | grep max_held)
check "config check: the example config's inspect settings pass" test -z "$out"

eg_start "$P_D"

has() { case "$1" in *"$2"*) return 0 ;; *) return 1 ;; esac; }
MAIL=jane.doe@example.com AKEY=AKIAIOSFODNN7EXAMPLE
# mpost NAME CURL-ARGS...: a multipart POST to /up/NAME; the status code, headers in hdr.txt
mpost() {
	local n=$1
	shift
	curl -s -o body.txt -D hdr.txt -w '%{http_code}' -x "$PX" "$@" "http://localhost:$P_D/up/$n"
}
# parts NAME: what the source received for NAME, parsed by Python's MIME parser: one line per
# part, name=decoded content (repr); "BAD" when it is not well-formed multipart
parts() {
	python3 - "$W/got-$1" <<'EOP'
import json, sys
from email import policy
from email.parser import BytesParser
base = sys.argv[1]
meta = json.load(open(base + ".meta"))
body = open(base + ".body", "rb").read()
if meta["cl"] is None or int(meta["cl"]) != len(body):
    print("BAD length", meta["cl"], len(body)); sys.exit(0)
msg = BytesParser(policy=policy.HTTP).parsebytes(b"Content-Type: " + meta["ct"].encode() + b"\r\n\r\n" + body)
if not msg.is_multipart() or msg.defects:
    print("BAD", msg.defects); sys.exit(0)
for p in msg.iter_parts():
    print("%s=%r" % (p.get_param("name", header="content-disposition"), p.get_payload(decode=True)))
EOP
}
received() { [ -e "$W/got-$1.meta" ]; }

printf 'note for %s about the card\n' "$MAIL" >mail.txt
printf 'card 4111 1111 1111 1111 on file\n' >card.txt

# --- multipart: a base64 part (curl's encoder) decoded, masked, encoded again
code=$(mpost mp-b64 -F "n=1" -F "doc=@mail.txt;encoder=base64")
got=$(parts mp-b64)
check "multipart base64: 200 (code $code), the source got the mask in the decoded part, valid multipart" \
	bash -c "[ $code = 200 ] && grep -qxF \"doc=b'note for [REDACTED:EMAIL] about the card\\\\n'\" <<<\"\$1\" && grep -qxF \"n=b'1'\" <<<\"\$1\"" _ "$got"
check "multipart base64: the part is still base64 on the wire" grep -q 'Content-Transfer-Encoding: base64' got-mp-b64.body
ev=$(eg_event /up/mp-b64)
check "multipart base64: audited request:redact with the finding" \
	bash -c "grep -q 'request:redact' <<<\"\$1\" && grep -q '\"type\":\"email\",\"count\":1' <<<\"\$1\"" _ "$ev"
# quoted-printable
printf 'mail: %s\n' "jane.doe@example.com" >qp.txt
code=$(mpost mp-qp -F "doc=@qp.txt;encoder=quoted-printable" -F "doc2=@card.txt;encoder=quoted-printable")
got=$(parts mp-qp)
check "multipart quoted-printable: 200 (code $code), masks in the decoded parts" \
	bash -c "[ $code = 200 ] && grep -qxF \"doc=b'mail: [REDACTED:EMAIL]\\\\n'\" <<<\"\$1\" && grep -qxF \"doc2=b'card [REDACTED:PAYMENT_CARD] on file\\\\n'\" <<<\"\$1\"" _ "$got"
# a value written =40 in quoted-printable (the old code inspected the raw bytes: missed)
python3 - <<'EOP' >qp40.body
import sys
sys.stdout.buffer.write(b"--b0\r\nContent-Disposition: form-data; name=\"q\"\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\nto jane.doe=40exam=\r\nple.com\r\n--b0--\r\n")
EOP
code=$(mpost mp-qp40 -H 'Content-Type: multipart/form-data; boundary=b0' --data-binary @qp40.body)
got=$(parts mp-qp40)
check "multipart quoted-printable =40 and a soft line break: decoded and masked (code $code)" \
	bash -c "[ $code = 200 ] && grep -qxF \"q=b'to [REDACTED:EMAIL]'\" <<<\"\$1\"" _ "$got"
# a multipart body of exactly max_body bytes (the default 8 MiB), which counts 13 x 8 MiB +
# 16393 bytes with its working copies: the default max_held (128 MiB, what config check asks
# for at least) holds it, so it is inspected and masked, not refused with 503
python3 - <<'EOP' >mp8m.body
import sys
pre = b"--b0\r\nContent-Disposition: form-data; name=\"q\"\r\n\r\nto jane.doe@example.com "
post = b"\r\n--b0--\r\n"
sys.stdout.buffer.write(pre + b"p" * ((8 << 20) - len(pre) - len(post)) + post)
EOP
code=$(mpost mp-max -H 'Content-Type: multipart/form-data; boundary=b0' --data-binary @mp8m.body)
check "multipart body of max_body (8388608 bytes) with the default max_held: 200 (code $code), masked (4 bytes shorter)" \
	bash -c "[ $code = 200 ] && [ \$(stat -c %s got-mp-max.body) = 8388604 ] && grep -qF 'to [REDACTED:EMAIL] ppp' got-mp-max.body && ! grep -q jane got-mp-max.body"
# a JSON part on its decoded values; a value in a file name; a text file as octet-stream
printf '{"m":"jane.doe\\u0040example.com","c":4111111111111111}' >part.json
code=$(mpost mp-json -F "meta=@part.json;type=application/json" \
	-F "f=@card.txt;type=application/octet-stream" -F "g=@mail.txt;filename=$MAIL")
got=$(parts mp-json)
check "multipart JSON part (escaped e-mail, card as a number), octet-stream text, file name: masked (code $code)" \
	bash -c "[ $code = 200 ] && grep -qxF \"meta=b'{\\\"m\\\":\\\"[REDACTED:EMAIL]\\\",\\\"c\\\":\\\"[REDACTED:PAYMENT_CARD]\\\"}'\" <<<\"\$1\" && grep -qxF \"f=b'card [REDACTED:PAYMENT_CARD] on file\\\\n'\" <<<\"\$1\" && ! grep -q '$MAIL' got-mp-json.body && grep -q 'filename=\"\[REDACTED:EMAIL\]\"' got-mp-json.body" _ "$got"
# chunked, nothing to mask: byte for byte, sent with a Content-Length
code=$(mpost mp-chunked -H 'Transfer-Encoding: chunked' -F "a=hello" -F "b=@card.txt;encoder=base64;type=text/plain" -F "c=plain text")
got=$(parts mp-chunked)
check "multipart sent chunked: 200 (code $code), forwarded with a Content-Length, the base64 card masked, the rest as sent" \
	bash -c "[ $code = 200 ] && python3 -c 'import json,sys; m=json.load(open(\"got-mp-chunked.meta\")); sys.exit(not (m[\"cl\"] and not m[\"te\"]))' && grep -qxF \"a=b'hello'\" <<<\"\$1\" && grep -qxF \"b=b'card [REDACTED:PAYMENT_CARD] on file\\\\n'\" <<<\"\$1\" && grep -qxF \"c=b'plain text'\" <<<\"\$1\"" _ "$got"
# deny in a base64 part: 403, the source sees nothing
printf 'key %s\n' "$AKEY" >key.txt
code=$(mpost mp-deny -F "n=1" -F "doc=@key.txt;encoder=base64")
check "multipart deny behind base64: 403 (code $code), the reason names the detector, the source saw nothing" \
	bash -c "[ $code = 403 ] && grep -qi '^x-custos-reason: request body denied by content inspection: aws_access_key' hdr.txt && ! [ -e got-mp-deny.meta ]"
ev=$(eg_event /up/mp-deny)
check "multipart deny: audited deny, never the value" \
	bash -c "grep -q '\"decision\":\"deny\"' <<<\"\$1\" && ! grep -q AKIA <<<\"\$1\"" _ "$ev"
# a part custos cannot read: refused (fail closed)
printf '\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x01' >img.png
code=$(mpost mp-bin -F "n=1" -F "img=@img.png;type=image/png")
check "multipart binary part (image/png): 415 (code $code), the reason says it is not text, the source saw nothing" \
	bash -c "[ $code = 415 ] && grep -qi '^x-custos-reason: .*part 2 (image/png) is not text' hdr.txt && ! [ -e got-mp-bin.meta ]"
# malformed: 400, never inspected as raw text
printf -- '--b0\r\nContent-Disposition: form-data; name="a"\r\n\r\nx\r\n--b0junk\r\n\r\nkey %s\r\n--b0--\r\n' "$AKEY" >bad1.body
code=$(mpost mp-bad1 -H 'Content-Type: multipart/form-data; boundary=b0' --data-binary @bad1.body)
check "multipart: a delimiter followed by other bytes: 400 (code $code), the source saw nothing" \
	bash -c "[ $code = 400 ] && grep -qi '^x-custos-reason: request body under multipart/form-data is malformed' hdr.txt && ! [ -e got-mp-bad1.meta ]"
printf -- '--b0\r\nContent-Disposition: form-data; name="a"\r\n\r\nno end' >bad2.body
code=$(mpost mp-bad2 -H 'Content-Type: multipart/form-data; boundary=b0' --data-binary @bad2.body)
check "multipart: no closing delimiter: 400 (code $code)" test "$code" = 400
code=$(mpost mp-bad3 -H 'Content-Type: multipart/form-data' --data-binary @bad2.body)
check "multipart: no boundary parameter: 400 before the body (code $code)" \
	bash -c "[ $code = 400 ] && grep -qi '^x-custos-reason: .*without one valid boundary' hdr.txt && ! [ -e got-mp-bad3.meta ]"

# --- other multipart types (RFC 2046) by the same rules: a media upload's multipart/related
# (JSON metadata, a base64 text part), a multipart/mixed part inside a form, multipart/encrypted
python3 - <<'EOP'
import base64
card = open("card.txt", "rb").read()
open("rel.body", "wb").write(
    b"--rel0\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
    b'{"owner":"jane.doe@example.com","title":"notes"}\r\n'
    b"--rel0\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.b64encode(card) + b"\r\n--rel0--\r\n")
open("nest.body", "wb").write(
    b'--f0\r\nContent-Disposition: form-data; name="n"\r\n\r\n1\r\n'
    b'--f0\r\nContent-Disposition: form-data; name="att"\r\n'
    b"Content-Type: multipart/mixed; boundary=m0\r\n\r\n"
    b"--m0\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
    b"--m0\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + base64.b64encode(b"key AKIAIOSFODNN7EXAMPLE\n") + b"\r\n--m0--\r\n--f0--\r\n")
open("enc.body", "wb").write(
    b"--e0\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n"
    b"--e0\r\nContent-Type: application/octet-stream\r\n\r\n"
    b"-----BEGIN PGP MESSAGE-----\r\nhQEMA0x\r\n-----END PGP MESSAGE-----\r\n--e0--\r\n")
EOP
code=$(mpost mp-rel -H 'Content-Type: multipart/related; boundary=rel0' --data-binary @rel.body)
got=$(parts mp-rel)
check "multipart/related: 200 (code $code), the JSON part's e-mail and the base64 part's card masked, valid multipart" \
	bash -c "[ $code = 200 ] && grep -qxF \"None=b'{\\\"owner\\\":\\\"[REDACTED:EMAIL]\\\",\\\"title\\\":\\\"notes\\\"}'\" <<<\"\$1\" && grep -qxF \"None=b'card [REDACTED:PAYMENT_CARD] on file\\\\n'\" <<<\"\$1\" && ! grep -q '$MAIL' got-mp-rel.body" _ "$got"
code=$(mpost mp-nest -H 'Content-Type: multipart/form-data; boundary=f0' --data-binary @nest.body)
check "multipart/mixed inside a form part: the key in its base64 part denied, 403 (code $code), the source saw nothing" \
	bash -c "[ $code = 403 ] && grep -qi '^x-custos-reason: request body denied by content inspection: aws_access_key' hdr.txt && ! [ -e got-mp-nest.meta ]"
code=$(mpost mp-enc -H 'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary=e0' --data-binary @enc.body)
check "multipart/encrypted: 415 before the body (code $code), the source saw nothing" \
	bash -c "[ $code = 415 ] && grep -qi '^x-custos-reason: request body under multipart/encrypted cannot be inspected' hdr.txt && ! [ -e got-mp-enc.meta ]"
code=$(mpost mp-relbad -H 'Content-Type: multipart/related; boundary=rel0' --data-binary @bad2.body)
check "multipart/related malformed: 400 naming its type (code $code)" \
	bash -c "[ $code = 400 ] && grep -qi '^x-custos-reason: request body under multipart/related is' hdr.txt && ! [ -e got-mp-relbad.meta ]"

# --- the query string: percent-decoded and inspected under the request: rules
got=$(curl -s -x "$PX" "http://localhost:$P_D/up/q-red?to=jane.doe%40example.com&c=4111+1111+1111+1111&n=1")
check "query redact: the source got the masks, percent-encoded, the other fields as sent ($got)" \
	test "$got" = "target /up/q-red?to=%5BREDACTED%3AEMAIL%5D&c=%5BREDACTED%3APAYMENT_CARD%5D&n=1"
# audit.query (default names): the audited path keeps the parameter names, each value the
# marker U+2026 (raw or written \u2026 in the JSON)
MARK=$(printf '\xe2\x80\xa6')
ev=$(eg_event /up/q-red | sed 's/\\u2026/'"$MARK"'/g')
check "query redact: audited with the query's names and the findings, never a value" \
	bash -c "grep -qF \"q-red?to=\$2&c=\$2&n=\$2\" <<<\"\$1\" && grep -q 'request:redact' <<<\"\$1\" && ! grep -q 'jane.doe' <<<\"\$1\"" _ "$ev" "$MARK"
code=$(curl -s -o body.txt -D hdr.txt -w '%{http_code}' -x "$PX" "http://localhost:$P_D/up/q-deny?k=AKIA%49OSFODNN7EXAMPLE")
check "query deny behind %49: 403 (code $code), the source saw nothing" \
	bash -c "[ $code = 403 ] && grep -qi '^x-custos-reason: request query string denied by content inspection: aws_access_key' hdr.txt && ! [ -e got-q-deny.meta ]"
ev=$(eg_event /up/q-deny)
check "query deny: audited deny, the path without its query" \
	bash -c "grep -q '\"decision\":\"deny\"' <<<\"\$1\" && grep -q '\"path\":\"/up/q-deny\"' <<<\"\$1\" && ! grep -q 'AKIA' <<<\"\$1\"" _ "$ev"
code=$(curl -s -o body.txt -D hdr.txt -w '%{http_code}' -x "$PX" "http://localhost:$P_D/up/q-bad?a=%zz")
check "query with invalid percent-encoding: 400 (code $code), the source saw nothing" \
	bash -c "[ $code = 400 ] && ! [ -e got-q-bad.meta ]"
got=$(curl -s -x "$PX" "http://localhost:$P_D/up/q-clean?a=b%20c&d=e+f")
check "query with nothing found: as sent ($got)" test "$got" = "target /up/q-clean?a=b%20c&d=e+f"
code=$(mpost q-post?to=jane.doe%40example.com -F "n=1")
check "query of a POST masked too (code $code)" \
	bash -c "[ $code = 200 ] && grep -q 'q-post?to=%5BREDACTED%3AEMAIL%5D' got-q-post.meta"
got=$(curl -s -x "$PX" "http://localhost:$P_D/pl/q-plain?to=john.roe%40example.org")
check "query under a rule without request: inspection: as sent" \
	test "$got" = "target /pl/q-plain?to=john.roe%40example.org"

# --- form responses: decoded for inspection like request bodies
got=$(curl -s -x "$PX" -D hdr.txt "http://localhost:$P_D/rd/form")
check "form response: masks percent-encoded over the encoded value ($got)" \
	test "$got" = "to=%5BREDACTED%3AEMAIL%5D&card=%5BREDACTED%3APAYMENT_CARD%5D&n=1"
code=$(curl -s -o body.txt -D hdr.txt -w '%{http_code}' -x "$PX" "http://localhost:$P_D/rd/form-key")
check "form response deny behind %49: 403 (code $code), nothing of it passed" \
	bash -c "[ $code = 403 ] && ! grep -q AKIA body.txt && grep -qi '^x-custos-reason: response denied by content inspection: aws_access_key' hdr.txt"
code=$(curl -s -o body.txt -D hdr.txt -w '%{http_code}' -x "$PX" "http://localhost:$P_D/rd/form-bad")
check "form response with invalid percent-encoding: 502 (code $code), nothing of it passed" \
	bash -c "[ $code = 502 ] && ! grep -q jane body.txt && grep -qi '^x-custos-reason: form response is not valid percent-encoding' hdr.txt"
got=$(curl -s -x "$PX" "http://localhost:$P_D/rd/form-clean")
check "form response with nothing found: as sent" test "$got" = "a=b&c=d%20e+f"

# --- multipart responses: parsed part by part like request bodies
curl -s -o mpr.body -D hdr.txt -x "$PX" "http://localhost:$P_D/rd/mp-resp"
got=$(python3 - <<'EOP'
import base64
from email import policy
from email.parser import BytesParser
body = open("mpr.body", "rb").read()
msg = BytesParser(policy=policy.HTTP).parsebytes(b"Content-Type: multipart/mixed; boundary=r0\r\n\r\n" + body)
print("BAD" if msg.defects else "")
for p in msg.iter_parts():
    print(repr(p.get_payload(decode=True)))
EOP
)
check "multipart response: the JSON part's e-mail and the base64 part's card masked, valid multipart" \
	bash -c "grep -qxF \"b'{\\\"owner\\\":\\\"[REDACTED:EMAIL]\\\"}'\" <<<\"\$1\" && grep -qxF \"b'card [REDACTED:PAYMENT_CARD] on file\\\\n'\" <<<\"\$1\" && ! grep -q BAD <<<\"\$1\" && ! grep -q jane mpr.body" _ "$got"
code=$(curl -s -o body.txt -D hdr.txt -w '%{http_code}' -x "$PX" "http://localhost:$P_D/rd/mp-resp-key")
check "multipart response deny behind base64: 403 (code $code), nothing of it passed" \
	bash -c "[ $code = 403 ] && ! grep -q QUtJQ body.txt && grep -qi '^x-custos-reason: response denied by content inspection: aws_access_key' hdr.txt"
code=$(curl -s -o body.txt -D hdr.txt -w '%{http_code}' -x "$PX" "http://localhost:$P_D/rd/mp-resp-bad")
check "malformed multipart response: 502 (code $code), nothing of it passed" \
	bash -c "[ $code = 502 ] && ! grep -q jane body.txt && grep -qi '^x-custos-reason: multipart/mixed response is malformed' hdr.txt"
code=$(curl -s -o body.txt -D hdr.txt -w '%{http_code}' -x "$PX" "http://localhost:$P_D/rd/mp-resp-enc")
check "multipart/encrypted response: 502 (code $code), refused as not inspectable" \
	bash -c "[ $code = 502 ] && ! grep -q Version body.txt && grep -qi '^x-custos-reason: response under multipart/encrypted not inspected' hdr.txt"
got=$(curl -s -x "$PX" "http://localhost:$P_D/rd/mp-resp-clean" | od -An -c | tr -s ' \n' ' ')
want=$(printf -- '--r0\r\n\r\nhello\r\n--r0\r\nContent-Type: text/plain\r\n\r\nworld\r\n--r0--\r\n' | od -An -c | tr -s ' \n' ' ')
check "multipart response with nothing found: byte for byte" test "$got" = "$want"

# --- a reload (SIGHUP) to a config whose max_held is too small is refused, the running one
# keeps serving
cp custos.yaml good.yaml
sed 's/^  timeouts: .*/&\n  inspect: { max_body: 1MiB, max_held: 5MiB }/' good.yaml >custos.yaml
kill -HUP $UP
reload_refused() { grep -q "is less than 13 x 'egress.inspect.max_body' (1048576 bytes) + 16393 bytes" up.log; }
eg_wait 60 reload_refused
check "SIGHUP to max_held 5MiB with max_body 1MiB: the reload refused with the error" reload_refused
got=$(curl -s -x "$PX" "http://localhost:$P_D/up/q-after?to=jane.doe%40example.com")
check "after the refused reload: custos still serves and inspects ($got)" \
	test "$got" = "target /up/q-after?to=%5BREDACTED%3AEMAIL%5D"
cp good.yaml custos.yaml

eg_stop
check "the audit trail never holds a value" bash -c "! { cat $W/audit/* up.log 2>/dev/null | grep -q -e '$MAIL' -e '$AKEY' -e 'jane.doe%40' -e 'AKIA%49'; }"
if [ $FAILS -ne 0 ]; then
	echo "--- custos log (tail)"; grep -v '"egress.request' up.log | tail -30 | cut -c1-400
	echo "--- egress events"; eg_events | cut -c1-600
	echo "$FAILS check(s) failed"; exit 1
fi
echo "all egress decode checks passed"
