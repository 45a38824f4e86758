#!/usr/bin/env bash
# ctest: serial (loads the machine, or is timing-sensitive under load)
# Reloads that add and remove a process-sandboxed model while the egress proxy runs
# (docs/EGRESS.md "Listeners", docs/SANDBOX.md "Reload"): the added model gets its egress
# listener inside its sandbox's netns as at start, its reads are decided and audited as its own
# (an allowed source 200, one its rule does not allow 403), its listener is closed once it is
# removed, it can be added again (by SIGHUP) with a new listener, and the model custos started
# with reads through its own listener all along. Last, a reload changes m1's command: its
# sandbox is replaced, the new one reads through a listener of its own and the old one's is
# closed once the old sandbox stopped.
set -u
. "${CUSTOS_SRC:?}/tests/integration/egress_lib.bash"
eg_init egress-sbx-reload curl python3
eg_sandbox_init
P_HR=$(port); P_PUB=$(port); P_IN=$(port); P_EG=$(port)
cd "$W"
eg_data_sources "$P_HR" hr "$P_PUB" pub

SRCS="$(eg_source_yaml hr "http://localhost:$P_HR/" confidential)
$(eg_source_yaml pub "http://localhost:$P_PUB/" internal)"
# conf [EXTRA]: custos.yaml with m1, and EXTRA (more models) after it.
conf() {
	eg_sandbox_conf "log: { level: info, format: json }" \
		"$(eg_model_yaml m1 "http://localhost:$P_HR/${M1_PATH:-employees}")
${1-}" "$SRCS" "$(printf 'limits:\n  timeouts: { shutdown: 2s }')"
}
conf
# hr only for m1 (and alice in group hr); pub only for m2: each decision is the model's own.
eg_hr_pub_policy
eg_sandbox_up 'egress: listener 0 on port'

m1_reads_hr() { eg_chat m1 "who works here?" | grep -q '200 hello from hr /employees'; }
events() { cat "$W"/audit/* 2>/dev/null | grep 'egress.request' | sed 's/\\"/"/g'; }
EV=""
event() { EV=$(events | grep '"model":"'"$1"'"' | grep '"decision":"'"$2"'"' | tail -1); [ -n "$EV" ]; }

check "m1 reads hr through its egress listener before any reload" m1_reads_hr

# 1. Add m2 (admin API reload): its listener is made inside its sandbox, as at start.
conf "$(eg_model_yaml m2 "http://localhost:$P_PUB/catalogue")"
OUT=$(eg_reload); echo "reload: $OUT" | cut -c1-300
check "the reload adding a sandboxed model with egress on is applied" grep -q 'http=200' <<<"$OUT"
check "no egress port on the host for m2 either" bash -c "! (exec 3<>/dev/tcp/127.0.0.1/$P_EG) 2>/dev/null"
OUT=$(eg_chat m2 "read the catalogue"); echo "m2: $OUT" | cut -c1-300
check "the added model reads an allowed source through custos (200)" grep -q '200 hello from pub /catalogue' <<<"$OUT"
eg_wait 30 event m2 allow
check "audited as m2 in its sandbox" grep -q '"model":"m2","sandbox":"fx"' <<<"$EV"
check "with the source pub" grep -q '"data_source":"pub"' <<<"$EV"
check "its listener's taint raised to internal" grep -q '"taint":1' <<<"$EV"
OUT=$(eg_chat m2 "fetch http://localhost:$P_HR/employees"); echo "m2: $OUT" | cut -c1-300
check "a source m2's rules do not allow is refused (403)" grep -q '"content": "403 policy' <<<"$OUT"
eg_wait 30 event m2 deny
check "the refusal audited as m2's, with the source hr" grep -q '"model":"m2","sandbox":"fx".*"data_source":"hr"' <<<"$EV"
SB=$(curl -s --max-time 20 --unix-socket "$W/admin.sock" http://localhost/v1/sandboxes)
check "admin API: m2's taint is internal" grep -q '"id":"m2".*"taint":"internal"' <<<"$SB"
check "m1 still reads hr through its own listener" m1_reads_hr

# 2. Remove m2: its sandbox stops and its listener is closed; m1's is untouched.
M2PID=$(grep -o 'model m2: sandbox started (pid [0-9]*' up.log | grep -o '[0-9]*$' | tail -1)
conf
OUT=$(eg_reload); echo "reload: $OUT" | cut -c1-300
check "the reload removing it is applied" grep -q 'http=200' <<<"$OUT"
closed() { grep -q 'egress: listener [0-9]* for model m2 closed (sandbox removed)' up.log; }
eg_wait 30 closed
check "m2's egress listener is closed" closed
gone() { ! kill -0 "$M2PID" 2>/dev/null; }
check "after its sandbox stopped" gone
check "m2 is unknown" grep -q 'http=404' <<<"$(eg_chat m2 x)"
check "m1 reads hr after m2's removal" m1_reads_hr

# 3. Add m2 again, by SIGHUP: a new listener in its new sandbox.
conf "$(eg_model_yaml m2 "http://localhost:$P_PUB/again")"
N=$(grep -c 'egress: listener [0-9]* on port [0-9]* for model m2' up.log)
kill -HUP $UP
m2_again() { eg_chat m2 x | grep -q '200 hello from pub /again'; }
eg_wait 60 m2_again
check "m2 added again by SIGHUP reads through its new listener" m2_again
check "on a listener of its own" test "$(grep -c 'egress: listener [0-9]* on port [0-9]* for model m2' up.log)" -gt "$N"
check "m1 reads hr at the end" m1_reads_hr

# 4. Change m1's command (the path it reads): its sandbox is replaced (docs/SANDBOX.md,
# "Reload"); the new one gets a listener of its own, the old one's closes after it stopped.
M1PID=$(grep -o 'model m1: sandbox started (pid [0-9]*' up.log | grep -o '[0-9]*$' | tail -1)
N=$(grep -c 'egress: listener [0-9]* on port [0-9]* for model m1' up.log)
M1_PATH=changed conf "$(eg_model_yaml m2 "http://localhost:$P_PUB/again")"
OUT=$(eg_reload); echo "reload: $OUT" | cut -c1-300
check "the reload changing m1's command is applied" grep -q 'http=200' <<<"$OUT"
OUT=$(eg_chat m1 x); echo "m1: $OUT" | cut -c1-300
check "right after it, m1's new sandbox reads hr through custos" grep -q '200 hello from hr /changed' <<<"$OUT"
check "on a listener of its own" test "$(grep -c 'egress: listener [0-9]* on port [0-9]* for model m1' up.log)" -gt "$N"
closed1() { grep -q 'egress: listener [0-9]* for model m1 closed (sandbox removed)' up.log; }
eg_wait 30 closed1
check "the old m1 sandbox's listener is closed" closed1
gone1() { ! kill -0 "$M1PID" 2>/dev/null; }
check "after the old sandbox stopped" gone1
OUT=$(eg_chat m1 x); echo "m1: $OUT" | cut -c1-300
check "the new m1 reads hr after the old one's listener closed" grep -q '200 hello from hr /changed' <<<"$OUT"
check "m2 is untouched" m2_again
kill $UP; wait $UP
check "no sanitizer report" bash -c "! grep -qE 'Sanitizer|runtime error' up.log"
if [ $FAILS -ne 0 ]; then grep -v egress.request up.log | tail -30 | cut -c1-300; echo "$FAILS failed"; exit 1; fi
echo "all checks passed"
