#!/usr/bin/env bash
# ctest: serial (loads the machine, or is timing-sensitive under load)
# Ingress policy sees the taint of the model's sandbox (docs/POLICY.md `taint`, docs/EGRESS.md
# "Taint"): a model that has read a confidential source through custos no longer answers a
# caller a rule keeps away from confidential data, until its sandbox is restarted. custos up
# with the model in a process sandbox; the model reads the hr source (confidential) through
# the egress proxy on every chat; alice (group hr) may have it read, bob may not.
#  1. bob chats: ingress allows it (taint public); the model's read of hr for bob is refused,
#     so the taint stays public;
#  2. alice chats: the model reads hr for her; the taint is confidential (admin API);
#  3. bob chats: 403 by the rule on taint, audited with that rule and principal bob; alice is
#     still answered;
#  4. the sandbox is restarted (admin API): the new instance has read nothing, and bob is
#     answered again.
set -u
. "${CUSTOS_SRC:?}/tests/integration/egress_lib.bash"
eg_init egress-taint-in curl python3
eg_sandbox_init
P_HR=$(port); P_IN=$(port); P_EG=$(port)
BOB=test-key-bob
BOBSHA=$(printf %s "$BOB" | sha256sum | cut -d' ' -f1)
cd "$W"
eg_data_sources "$P_HR" hr

eg_sandbox_conf "log: { level: info, format: json }" \
	"$(eg_model_yaml m1 "http://localhost:$P_HR/employees")" \
	"$(eg_source_yaml hr "http://localhost:$P_HR/" confidential)"
sed -i "s|^    - { id: alice, sha256: \"$KEYSHA\" }\$|&\n    - { id: bob, sha256: \"$BOBSHA\" }|" custos.yaml
check "custos.yaml has bob's key" grep -q "id: bob, sha256: \"$BOBSHA\"" custos.yaml
cat >policy.yaml <<EOY
version: 1
mode: enforce
principals:
  alice: { match: { api_key_sha256: "$KEYSHA" }, groups: [hr] }
  bob: { match: { api_key_sha256: "$BOBSHA" } }
models:
  m1: { isolation: process }
data:
  hr: { url: "http://localhost:$P_HR/", classification: confidential }
rules:
  - id: chat
    effect: allow
    when: { direction: ingress, principal: [alice, bob], model: m1 }
  - id: hr-for-hr
    effect: allow
    when: { direction: egress, data: hr, method: GET, principal.groups: hr }
  - id: no-confidential-for-bob
    effect: deny
    when: { direction: ingress, principal: bob, taint: { above: internal } }
EOY
chmod 600 policy.yaml
# The compliance team's own check: no warning that taint is unknown on ingress.
"$BIN" policy check policy.yaml >pc.out 2>&1
check "policy check accepts the ingress rule on taint without a warning" \
	bash -c "! grep -q 'taint' pc.out"
cat >cases.yaml <<'EOY'
cases:
  - { name: bob before any confidential read, request: { direction: ingress, principal: bob, model: m1, route: "POST /v1/chat/completions", taint: internal }, expect: allow, rules: [chat] }
  - { name: bob after one, request: { direction: ingress, principal: bob, model: m1, route: "POST /v1/chat/completions", taint: confidential }, expect: deny, rules: [no-confidential-for-bob] }
  - { name: alice after one, request: { direction: ingress, principal: alice, model: m1, route: "POST /v1/chat/completions", taint: confidential }, expect: allow, rules: [chat] }
EOY
"$BIN" policy test policy.yaml cases.yaml >pt.out 2>&1
check "policy test decides ingress cases with a taint" test $? -eq 0
eg_sandbox_up 'egress: listener 0 on port'

# chat KEY WORD: the HTTP status, then the reply body, of one chat request.
chat() {
	curl -s --max-time 20 -w '\n%{http_code}' -H "Authorization: Bearer $1" \
		-H 'Content-Type: application/json' \
		-d '{"model":"m1","messages":[{"role":"user","content":"'"$2"'"}]}' \
		"http://127.0.0.1:$P_IN/v1/chat/completions"
}
taint() {
	curl -s --max-time 20 --unix-socket "$W/admin.sock" http://localhost/v1/sandboxes |
		python3 -c 'import json, sys
print(next((s.get("taint") for s in json.load(sys.stdin)["sandboxes"] if s["id"] == "m1"), ""))'
}
is_taint() { [ "$(taint)" = "$1" ]; }
# Ingress events (http.request; http.reject for a refusal) of principal P with status S.
ingress_ev() {
	{ cat "$W"/audit/* 2>/dev/null; grep -h '"http.re' up.log | sed 's/.*audit: //'; } |
		grep '"type":"http.re\(quest\|ject\)"' | sed 's/\\"/"/g' | grep "\"principal\":\"$1\"" | grep "\"status\":$2"
}

OUT=$(chat "$BOB" one)
check "1: bob is answered (taint public): $(tail -1 <<<"$OUT")" test "$(tail -1 <<<"$OUT")" = 200
check "1: the model's read of hr for bob was refused" bash -c "! grep -q '200 hello from hr' <<<\"\$1\"" _ "$OUT"
check "1: the taint stays public" is_taint public

OUT=$(chat "$KEY" two)
check "2: alice is answered: $(tail -1 <<<"$OUT")" test "$(tail -1 <<<"$OUT")" = 200
check "2: the model read hr for alice" grep -q '200 hello from hr /employees' <<<"$OUT"
eg_wait 30 is_taint confidential
check "2: the sandbox's taint is confidential" is_taint confidential

OUT=$(chat "$BOB" three)
check "3: bob is refused once the model read confidential data: $(tail -1 <<<"$OUT")" \
	test "$(tail -1 <<<"$OUT")" = 403
check "3: and the model never saw bob's request" bash -c "! grep -q 'three' <<<\"\$1\"" _ "$OUT"
EV=""
refused_ev() { EV=$(ingress_ev bob 403 | tail -1); [ -n "$EV" ]; }
eg_wait 30 refused_ev
check "3: audited: bob, denied by the rule on taint" \
	grep -q '"rules":"no-confidential-for-bob"' <<<"$EV"
check "3: audited as a refusal (http.reject, deny)" \
	grep -q '"type":"http.reject".*"decision":"deny"' <<<"$EV"
OUT=$(chat "$KEY" four)
check "3: alice is still answered: $(tail -1 <<<"$OUT")" test "$(tail -1 <<<"$OUT")" = 200

R=$(curl -s --max-time 20 --unix-socket "$W/admin.sock" -X POST http://localhost/v1/sandboxes/m1/restart)
check "4: the admin API restarts the sandbox" grep -q '"result":"restarting"' <<<"$R"
OUT=""
bob_again() {
	grep -q 'egress: listener 0 for model m1 replaced' up.log && is_taint public &&
		OUT=$(chat "$BOB" five) && [ "$(tail -1 <<<"$OUT")" = 200 ]
}
eg_wait 90 bob_again
check "4: after the restart the taint is public and bob is answered: $(tail -1 <<<"$OUT")" \
	test "$(tail -1 <<<"$OUT")" = 200

kill $UP; wait $UP
if [ $FAILS -ne 0 ]; then
	echo "--- http.request events"; { cat "$W"/audit/* 2>/dev/null; } | grep '"type":"http.re' | cut -c1-600
	echo "--- taint: $(taint)"
	grep -v egress.request up.log | tail -30 | cut -c1-300; echo "$FAILS failed"; exit 1; fi
echo "all checks passed"
