#!/usr/bin/env bash
# A model without a sandbox that a reload adds gets its egress listener as at start
# (docs/EGRESS.md, "Listeners"): 127.0.0.1:(egress.port + its place in models), served once the
# reload is applied, its calls audited as that model; a reload that removes it closes that
# listener (one custos started with too); a reload adding a model whose port another model's
# listener holds (models moved) is refused whole, naming the model, and the previous
# configuration stays.
set -u
. "${CUSTOS_SRC:?}/tests/integration/egress_lib.bash"
eg_init egress-reload-plain curl python3

P_HTTP=$(port); P_MODEL=$(port); P_IN=$(port); P_EG=$(port)
P_EG1=$((P_EG + 1))
cd "$W"
FX="$SRC/tests/integration/egress_upstream.py"
python3 "$FX" data "$P_HTTP" plain & PIDS+=($!)
python3 "$FX" model "$P_MODEL" "http://127.0.0.1:$P_EG" "http://localhost:$P_HTTP/" & PIDS+=($!)
(exec 3<>"/dev/tcp/127.0.0.1/$P_EG1") 2>/dev/null && { echo "SKIPPED: port $P_EG1 (egress.port + 1) is taken"; exit 77; }

model() { echo "  - { id: $1, upstream: { url: \"http://127.0.0.1:$P_MODEL\" } }"; }
write_config() { # write_config MODEL_LINES
	cat >custos.yaml <<EOY
version: 1
listeners:
  - id: local
    address: "127.0.0.1:$P_IN"
models:
$1
data_sources:
  - { id: web, url: "http://localhost:$P_HTTP/", classification: internal, allow_private_addresses: true }
egress:
  port: $P_EG
audit:
  dir: "$W/audit"
admin:
  socket: "$W/admin.sock"
policy:
  file: "$W/policy.yaml"
EOY
	chmod 600 custos.yaml
}
cat >policy.yaml <<EOY
version: 1
models:
  m1: { isolation: none }
  m2: { isolation: none }
  m3: { isolation: none }
data:
  web: { url: "http://localhost:$P_HTTP/", classification: internal }
rules:
  - id: read
    effect: allow
    when: { direction: egress, data: web, method: GET }
EOY
chmod 644 policy.yaml
write_config "$(model m1)"
"$BIN" up -c custos.yaml >up.log 2>&1 & UP=$!
PIDS+=($UP)
eg_up "$UP" up.log "$P_EG" "$P_HTTP"
eg_wait 60 test -S "$W/admin.sock" || bad "no admin socket"
ctl() { "$BIN" ctl --socket "$W/admin.sock" "$@"; }
# status PORT PATH: the egress answer for a GET of PATH through the listener on PORT.
status() { curl -s --max-time 20 -o /dev/null -w '%{http_code}' -x "http://127.0.0.1:$1" "http://localhost:$P_HTTP/$2"; }
closed() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
events() { cat "$W"/audit/*.jsonl 2>/dev/null | grep '"egress.request"' | sed 's/\\"/"/g'; }
EV=""
event() { EV=$(events | grep '"model":"'"$1"'"' | grep "$2" | tail -1); [ -n "$EV" ]; }

check "m1 reads through its listener at start (200)" test "$(status "$P_EG" m1-start)" = 200
check "no listener on egress.port + 1 before m2 is added" closed "$P_EG1"

# 1. Add m2 (second in models): its listener is egress.port + 1, served once the reload applied.
write_config "$(model m1)
$(model m2)"
ctl policy reload >ctl.out 2>&1; rc=$?; cat ctl.out | cut -c1-300
check "the reload adding m2 is applied" test "$rc" = 0
check "m2 reads through egress.port + 1 (200)" test "$(status "$P_EG1" m2-added)" = 200
eg_wait 30 event m2 m2-added
check "that call is audited as m2" grep -q '"model":"m2"' <<<"$EV"
check "m1 still reads through its own listener (200)" test "$(status "$P_EG" m1-after-add)" = 200
eg_wait 30 event m1 m1-after-add
check "audited as m1" grep -q '"model":"m1"' <<<"$EV"

# 2. A model added first in models would take egress.port + 0, m1's: refused whole.
write_config "$(model m3)
$(model m1)
$(model m2)"
ctl policy reload >ctl.out 2>&1; rc=$?; cat ctl.out | cut -c1-300
check "the reload adding m3 on m1's port is refused" test "$rc" != 0
check "the refusal names m3" grep -q 'm3' ctl.out
check "m1's listener still serves m1 (200)" test "$(status "$P_EG" m1-after-refusal)" = 200
eg_wait 30 event m1 m1-after-refusal
check "audited as m1" grep -q '"model":"m1"' <<<"$EV"
check "m2's listener still serves (200)" test "$(status "$P_EG1" m2-after-refusal)" = 200

# 3. Remove m2: its listener is closed (within the accept thread's poll interval).
write_config "$(model m1)"
ctl policy reload >ctl.out 2>&1; rc=$?; cat ctl.out | cut -c1-300
check "the reload removing m2 is applied" test "$rc" = 0
eg_wait 30 closed "$P_EG1"
check "m2's listener is closed" closed "$P_EG1"
check "m1 still reads (200)" test "$(status "$P_EG" m1-after-remove)" = 200

# 4. Add it again: a new listener on the same port.
write_config "$(model m1)
$(model m2)"
eg_wait 30 closed "$P_EG1"
ctl policy reload >ctl.out 2>&1; rc=$?; cat ctl.out | cut -c1-300
check "the reload adding m2 again is applied" test "$rc" = 0
check "m2 reads through egress.port + 1 again (200)" test "$(status "$P_EG1" m2-again)" = 200
eg_wait 30 event m2 m2-again
check "audited as m2" grep -q '"model":"m2"' <<<"$EV"

# 5. Remove m1, which custos started with: its listener (egress.port + 0) is closed; m2, first
# in models now, keeps its listener on egress.port + 1.
write_config "$(model m2)"
ctl policy reload >ctl.out 2>&1; rc=$?; cat ctl.out | cut -c1-300
check "the reload removing m1 is applied" test "$rc" = 0
eg_wait 30 closed "$P_EG"
check "m1's listener is closed" closed "$P_EG"
check "m2 still reads through egress.port + 1 (200)" test "$(status "$P_EG1" m2-alone)" = 200

kill "$UP"
wait "$UP" 2>/dev/null
grep -E 'Sanitizer|runtime error' up.log && bad "sanitizer report in the log"
if [ "$FAILS" -ne 0 ]; then tail -30 up.log | cut -c1-300; fi
[ "$FAILS" -eq 0 ]
