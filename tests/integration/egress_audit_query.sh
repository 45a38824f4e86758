#!/usr/bin/env bash
# audit.query (docs/AUDIT.md, "Query strings"): the audited path of an egress call keeps its
# query string's parameter names, each value replaced by the marker U+2026, by default; a call
# refused by policy before any inspection, with a token in its query, leaves no value in the
# trail. audit.query: full keeps the values (as sent), none drops the query string. An ingress
# request's audited path follows the same setting.
set -u
. "${CUSTOS_SRC:?}/tests/integration/egress_lib.bash"
eg_init egress-audit-query curl python3

P_HTTP=$(port); P_MODEL=$(port); P_IN=$(port); P_EG=$(port)
cd "$W"
FX="$SRC/tests/integration/egress_upstream.py"
python3 "$FX" data "$P_HTTP" plain & PIDS+=($!)
python3 "$FX" model "$P_MODEL" "http://127.0.0.1:$P_EG" "http://localhost:$P_HTTP/" & PIDS+=($!)
SECRET=SEKRETtoken4711
MARK=$(printf '\xe2\x80\xa6')

write_config() { # write_config AUDIT_QUERY_LINE
	cat >custos.yaml <<EOY
version: 1
listeners:
  - id: local
    address: "127.0.0.1:$P_IN"
models:
  - { id: m1, upstream: { url: "http://127.0.0.1:$P_MODEL" } }
data_sources:
  - { id: web, url: "http://localhost:$P_HTTP/", classification: internal, allow_private_addresses: true }
egress:
  port: $P_EG
audit:
  dir: "$W/audit-$2"
$1
policy:
  file: "$W/policy.yaml"
EOY
	chmod 600 custos.yaml
}
cat >policy.yaml <<EOY
version: 1
models:
  m1: { isolation: none }
data:
  web: { url: "http://localhost:$P_HTTP/", classification: internal }
rules:
  - id: read
    effect: allow
    when: { direction: egress, data: web, method: GET }
EOY
chmod 644 policy.yaml

# JSON may carry the marker raw or as \u2026: both read as the marker here.
events() { cat "$W/audit-$1"/*.jsonl 2>/dev/null | sed 's/\\u2026/'"$MARK"'/g; s/\\"/"/g'; }
EV=""
event() { EV=$(events "$1" | grep -F "$2" | grep -F "$3" | tail -1); [ -n "$EV" ]; }

# run MODE: custos with audit.query MODE (none written: the default), one egress call refused by
# policy (DELETE: only GET is allowed) with the secret in its query, one allowed, one ingress
# request with the secret in its query.
run() {
	local mode=$1 line=""
	[ "$mode" = default ] || line="  query: $mode"
	write_config "$line" "$mode"
	"$BIN" up -c custos.yaml >"up-$mode.log" 2>&1 &
	UP=$!
	PIDS+=($UP)
	eg_up "$UP" "up-$mode.log" "$P_EG" "$P_HTTP"
	DENY=$(curl -s --max-time 20 -o /dev/null -w '%{http_code}' -X DELETE -x "http://127.0.0.1:$P_EG" "http://localhost:$P_HTTP/del-$mode?api_key=$SECRET&page=2")
	ALLOW=$(curl -s --max-time 20 -o /dev/null -w '%{http_code}' -x "http://127.0.0.1:$P_EG" "http://localhost:$P_HTTP/get-$mode?token=$SECRET")
	curl -s --max-time 20 -o /dev/null -H 'Content-Type: application/json' -d '{"model":"m1","messages":[]}' "http://127.0.0.1:$P_IN/v1/chat/completions?token=$SECRET&x=1"
	eg_wait 30 event "$mode" '"type":"egress.request"' "del-$mode"; DEV=$EV
	eg_wait 30 event "$mode" '"type":"egress.request"' "get-$mode"; GEV=$EV
	eg_wait 30 event "$mode" '"direction":"ingress"' "chat/completions"; IEV=$EV
	kill "$UP"
	wait "$UP" 2>/dev/null
	grep -E 'Sanitizer|runtime error' "up-$mode.log" && bad "$mode: sanitizer report in the log"
}

run default
check "default: the call is refused by policy (403, got $DENY)" test "$DENY" = 403
check "default: the refusal is audited with the parameter names, each value the marker" \
	grep -qF "\"path\":\"/del-default?api_key=$MARK&page=$MARK\"" <<<"$DEV"
check "default: an allowed call likewise" grep -qF "\"path\":\"/get-default?token=$MARK\"" <<<"$GEV"
check "default: an ingress request likewise" grep -qF "\"path\":\"/v1/chat/completions?token=$MARK&x=$MARK\"" <<<"$IEV"
check "default: the secret is nowhere in the trail" bash -c "! grep -rq '$SECRET' '$W/audit-default'"
check "default: the proxy logs the secret nowhere either" bash -c "! grep -q '$SECRET' '$W/up-default.log'"

run full
check "full: the call is refused by policy (403, got $DENY)" test "$DENY" = 403
check "full: the refusal is audited with the query as sent" \
	grep -qF "\"path\":\"/del-full?api_key=$SECRET&page=2\"" <<<"$DEV"
check "full: an ingress request likewise" grep -qF "\"path\":\"/v1/chat/completions?token=$SECRET&x=1\"" <<<"$IEV"

run none
check "none: the refusal is audited without the query string" grep -qF '"path":"/del-none"' <<<"$DEV"
check "none: an ingress request likewise" grep -qF '"path":"/v1/chat/completions"' <<<"$IEV"
check "none: the secret is nowhere in the trail" bash -c "! grep -rq '$SECRET' '$W/audit-none'"

if [ "$FAILS" -ne 0 ]; then
	echo "DEV: $DEV"; echo "GEV: $GEV"; echo "IEV: $IEV"
	for f in up-*.log; do tail -20 "$f" | cut -c1-300; done
fi
[ "$FAILS" -eq 0 ]
