#!/usr/bin/env bash
# Multipart request bodies through the ingress proxy (docs/PROXY.md, step 5 "Body" and
# "Content inspection"), with curl -F and a recording upstream (mp_upstream below, a TEST
# FIXTURE standing in for a model server's /v1/audio/transcriptions and /v1/files): a
# multipart upload on an OpenAI path is routed and decided by its form-data field `model`
# (two fields, an encoded one, a malformed body or a second Content-Type field refused with
# 400 before any upstream sees it) and its field `stream` read as strictly (true: in the event
# as a JSON body's stream, the server's SSE usage recorded; maybe, or two: 400); with prompts inspected each part is read by the strict
# multipart rules (a text file's e-mail masked and the body still valid multipart for the
# server's parser, a key behind base64 denied with 403, a binary audio part refused with 415)
# and the audit trail has the model and findings, never the values; under a rule without
# inspection the same binary part passes byte for byte.
. "$(dirname "$0")/proxy_lib.bash"
command -v python3 >/dev/null || skip "python3 not installed"

# mp_upstream NAME: records each request's body (NAME.N.body) and Content-Type (NAME.N.ct),
# answers {"text":"ok NAME"}; its port in NAME.port.
cat >"$work/mp_upstream.py" <<'EOP'
import json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
W, NAME = sys.argv[1], sys.argv[2]
n = [0]
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        n[0] += 1
        open("%s/%s.%d.ct" % (W, NAME, n[0]), "w").write(self.headers.get("Content-Type", ""))
        open("%s/%s.%d.body" % (W, NAME, n[0]), "wb").write(body)
        out, ct = json.dumps({"text": "ok " + NAME}).encode(), "application/json"
        if b'name="stream"\r\n\r\ntrue\r\n' in body:  # a streamed transcription
            out, ct = (b'data: {"type":"transcript.text.delta","delta":"ok"}\n\n'
                       b'data: {"type":"transcript.text.done","text":"ok","usage":{"type":"tokens",'
                       b'"input_tokens":14,"output_tokens":3,"total_tokens":17}}\n\n'), "text/event-stream"
        self.send_response(200)
        self.send_header("Content-Type", ct)
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
s = ThreadingHTTPServer(("127.0.0.1", 0), H)
open("%s/%s.port.tmp" % (W, NAME), "w").write(str(s.server_address[1]))
os.rename("%s/%s.port.tmp" % (W, NAME), "%s/%s.port" % (W, NAME))
s.serve_forever()
EOP
for u in up1 up2; do
	python3 "$work/mp_upstream.py" "$work" $u 2>"$work/$u.err" &
	pids+=($!)
	wait_until 60 test -s "$work/$u.port" || skip "upstream $u did not start: $(cat "$work/$u.err")"
done
up1=$(cat "$work/up1.port") up2=$(cat "$work/up2.port")

make_pki
cat >"$work/policy.yaml" <<POL
version: 1
principals:
  alice: { match: { api_key_sha256: "$(sha256hex $ALICE)" } }
models:
  test-model: { isolation: none }
  raw-model: { isolation: none }
  other-model: { isolation: none }
rules:
  - id: transcribe-inspected
    effect: allow
    when:
      direction: ingress
      principal: alice
      route: "POST /v1/audio/transcriptions"
      model: test-model
    inspect:
      prompt: { email: redact, aws_access_key: deny }
  - id: transcribe-raw
    effect: allow
    when:
      direction: ingress
      principal: alice
      route: "POST /v1/audio/transcriptions"
      model: raw-model
    limits: { tokens_per_day: 1000000 }
POL
chmod 644 "$work/policy.yaml"
EXTRA_MODELS="  - id: raw-model
    upstream:
      url: \"http://127.0.0.1:$up2/\"
  - id: other-model
    upstream:
      url: \"http://127.0.0.1:$up2/\"" write_config "$work/custos.yaml" "$up1"
start_custos "$work/custos.yaml"
url="http://127.0.0.1:$PORT2/v1/audio/transcriptions"

rid() { sed -n 's/^[Xx]-[Rr]equest-[Ii]d: *\([0-9a-f]*\).*/\1/p' "$1" | tr -d '\r'; }
audit_of() {
	wait_until 30 audit_grep "\"request_id\":\"$1\"" >/dev/null ||
		{ echo "no audit event for request $1 after 30 s" >&2; return 1; }
	audit_grep "\"request_id\":\"$1\""
}
# post NAME CURL-ARGS...: the status code; headers in $work/NAME.hdr, body in $work/NAME.out
post() {
	local n=$1
	shift
	curl -sS -o "$work/$n.out" -D "$work/$n.hdr" -w '%{http_code}' -H "Authorization: Bearer $ALICE" "$@" "$url"
}
count() { find "$work" -maxdepth 1 -name "$1.*.body" | wc -l; }
# parts FILE-BASE: the parts the upstream received, by Python's MIME parser: name=content
parts() {
	python3 - "$1" <<'EOP'
import sys
from email import policy
from email.parser import BytesParser
b = sys.argv[1]
ct = open(b + ".ct").read().encode()
msg = BytesParser(policy=policy.HTTP).parsebytes(b"Content-Type: " + ct + b"\r\n\r\n" + open(b + ".body", "rb").read())
if not msg.is_multipart() or msg.defects:
    print("BAD", msg.defects); sys.exit(0)
for p in msg.iter_parts():
    print("%s=%r" % (p.get_param("name", header="content-disposition"), p.get_payload(decode=True)))
EOP
}

cd "$work" || exit 1
printf 'call jane.doe@example.com about it\n' >notes.txt
head -c 4096 /dev/urandom >audio.wav
printf 'key AKIAIOSFODNN7EXAMPLE\n' >key.txt

# (1) routed by the model field, the text part's e-mail masked, still valid multipart
code=$(post t1 -F model=test-model -F "file=@notes.txt;type=text/plain" -F language=en)
check "upload to test-model: status" "$code" 200
check "upload to test-model: answered by its upstream" "$(cat t1.out)" '{"text": "ok up1"}'
got=$(parts "$work/up1.1")
check "the upstream's MIME parser reads the masked file part" \
	"$(grep '^file=' <<<"$got")" "file=b'call [REDACTED:EMAIL] about it\\n'"
check "the model and language fields as sent" \
	"$(grep -E '^(model|language)=' <<<"$got" | tr '\n' ' ')" "model=b'test-model' language=b'en' "
check "the value never reached the upstream" "$(grep -c jane up1.1.body)" 0
ev=$(audit_of "$(rid t1.hdr)")
check "audited with the model and the finding" \
	"$(grep -c '"model":"test-model"' <<<"$ev")$(grep -c 'email' <<<"$ev")$(grep -c jane <<<"$ev")" "110"

# (2) another model, another upstream; its rule does not inspect: binary audio byte for byte
code=$(post t2 -F model=raw-model -F "file=@audio.wav;type=audio/wav")
check "upload to raw-model: status, its own upstream" "$code $(cat t2.out)" '200 {"text": "ok up2"}'
python3 - "$work/up2.1" <<'EOP' && ok "the binary part reached raw-model's upstream byte for byte" || fail "binary part changed"
import sys
from email import policy
from email.parser import BytesParser
b = sys.argv[1]
msg = BytesParser(policy=policy.HTTP).parsebytes(b"Content-Type: " + open(b + ".ct").read().encode() + b"\r\n\r\n" + open(b + ".body", "rb").read())
f = [p for p in msg.iter_parts() if p.get_param("name", header="content-disposition") == "file"][0]
sys.exit(f.get_payload(decode=True) != open("audio.wav", "rb").read())
EOP

# (2b) the form field stream (OpenAI's transcriptions): read as strictly as model, in the
# event as a JSON body's stream is; the body is not rewritten (no stream_options added) and
# the usage of the server's last SSE event (transcript.text.done) is what is recorded
code=$(post t2s -F model=raw-model -F "file=@audio.wav;type=audio/wav" -F stream=true)
check "a streamed transcription: status, SSE from its upstream" \
	"$code $(grep -c 'transcript.text.done' t2s.out)" "200 1"
ev=$(audit_of "$(rid t2s.hdr)")
check "stream=true: the event says stream, with the usage of the last SSE event" \
	"$(grep -c '"stream":true' <<<"$ev")$(grep -c '"prompt_tokens":14,"completion_tokens":3' <<<"$ev")$(grep -c tokens_estimated <<<"$ev")" "110"
check "the streamed upload reached its upstream unchanged (no stream_options)" \
	"$(grep -c stream_options up2.2.body) $(parts "$work/up2.2" | grep -E '^(model|stream)=' | tr '\n' ' ')" \
	"0 model=b'raw-model' stream=b'true' "
code=$(post t2f -F model=raw-model -F stream=false -F "file=@audio.wav;type=audio/wav")
ev=$(audit_of "$(rid t2f.hdr)")
check "stream=false: 200, no stream in the event" "$code $(grep -c '"stream"' <<<"$ev")" "200 0"

# (3) refused before any upstream sees them
n1=$(count up1) n2=$(count up2)
code=$(post t3 -F model=other-model -F "file=@notes.txt")
check "a model no rule allows (other-model): 403 by policy" "$code" 403
code=$(post t4 -F model=test-model -F model=raw-model -F "file=@notes.txt")
check "two model fields: 400" "$code $(grep -ci 'more than one .model. field' t4.out)" "400 1"
code=$(post t5 -F "model=@notes.txt;encoder=base64" -F "file=@notes.txt")
check "a base64-encoded model field: 400" "$code" 400
code=$(post t5m -F model=raw-model -F stream=maybe -F "file=@notes.txt")
check "stream=maybe: 400 naming it" "$code $(grep -ci "the 'stream' field is neither 'true' nor 'false'" t5m.out)" "400 1"
ev=$(audit_of "$(rid t5m.hdr)")
check "stream=maybe: audited as a 400 with its reason" \
	"$(grep -c '"status":400' <<<"$ev")$(grep -c "'stream' field is neither" <<<"$ev")" "11"
code=$(post t5d -F model=raw-model -F stream=true -F stream=false -F "file=@notes.txt")
check "two stream fields: 400 naming them" "$code $(grep -ci 'more than one .stream. field' t5d.out)" "400 1"
code=$(post t5e -F model=raw-model -F "stream=@notes.txt;encoder=base64" -F "file=@notes.txt")
check "a base64-encoded stream field: 400" "$code $(grep -ci "the 'stream' field has a transfer or content encoding" t5e.out)" "400 1"
printf -- '--b0\r\nContent-Disposition: form-data; name="model"\r\n\r\ntest-model\r\n--b0junk\r\n' >bad.body
code=$(post t6 -H 'Content-Type: multipart/form-data; boundary=b0' --data-binary @bad.body)
check "a malformed body: 400 naming it" "$code $(grep -ci 'multipart request body is malformed' t6.out)" "400 1"
code=$(post t7 -H 'Content-Type: multipart/form-data' --data-binary @bad.body)
check "no boundary parameter: 400" "$code" 400
code=$(post t8 -F model=test-model -F "file=@key.txt;encoder=base64")
check "a key behind base64 under a deny rule: 403 naming the detector" \
	"$code $(grep -ci 'prompt denied by content inspection: aws_access_key' t8.out)" "403 1"
code=$(post t9 -F model=test-model -F "file=@audio.wav;type=audio/wav")
check "a binary part under an inspecting rule: 415 (it cannot be inspected)" \
	"$code $(grep -ci 'cannot be inspected: part 2 (audio/wav) is not text' t9.out)" "415 1"
# two Content-Type fields, one multipart: the server might read the other one (a JSON body in
# the multipart preamble naming another model), so custos refuses to guess
body=$'{"model":"other-model"}\r\n--b0\r\nContent-Disposition: form-data; name="model"\r\n\r\ntest-model\r\n--b0--\r\n'
printf 'POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: multipart/form-data; boundary=b0\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' \
	"$ALICE" "${#body}" "$body" >two-ct.req
got=$(raw_http "$PORT2" two-ct.req)
check "two Content-Type fields, one multipart: 400 naming them" \
	"$(head -1 <<<"$got" | tr -d '\r' | cut -d' ' -f2) $(grep -c 'more than one Content-Type field' <<<"$got")" "400 1"
check "none of them reached an upstream" "$(count up1) $(count up2)" "$n1 $n2"
ev=$(audit_of "$(rid t8.hdr)")
check "the deny audited with its model, never the value" \
	"$(grep -c '"model":"test-model"' <<<"$ev")$(grep -c '"status":403' <<<"$ev")$(grep -c AKIA <<<"$ev")" "110"
check "no value in the whole trail" "$(audit_grep 'jane|AKIA' | wc -l)" 0

n=$(grep -cE 'AddressSanitizer|LeakSanitizer|runtime error' "$work/custos.log")
check "no sanitizer report" "$n" 0
[ "$fails" -eq 0 ] || exit 1
echo "all multipart checks passed"
