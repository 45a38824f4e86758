#!/usr/bin/env bash
# Budgets, rates and what the policy judges, through the real binary with curl:
# - a request that names no model goes to the first model and is judged as that model (a deny
#   on it cannot be dodged by leaving "model" out);
# - "Content-Length: 0" is a complete body (answered at once, not after the body timeout);
# - a stream the client drops before its usage event is still charged (an estimate, marked
#   tokens_estimated), so hanging up early does not escape the budget;
# - a JSON response far larger than any buffer still has its usage read and charged;
# - 429 says in Retry-After how long the wait really is;
# - a 413 for a Content-Length above body_max names the principal who sent it;
# - X-Forwarded-For carries the client's address without its port;
# - an event over the trail's size limit is written with its long members cut, not dropped.
. "$(dirname "$0")/proxy_lib.bash"
command -v python3 >/dev/null || skip "python3 not installed"

make_pki
start_fixture model --tokens 6
mport=$FX_PORT
start_fixture slow --tokens 40 --delay-ms 100
sport=$FX_PORT
start_fixture oai --tokens 4 --usage-chunk
oport=$FX_PORT

# A bare upstream that records the request head it gets (for X-Forwarded-For).
cat >"$work/hdr.py" <<'PY'
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0)); s.listen(8)
open(sys.argv[1] + ".tmp", "w").write(str(s.getsockname()[1]))
import os; os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while True:
    c, _ = s.accept(); data = b""
    while b"\r\n\r\n" not in data:
        d = c.recv(65536)
        if not d: break
        data += d
    open(sys.argv[2], "ab").write(data.split(b"\r\n\r\n")[0] + b"\n--\n")
    body = b'{"object":"list","data":[]}'
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
              + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
    c.close()
PY
python3 "$work/hdr.py" "$work/hdr.port" "$work/hdr.heads" &
pids+=($!)
wait_until 60 test -s "$work/hdr.port"
hport=$(cat "$work/hdr.port")

key() { printf 'sk-test-%s' "$1"; }
cat >"$work/policy.yaml" <<POL
version: 1
principals:
  alice: { match: { api_key_sha256: "$(sha256hex "$(key alice)")" } }
  carol: { match: { api_key_sha256: "$(sha256hex "$(key carol)")" } }
  dave: { match: { api_key_sha256: "$(sha256hex "$(key dave)")" } }
  eve: { match: { api_key_sha256: "$(sha256hex "$(key eve)")" } }
  frank: { match: { api_key_sha256: "$(sha256hex "$(key frank)")" } }
  gina: { match: { api_key_sha256: "$(sha256hex "$(key gina)")" } }
models:
  test-model: { isolation: none }
  slow-model: { isolation: none }
  hdr-model: { isolation: none }
  oai-model: { isolation: none }
rules:
  - id: alice-any
    effect: allow
    when: { direction: ingress, principal: alice }
  - id: eve-chat
    effect: allow
    when: { direction: ingress, principal: eve, route: "POST /v1/chat/completions" }
  - id: eve-not-test-model
    effect: deny
    when: { direction: ingress, principal: eve, model: test-model }
  - id: carol-slow
    effect: allow
    when: { direction: ingress, principal: carol, model: slow-model }
    limits: { tokens_per_hour: 20 }
  - id: dave-rate
    effect: allow
    when: { direction: ingress, principal: dave }
    limits: { requests_per_minute: 2 }
  - id: gina-budget
    effect: allow
    when: { direction: ingress, principal: gina }
    limits: { tokens_per_hour: 100000 }
  - id: frank-budget
    effect: allow
    when: { direction: ingress, principal: frank }
    limits: { tokens_per_hour: 1000 }
POL
chmod 644 "$work/policy.yaml"
EXTRA_MODELS="  - id: slow-model
    upstream:
      url: \"http://127.0.0.1:$sport/\"
  - id: hdr-model
    upstream:
      url: \"http://127.0.0.1:$hport/\"
  - id: oai-model
    upstream:
      url: \"http://127.0.0.1:$oport/\"" write_config "$work/custos.yaml" "$mport"
start_custos "$work/custos.yaml"
base="http://127.0.0.1:$PORT2"
C=(curl -sS --max-time 20 -o "$work/body" -w '%{http_code}' -D "$work/h")
rid() { sed -n 's/^[Xx]-[Rr]equest-[Ii]d: *\([0-9a-f]*\).*/\1/p' "$work/h" | tr -d '\r'; }
# event RID: the audit line of that request (sync enough: the trail is read after a flush)
event() {
	wait_until 30 audit_grep "\"request_id\":\"$1\"" >/dev/null
	audit_grep "\"request_id\":\"$1\""
}

# ---- no model: routed to the first model, and judged as it
chat='{"model":"test-model","messages":[{"role":"user","content":"x"}]}'
nomodel='{"messages":[{"role":"user","content":"secret"}]}'
check "eve, model test-model: denied" \
	"$("${C[@]}" -H "Authorization: Bearer $(key eve)" -d "$chat" "$base/v1/chat/completions")" 403
check "eve, no model (goes to test-model): denied too" \
	"$("${C[@]}" -H "Authorization: Bearer $(key eve)" -d "$nomodel" "$base/v1/chat/completions")" 403
line=$(event "$(rid)")
grep -q '"model":"test-model"' <<<"$line" && ok "the event names the model judged" || fail "model: $line"
check "eve, slow-model: allowed" "$("${C[@]}" -H "Authorization: Bearer $(key eve)" \
	-d '{"model":"slow-model","max_tokens":1,"messages":[{"role":"user","content":"x"}]}' \
	"$base/v1/chat/completions")" 200

# ---- a refusal before the policy is asked (400) still names the principal
check "alice, body not JSON" "$("${C[@]}" -H "Authorization: Bearer $(key alice)" -d '{"model":' \
	"$base/v1/chat/completions")" 400
grep -q '"principal":"alice"' <<<"$(event "$(rid)")" && ok "the 400 names alice" ||
	fail "400 event: $(event "$(rid)")"

# ---- Content-Length: 0 is a complete body
t0=$(date +%s%N)
check "GET with Content-Length: 0" "$("${C[@]}" -H "Authorization: Bearer $(key alice)" \
	-H 'Content-Length: 0' "$base/v1/models")" 200
check "POST with an empty body (Content-Length: 0): forwarded, the model's 400" \
	"$("${C[@]}" -H "Authorization: Bearer $(key alice)" --data-binary '' \
		"$base/v1/chat/completions")" 400
grep -q '"upstream":"test-model"' <<<"$(event "$(rid)")" && ok "the empty body reached the model" ||
	fail "empty body not forwarded: $(event "$(rid)")"
ms=$((($(date +%s%N) - t0) / 1000000))
# client_body is 60 s: half of it tells "at once" from "after the timeout" on a loaded machine too
[ "$ms" -lt 30000 ] && ok "answered at once (${ms} ms), not after the body timeout" || fail "took ${ms} ms"

# ---- a stream dropped before its usage is charged (estimate); the budget then refuses
stream='{"model":"slow-model","stream":true,"messages":[{"role":"user","content":"tell me everything"}]}'
# The client hangs up after its third event (40 come, 0.1 s apart): awk exits, curl dies of
# SIGPIPE at its next write. After a count of events, not a time: a loaded machine can take
# longer than any fixed time to deliver the first.
curl -sS -N --max-time 60 -D "$work/h" -H "Authorization: Bearer $(key carol)" -d "$stream" \
	"$base/v1/chat/completions" 2>/dev/null | awk '{ print } /^data: \{/ && ++n == 3 { exit }' >"$work/stream"
got=$(grep -c '^data: {' "$work/stream")
[ "$got" -ge 2 ] && [ "$got" -lt 40 ] && ok "client read $got events and hung up" || fail "read $got events"
line=$(event "$(rid)")
grep -q '"tokens_estimated":true' <<<"$line" && ok "dropped stream charged with an estimate" ||
	fail "no estimate: $line"
pt=$(sed -n 's/.*"prompt_tokens":\([0-9]*\).*/\1/p' <<<"$line")
ct=$(sed -n 's/.*"completion_tokens":\([0-9]*\).*/\1/p' <<<"$line")
[ "${pt:-0}" -gt 0 ] && [ "${ct:-0}" -ge 2 ] && ok "estimate: $pt prompt + $ct completion tokens" ||
	fail "estimate: $line"
check "carol's budget (20 tokens an hour) is spent" "$("${C[@]}" -H "Authorization: Bearer $(key carol)" \
	-d '{"model":"slow-model","max_tokens":1,"messages":[{"role":"user","content":"x"}]}' \
	"$base/v1/chat/completions")" 429
ra=$(sed -n 's/^[Rr]etry-[Aa]fter: *\([0-9]*\).*/\1/p' "$work/h")
[ "${ra:-0}" -gt 3000 ] && [ "${ra:-0}" -le 3600 ] && ok "Retry-After is the window's end (${ra} s)" ||
	fail "Retry-After '$ra' for an hourly budget"

# ---- usage asked for on the client's behalf: the usage-only chunk is not forwarded to it
oai='{"model":"oai-model","stream":true,"messages":[{"role":"user","content":"one two three"}]}'
curl -sS -N --max-time 10 -D "$work/h" -H "Authorization: Bearer $(key gina)" -d "$oai" \
	"$base/v1/chat/completions" >"$work/oai"
grep -q '^data: \[DONE\]' "$work/oai" && ok "stream complete" || fail "no [DONE]: $(cat "$work/oai")"
grep -q '"choices":\[\]' "$work/oai" && fail "usage-only chunk reached a client that did not ask" ||
	ok "the usage-only chunk was not forwarded ($(grep -c '^data: {' "$work/oai") chunks)"
line=$(event "$(rid)")
grep -q '"completion_tokens":4' <<<"$line" && ! grep -q tokens_estimated <<<"$line" &&
	ok "charged from the usage chunk" || fail "usage: $line"
oai2='{"model":"oai-model","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"x"}]}'
curl -sS -N --max-time 10 -H "Authorization: Bearer $(key gina)" -d "$oai2" \
	"$base/v1/chat/completions" >"$work/oai2"
grep -q '"choices":\[\],"usage"' "$work/oai2" && ok "a client that asked for usage gets the chunk" ||
	fail "asked-for usage chunk missing: $(cat "$work/oai2")"

# ---- a JSON response of ~600 KB: usage still read and charged
python3 -c "
import json
print(json.dumps({'model':'test-model','messages':[{'role':'user','content':' '.join(['word']*120000)}]}))
" >"$work/big.json"
check "frank: 600 KB prompt echoed back" "$("${C[@]}" -H "Authorization: Bearer $(key frank)" \
	--data-binary @"$work/big.json" "$base/v1/chat/completions")" 200
size=$(stat -c %s "$work/body")
line=$(event "$(rid)")
pt=$(sed -n 's/.*"prompt_tokens":\([0-9]*\).*/\1/p' <<<"$line")
[ "${pt:-0}" -ge 120000 ] && ok "usage read from a $size-byte response ($pt prompt tokens)" ||
	fail "usage of the big response: $line"
grep -q tokens_estimated <<<"$line" && fail "usage was there, not estimated: $line"
check "frank's budget (1000 tokens) is spent" "$("${C[@]}" -H "Authorization: Bearer $(key frank)" \
	-d "$chat" "$base/v1/chat/completions")" 429

# ---- Retry-After from the request bucket (2 a minute: about 30 s, not 1)
for i in 1 2; do
	"${C[@]}" -H "Authorization: Bearer $(key dave)" "$base/v1/models" >/dev/null
done
check "dave's third request in a minute" "$("${C[@]}" -H "Authorization: Bearer $(key dave)" \
	"$base/v1/models")" 429
ra=$(sed -n 's/^[Rr]etry-[Aa]fter: *\([0-9]*\).*/\1/p' "$work/h")
[ "${ra:-0}" -ge 20 ] && [ "${ra:-0}" -le 31 ] && ok "Retry-After ${ra} s" || fail "Retry-After '$ra'"

# ---- 413 before the body names the principal
code=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -D "$work/h" \
	-H "Authorization: Bearer $(key alice)" -H 'Content-Length: 5000000' \
	-H 'Content-Type: application/json' --data-binary x "$base/v1/chat/completions" 2>/dev/null)
check "Content-Length above body_max" "$code" 413
line=$(event "$(rid)")
grep -q '"principal":"alice"' <<<"$line" && ok "the 413 event names alice" || fail "413 event: $line"
code=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer sk-nobody" \
	-H 'Content-Length: 5000000' --data-binary x "$base/v1/chat/completions" 2>/dev/null)
check "unknown key with a body too large: 401 first" "$code" 401

# ---- X-Forwarded-For: the address alone
check "request to the header-recording upstream" "$("${C[@]}" -H "Authorization: Bearer $(key alice)" \
	-d '{"model":"hdr-model","messages":[]}' "$base/v1/chat/completions")" 200
xff=$(grep -i '^X-Forwarded-For:' "$work/hdr.heads" | tail -1 | tr -d '\r')
check "X-Forwarded-For" "$xff" "X-Forwarded-For: 127.0.0.1"

# ---- an event too large for the trail (a 7,800-byte path) is written cut, never dropped
long="/v1/models/$(head -c 7800 /dev/zero | tr '\0' a)"
code=$("${C[@]}" -H "Authorization: Bearer $(key alice)" "$base$long")
line=$(event "$(rid)")
grep -q '"upstream":"test-model"' <<<"$line" && ok "long path forwarded (the model answered $code)" ||
	fail "long path: $code"
grep -q '"truncated":true' <<<"$line" && ok "its event is in the trail, marked truncated" ||
	fail "no event for the long path: $(tail -3 "$work/custos.log")"
plen=$(sed -n 's/.*"path":"\([^"]*\)".*/\1/p' <<<"$line" | wc -c)
[ "$plen" -le 1025 ] && [ "$plen" -gt 1000 ] && ok "path cut to $((plen - 1)) bytes" || fail "path $plen"

kill -TERM "$CU_PID"
wait "$CU_PID"
"$bin" audit verify "$work/audit" >/dev/null && ok "trail verifies" || fail "audit verify"
[ "$fails" -eq 0 ]
