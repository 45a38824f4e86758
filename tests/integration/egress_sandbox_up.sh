#!/usr/bin/env bash
# ctest: serial (loads the machine, or is timing-sensitive under load)
# The egress proxy in production shape through `custos up`: the model server runs in a
# process sandbox (loopback-only network namespace); custos makes the egress listener inside
# that namespace and sets http(s)_proxy for it. A chat request from alice makes the model read
# the hr source through custos: the read is allowed only because alice (group hr) is the end
# user in flight, and its audit event names the ingress request and alice.
set -u
. "${CUSTOS_SRC:?}/tests/integration/egress_lib.bash"
eg_init egress-sbx curl python3
eg_sandbox_init
P_HR=$(port); P_IN=$(port); P_EG=$(port)
cd "$W"
eg_data_sources "$P_HR" hr

eg_sandbox_conf "log: { level: info, format: json }" \
	"$(eg_model_yaml m1 "http://localhost:$P_HR/employees")" \
	"$(eg_source_yaml hr "http://localhost:$P_HR/" confidential)"
cat >policy.yaml <<EOY
version: 1
mode: enforce
principals:
  alice: { match: { api_key_sha256: "$KEYSHA" }, groups: [hr] }
models:
  m1: { isolation: process }
data:
  hr: { url: "http://localhost:$P_HR/", classification: confidential }
rules:
  - id: chat
    effect: allow
    when: { direction: ingress, principal: alice, model: m1 }
  - id: hr-for-hr-in-a-sandbox
    effect: allow
    when: { direction: egress, data: hr, method: GET, principal.groups: hr, model.isolation: { at_least: process } }
EOY
chmod 600 policy.yaml
eg_sandbox_up 'egress: listener 0 on port'
check "no egress port on the host (the listener lives in the sandbox)" \
	bash -c "! (exec 3<>/dev/tcp/127.0.0.1/$P_EG) 2>/dev/null"
OUT=$(curl -s --max-time 20 -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
	-d '{"model":"m1","messages":[{"role":"user","content":"who works here?"}]}' \
	"http://127.0.0.1:$P_IN/v1/chat/completions")
echo "reply: $OUT" | cut -c1-300
check "the sandboxed model read hr through custos for alice" grep -q '200 hello from hr /employees' <<<"$OUT"
events() { { cat "$W"/audit/* 2>/dev/null; grep -h '"egress.request' up.log | sed 's/.*audit: //'; } | grep 'egress.request' | sed 's/\\"/"/g'; }
EV=""
allowed() { EV=$(events | grep '"decision":"allow"' | tail -1); [ -n "$EV" ]; }
eg_wait 30 allowed # the audit writer batches: wait for the event
check "egress event: model m1 in its sandbox" grep -q '"model":"m1","sandbox":"fx"' <<<"$EV"
check "egress event: ingress request id and principal alice" \
	grep -q '"attribution":"sole-in-flight","ingress_request_id":"[^"]*","principal":"alice"' <<<"$EV"
check "egress event: taint raised to confidential" grep -q '"taint":2' <<<"$EV"
SB=$(curl -s --max-time 20 --unix-socket "$W/admin.sock" http://localhost/v1/sandboxes)
check "admin API: the sandbox's taint is confidential" grep -q '"id":"m1".*"taint":"confidential"' <<<"$SB"
# The model crashes; the supervisor restarts it in a new netns, and the listener follows.
SPID=$(grep -o 'sandbox started (pid [0-9]*' up.log | grep -o '[0-9]*$' | head -1)
kill -9 "$SPID"
OUT=""
answered_again() {
	grep -q 'egress: listener 0 for model m1 replaced' up.log && OUT=$(curl -s --max-time 20 \
		-H "Authorization: Bearer $KEY" -d '{"model":"m1","messages":[{"role":"user","content":"again"}]}' \
		"http://127.0.0.1:$P_IN/v1/chat/completions")
	grep -q '200 hello from hr' <<<"$OUT"
}
eg_wait 90 answered_again
check "after the sandbox restarted, its new instance reads through a new egress listener" \
	grep -q '200 hello from hr /employees' <<<"$OUT"
kill $UP; wait $UP
if [ $FAILS -ne 0 ]; then grep -v egress.request up.log | tail -30 | cut -c1-300; echo "$FAILS failed"; exit 1; fi
echo "all checks passed"
