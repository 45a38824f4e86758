#!/usr/bin/env bash
# The audited path of an egress call refused before its path was inspected (docs/EGRESS.md
# "Content inspection", "Refused before inspection"), end to end: the real custos binary
# (custos up, audit.query: full), curl through the egress listener, a loopback data source
# over HTTP and HTTPS. The policy inspects requests on one rule only; every call below is
# refused before that rule's inspection ever ran: by policy (DELETE is not allowed), for a path
# outside every data source and for a host that is none, for a ';' in the path, for a %2F, by
# the SSRF check after policy allowed it, inside an intercepted tunnel by policy and for a Host
# that differs from the CONNECT authority. Each carries a card number, an AWS key, an e-mail
# address or an IPv4 address in a path segment or in its query: the audited path has each such
# segment replaced by its detector's mask, the query's values masked, and neither the audit
# trail nor the debug log holds one of the values; a path cut to fit the event has its end
# masked whole. With CUSTOS_EGRESS_FORWARD=threads set by
# the caller (egress_refused_path_threads.sh) the same checks run on the thread path.
set -u
. "${CUSTOS_SRC:?}/tests/integration/egress_lib.bash"
eg_init egrefpath curl openssl python3
P_IN=$(port); P_EG=$(port)

cd "$W"
eg_upstream_pki
eg_record_source

# ssrf: a source on loopback without allow_private_addresses (policy allows it, SSRF refuses)
SRCS="$(eg_source_yaml up "http://localhost:$P_D/up/" internal)
  - { id: ssrf, url: \"http://localhost:$P_D/ssrf/\", classification: internal }
$(eg_source_yaml icpt "https://localhost:$P_T/" internal "intercept: true, ca_file: \"$W/upca.crt\"")"
eg_m1_conf debug "$SRCS" "  ca_dir: \"$W/ca\"
$EG_TIMEOUTS" "  query: full"
cat >policy.yaml <<EOY
version: 1
models:
  m1: { isolation: process }
data:
  up: { url: "http://localhost:$P_D/up/", classification: internal }
  ssrf: { url: "http://localhost:$P_D/ssrf/", classification: internal }
  icpt: { url: "https://localhost:$P_T/", classification: internal }
rules:
  - id: lookup
    effect: allow
    when: { direction: egress, data: [up, ssrf, icpt], method: GET }
    inspect:
      request: { payment_card: deny, aws_access_key: deny, email: redact, ipv4: log }
EOY
chmod 600 policy.yaml custos.yaml

eg_start "$P_D" "$P_T"

CARD=4111111111111111 AKEY=AKIAIOSFODNN7EXAMPLE MAIL=jane.doe@example.com IP=10.1.2.3
MCARD=%5BREDACTED%3APAYMENT_CARD%5D MKEY=%5BREDACTED%3AAWS_ACCESS_KEY%5D
MMAIL=%5BREDACTED%3AEMAIL%5D MIP=%5BREDACTED%3AIPV4%5D
get() { curl -s -o /dev/null -w '%{http_code}' -x "$PX" "$@"; }
# refused CODE PATH-AUDITED DESC CURL-ARGS...: the call answered CODE, its event's path exactly
# PATH-AUDITED, no value in it
refused() {
	local want=$1 apath=$2 desc=$3 code ev
	shift 3
	code=$(get "$@")
	check "$desc: refused $want (code $code)" test "$code" = "$want"
	ev=$(eg_event "${apath%%\?*}")
	check "$desc: audited with the path $apath" grep -qF "\"path\":\"$apath\"" <<<"$ev"
	check "$desc: no value in the event" \
		bash -c "! grep -q -e '$CARD' -e 'KIAIOSFODNN7' -e 'jane.doe' -e '$IP' <<<\"\$1\"" _ "$ev"
}

refused 403 "/up/v1/users/$MCARD/orders?k=$MKEY&n=1" "refused by policy (DELETE)" \
	-X DELETE "http://localhost:$P_D/up/v1/users/$CARD/orders?k=$AKEY&n=1"
refused 403 "/elsewhere/$MKEY/x" "path outside every data source" \
	"http://localhost:$P_D/elsewhere/$AKEY/x"
refused 403 "/nosrc/$MMAIL" "host that is no data source" \
	"http://127.0.0.1:$P_D/nosrc/jane.doe%40example.com"
refused 400 "/up/semi;x/$MCARD" "';' in the path" \
	"http://localhost:$P_D/up/semi;x/$CARD"
refused 400 "/up/slash%2Fx/$MCARD" "%2F in the path (ambiguous)" \
	"http://localhost:$P_D/up/slash%2Fx/$CARD"
refused 403 "/ssrf/hosts/$MIP/status" "SSRF after policy allowed it" \
	"http://localhost:$P_D/ssrf/hosts/$IP/status"
refused 403 "/t/del/$MCARD" "intercepted HTTPS, refused by policy (DELETE)" \
	--cacert "$W/ca/ca.crt" -X DELETE "https://localhost:$P_T/t/del/$CARD"
refused 400 "/t/host/$MKEY" "intercepted HTTPS, Host differs from the CONNECT authority" \
	--cacert "$W/ca/ca.crt" -H 'Host: other.example' "https://localhost:$P_T/t/host/$AKEY"
# A path longer than the event keeps (511 bytes): the card's segment before the cut, the cut
# one after it; from the last '/' that leaves room for the mask on, the path is masked whole.
LONGSEG=$(printf 'y%.0s' $(seq 480)) TAIL=$(printf 'w%.0s' $(seq 40))
refused 403 "/up/$LONGSEG/%5BREDACTED%5D" "path cut to fit the event, refused by policy" \
	-X DELETE "http://localhost:$P_D/up/$LONGSEG/$CARD/$TAIL"
check "the source received none of these calls" bash -c "! grep -q -e '$CARD' -e KIAIOSFODNN7 -e jane.doe -e '$IP' targets.txt 2>/dev/null"

eg_stop
check "the audit trail and the debug log never hold a value of a refused path" \
	bash -c "! { cat $W/audit/* up.log 2>/dev/null | grep -q -e '$CARD' -e 'KIAIOSFODNN7' -e 'jane.doe' -e '$IP'; }"
if [ $FAILS -ne 0 ]; then
	echo "--- custos log (tail)"; grep -v '"egress.request' up.log | tail -30 | cut -c1-400
	echo "--- egress events"; eg_events | cut -c1-600
	echo "$FAILS check(s) failed"; exit 1
fi
echo "all refused-path checks passed"
