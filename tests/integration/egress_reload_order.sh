#!/usr/bin/env bash
# ctest: serial (loads the machine, or is timing-sensitive under load)
# The order of a reload's egress listeners (docs/EGRESS.md "Listeners"): a reload that removes
# a model without a sandbox (p1, its host listener egress.port + 1) and adds a process-sandboxed
# model (m2) closes p1's host listener before m2's listener is added at COMMIT, so m2's takes
# p1's slot (index) and the egress server holds no more listener slots than before. A reload
# of the same custos.yaml refused (its policy does not compile) after m2's sandbox was started
# closes nothing: p1's listener keeps serving as p1.
set -u
. "${CUSTOS_SRC:?}/tests/integration/egress_lib.bash"
eg_init egress-reload-order curl python3
eg_sandbox_init
P_HR=$(port); P_PUB=$(port); P_IN=$(port); P_EG=$(port)
P_EG1=$((P_EG + 1))
(exec 3<>"/dev/tcp/127.0.0.1/$P_EG1") 2>/dev/null && { echo "SKIPPED: port $P_EG1 (egress.port + 1) is taken"; exit 77; }
cd "$W"
eg_data_sources "$P_HR" hr "$P_PUB" pub

SRCS="$(eg_source_yaml hr "http://localhost:$P_HR/" confidential)
$(eg_source_yaml pub "http://localhost:$P_PUB/" internal)"
# conf SECOND: custos.yaml with the sandboxed m1 first and SECOND (a model) second in models.
conf() {
	eg_sandbox_conf "" "$(eg_model_yaml m1 "http://localhost:$P_HR/employees")
$1" "$SRCS" "$(printf 'limits:\n  timeouts: { shutdown: 2s }')"
}
# policy [BROKEN]: hr for m1, pub for p1 and for m2; BROKEN adds a rule that does not compile.
policy() {
	eg_hr_pub_policy "  p1: { isolation: none }" "  - id: pub-for-p1
    effect: allow
    when: { direction: egress, data: pub, method: GET, model: p1 }${1:+
  - id: broken
    effect: allow
    when: { direction: egress, data: nosuchsource \}}"
}
conf "  - { id: p1, upstream: { url: \"http://127.0.0.1:$P_HR\" } }"
policy
# egress_start logs the listeners in index order, m1's then p1's: wait for p1's (the last), so
# that `made` below reads both.
eg_sandbox_up 'egress: listener [0-9]* on port [0-9]* for model p1'

# status PATH: the egress answer for a GET of pub's PATH through p1's listener.
status() { curl -s --max-time 20 -o /dev/null -w '%{http_code}' -x "http://127.0.0.1:$P_EG1" "http://localhost:$P_PUB/$1"; }
closed() { ! (exec 3<>"/dev/tcp/127.0.0.1/$P_EG1") 2>/dev/null; }
events() { cat "$W"/audit/* 2>/dev/null | grep 'egress.request' | sed 's/\\"/"/g'; }
EV=""
event() { EV=$(events | grep '"model":"'"$1"'"' | grep "$2" | tail -1); [ -n "$EV" ]; }
# The listeners made so far (their indexes are the slots): one line each, "INDEX MODEL".
made() { sed -n 's/.*egress: listener \([0-9]*\) on port [0-9]* for model \([a-z0-9]*\).*/\1 \2/p' up.log; }

P1IDX=$(made | awk '$2 == "p1" { print $1 }' | tail -1)
NSLOTS=$(made | awk '{ print $1 }' | sort -un | wc -l)
check "p1 has a host listener at start" test -n "$P1IDX"
check "custos started with two listener slots (m1, p1)" test "$NSLOTS" = 2
check "p1 reads pub through egress.port + 1 at start (200)" test "$(status p1-start)" = 200

# 1. Refused: p1 removed and m2 added, but the policy does not compile. m2's sandbox was
# started (the reload is refused after it), p1's listener is not closed.
conf "$(eg_model_yaml m2 "http://localhost:$P_PUB/catalogue")"
policy broken
OUT=$(eg_reload); echo "reload: $OUT" | cut -c1-300
check "the reload with a broken policy is refused" bash -c "! grep -q 'http=200' <<<'$OUT'"
check "after m2's sandbox was started" grep -q 'model m2: sandbox started' up.log
check "p1's listener still serves (200)" test "$(status p1-after-refusal)" = 200
eg_wait 30 event p1 p1-after-refusal
check "audited as p1" grep -q '"model":"p1"' <<<"$EV"
unrouted() { ! eg_chat m2 x | grep -q 'http=200'; }
check "m2 is not routed (its sandbox was stopped)" unrouted
check "no listener was added by the refused reload" test "$(made | wc -l)" = 2

# 2. The same custos.yaml with the policy fixed: applied. p1's listener is closed before m2's
# is added, so m2's takes p1's slot: still two slots.
policy
OUT=$(eg_reload); echo "reload: $OUT" | cut -c1-300
check "the reload removing p1 and adding m2 is applied" grep -q 'http=200' <<<"$OUT"
eg_wait 30 closed
check "p1's listener is closed" closed
M2IDX=$(made | awk '$2 == "m2" { print $1 }' | tail -1)
check "m2 has an egress listener" test -n "$M2IDX"
check "m2's listener took p1's slot ($P1IDX; it got ${M2IDX:-none})" test "$M2IDX" = "$P1IDX"
check "logged as taken again" grep -q "egress: listener $P1IDX taken again" up.log
check "the listener slots are still two" test "$(made | awk '{ print $1 }' | sort -un | wc -l)" = 2
OUT=$(eg_chat m2 "read the catalogue"); echo "m2: $OUT" | cut -c1-300
check "m2 reads pub through its listener (200)" grep -q '200 hello from pub /catalogue' <<<"$OUT"
eg_wait 30 event m2 catalogue
check "audited as m2 in its sandbox" grep -q '"model":"m2","sandbox":"fx"' <<<"$EV"
OUT=$(eg_chat m1 "who works here?"); echo "m1: $OUT" | cut -c1-300
check "m1 reads hr through its own listener throughout" grep -q '200 hello from hr /employees' <<<"$OUT"

kill $UP; wait $UP
check "no sanitizer report" bash -c "! grep -qE 'Sanitizer|runtime error' up.log"
if [ $FAILS -ne 0 ]; then grep -v egress.request up.log | tail -30 | cut -c1-300; echo "$FAILS failed"; exit 1; fi
echo "all checks passed"
