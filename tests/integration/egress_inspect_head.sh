#!/usr/bin/env bash
# Egress response inspection and answers without a body (docs/EGRESS.md "Content inspection"):
# a rule with inspect: response: on a source whose HEAD answers carry heads that inspection
# holds (application/json with Content-Length: 1234, the same under Content-Encoding: gzip,
# Content-Length: 9000000 over egress.inspect.max_body and max_held, NDJSON, a form,
# multipart, an SSE head), a 304 to a conditional GET and a 204, through the real custos up:
# curl (-I, conditional GET) and a Python http.client client that sends them all, with GETs of
# inspected JSON between them, on one keep-alive connection. Each passes at once with the
# source's head (its Content-Length kept), nothing refused (no 502/403/503), the connection
# stays in step (one connect for the whole sequence, the GETs after a HEAD masked), every call
# audited once (egress.request, allow, response:none) and reaching the source once, and (with
# the test hooks) nothing held for inspection after any call. Plain HTTP and an intercepted
# HTTPS source alike. With CUSTOS_EGRESS_FORWARD=threads set by the caller
# (egress_inspect_head_threads.sh) the same checks run on the thread path.
set -u
. "${CUSTOS_SRC:?}/tests/integration/egress_lib.bash"
eg_init eghead curl openssl python3 timeout
P_IN=$(port); P_EG=$(port)

cd "$W" || exit 1
eg_upstream_pki
PEER="$SRC/tests/integration/egress_head_peer.py"
python3 "$PEER" server "$W/src" "$W/src.log" & PIDS+=($!)
python3 "$PEER" server "$W/tls" "$W/src.log" srv.crt srv.key & PIDS+=($!)
P_D=$(eg_port_file "$W/src.port") || exit 1
P_T=$(eg_port_file "$W/tls.port") || exit 1

SRCS="$(eg_source_yaml plain "http://localhost:$P_D/" internal)
$(eg_source_yaml icpt "https://localhost:$P_T/" internal "intercept: true, ca_file: \"$W/upca.crt\"")"
eg_m1_conf info "$SRCS" "  ca_dir: \"$W/ca\"
$EG_TIMEOUTS
  inspect: { max_body: 64KiB, max_held: 849KiB }"
eg_m1_policy <<EOY
  plain: { url: "http://localhost:$P_D/", classification: internal }
  icpt: { url: "https://localhost:$P_T/", classification: internal }
rules:
  - id: read-inspected
    effect: allow
    when: { direction: egress, data: [plain, icpt], method: [GET, HEAD] }
    inspect:
      response: { email: redact, aws_access_key: deny }
EOY
chmod 600 custos.yaml policy.yaml
HOOKS=${CUSTOS_TEST_HOOKS:-0}
CUSTOS_TEST_EGRESS_HELD_LOG=1 eg_start "$P_D" "$P_T"

# hdr NAME: the value of the field NAME in hdr.txt (the last answer's head), "-" when absent
hdr() { awk -v n="$1:" 'tolower($1)==tolower(n){sub(/^[^:]*: */,""); v=$0} END{print (v==""?"-":v)}' <(tr -d '\r' <hdr.txt); }
# ask KIND BASE PATH [curl args]: curl through the egress proxy (for https, a tunnel with
# custos' CA), the head in hdr.txt, the body in body.txt; prints "STATUS exit=RC"
ask() {
	local base=$2 path=$3 rc code
	shift 3
	rm -f body.txt hdr.txt
	code=$(curl -s -o body.txt -D hdr.txt -w '%{http_code}' --max-time 20 -x "$PX" \
		--cacert "$W/ca/ca.crt" "$@" "$base$path")
	rc=$?
	echo "$code exit=$rc"
}
# seen PATH [TEXT...]: an event for PATH (holding every TEXT) is in the trail and the source
# logged PATH. Both come a moment after the answer: the audit writer batches, and the source
# appends to src.log after it sent its answer (the last call on a connection is not followed by
# another that would wait for that line).
seen() { eg_at_least 1 "\"path\":\"$1\"" "${@:2}" && grep -qE "^[A-Z]+ $1\$" src.log; }
# once PATH STATUS: the call for PATH audited exactly once (its event: allow, STATUS,
# response:none) and seen by the source exactly once
once() {
	local n ev s
	eg_wait 30 seen "$1" || true
	n=$(eg_count "\"path\":\"$1\"")
	ev=$(eg_event_now "$1\"")
	s=$(grep -cE "^[A-Z]+ $1\$" src.log)
	if [ "$n" = 1 ] && [ "$s" = 1 ] && grep -qF '"decision":"allow"' <<<"$ev" &&
		grep -qF "\"status\":$2," <<<"$ev" && grep -qF '"inspect":"response:none"' <<<"$ev"; then
		return 0
	fi
	echo "  ($1: $n event(s), $s at the source: $ev)"
	return 1
}

run() { # run KIND BASE: every check through one source
	local k=$1 base=$2 a out want
	# HEAD one at a time, with curl -I: the source's head, nothing held or refused
	a=$(ask "$k" "$base" "/json/$k-head" -I)
	check "$k: HEAD of an inspected JSON source: 200 at once ($a), Content-Type and Content-Length: 1234 kept" \
		bash -c "[ '$a' = '200 exit=0' ] && [ '$(hdr Content-Type)' = application/json ] && [ '$(hdr Content-Length)' = 1234 ] && [ '$(hdr Transfer-Encoding)' = - ] && [ '$(hdr X-Custos-Reason)' = - ]"
	check "$k: ... audited once (allow, 200, response:none), at the source once" once "/json/$k-head" 200
	a=$(ask "$k" "$base" "/gzip/$k-head" -I)
	check "$k: HEAD whose head says Content-Encoding: gzip: 200 ($a), not refused, the coding and length kept" \
		bash -c "[ '$a' = '200 exit=0' ] && [ '$(hdr Content-Encoding)' = gzip ] && [ '$(hdr Content-Length)' = 1234 ] && [ '$(hdr X-Custos-Reason)' = - ]"
	check "$k: ... audited once" once "/gzip/$k-head" 200
	a=$(ask "$k" "$base" "/big/$k-head" -I)
	check "$k: HEAD with Content-Length: 9000000 (over max_body 64KiB and max_held 849KiB): 200 ($a), not 502/503, the length kept" \
		bash -c "[ '$a' = '200 exit=0' ] && [ '$(hdr Content-Length)' = 9000000 ] && [ '$(hdr X-Custos-Reason)' = - ]"
	check "$k: ... audited once" once "/big/$k-head" 200
	for t in sse:text/event-stream ndjson:application/x-ndjson form:application/x-www-form-urlencoded "mp:multipart/mixed; boundary=XyZ"; do
		a=$(ask "$k" "$base" "/${t%%:*}/$k-head" -I)
		check "$k: HEAD of a ${t#*:} head: 200 ($a), its head kept" \
			bash -c "[ '$a' = '200 exit=0' ] && [ '$(hdr Content-Type)' = '${t#*:}' ] && [ '$(hdr X-Custos-Reason)' = - ]"
		check "$k: ... audited once" once "/${t%%:*}/$k-head" 200
	done
	a=$(ask "$k" "$base" "/cond/$k-304" -H 'If-None-Match: "v1"')
	check "$k: a conditional GET answered 304 ($a), ETag and Content-Length kept, no body" \
		bash -c "[ '$a' = '304 exit=0' ] && [ '$(hdr ETag)' = '\"v1\"' ] && [ '$(hdr Content-Length)' = 1234 ] && [ ! -s body.txt ]"
	check "$k: ... audited once" once "/cond/$k-304" 304
	a=$(ask "$k" "$base" "/nc/$k-204")
	check "$k: a 204 under application/json passes ($a), no body" \
		bash -c "[ '$a' = '204 exit=0' ] && [ '$(hdr X-Custos-Reason)' = - ] && [ ! -s body.txt ]"
	check "$k: ... audited once" once "/nc/$k-204" 204
	a=$(ask "$k" "$base" "/json/$k-get")
	check "$k: a GET of the same JSON is inspected: 200 ($a), the address masked" \
		bash -c "[ '$a' = '200 exit=0' ] && grep -qF '[REDACTED:EMAIL]' body.txt && ! grep -q jane body.txt"

	# One keep-alive connection: HEAD, then GET, and every bodyless answer between GETs
	out=$(timeout 120 python3 "$PEER" client "$P_EG" "$base" "$W/ca/ca.crt" \
		"HEAD /json/$k-ka1" "GET /json/$k-ka2" "HEAD /gzip/$k-ka3" "HEAD /big/$k-ka4" \
		"HEAD /sse/$k-ka5" "GET /json/$k-ka6" 'GET /cond/'"$k"'-ka7 "v1"' "GET /nc/$k-ka8" \
		"GET /json/$k-ka9" 2>&1)
	want="HEAD /json/$k-ka1 -> 200 ct=application/json cl=1234 ce=- te=- body=0 mail=-
GET /json/$k-ka2 -> 200 ct=application/json cl=- ce=- te=chunked body=1230 mail=masked
HEAD /gzip/$k-ka3 -> 200 ct=application/json cl=1234 ce=gzip te=- body=0 mail=-
HEAD /big/$k-ka4 -> 200 ct=application/json cl=9000000 ce=- te=- body=0 mail=-
HEAD /sse/$k-ka5 -> 200 ct=text/event-stream cl=- ce=- te=- body=0 mail=-
GET /json/$k-ka6 -> 200 ct=application/json cl=- ce=- te=chunked body=1230 mail=masked
GET /cond/$k-ka7 -> 304 ct=application/json cl=1234 ce=- te=- body=0 mail=-
GET /nc/$k-ka8 -> 204 ct=application/json cl=- ce=- te=- body=0 mail=-
GET /json/$k-ka9 -> 200 ct=application/json cl=- ce=- te=chunked body=1230 mail=masked
connects=1"
	check "$k: HEAD, GET, HEADs (gzip, over the limits, SSE), GET, 304, 204, GET on one keep-alive connection, each answer in step" \
		test "$out" = "$want"
	[ "$out" = "$want" ] || diff <(echo "$want") <(echo "$out") | sed 's/^/    /'
	for p in json/$k-ka1:200 json/$k-ka2:200 gzip/$k-ka3:200 big/$k-ka4:200 sse/$k-ka5:200 json/$k-ka6:200 cond/$k-ka7:304 nc/$k-ka8:204 json/$k-ka9:200; do
		[[ $p == json/*-ka[269]:* ]] && continue # inspected GETs: response:redact
		check "$k: keep-alive /${p%%:*} audited once" once "/${p%%:*}" "${p#*:}"
	done
	local g=0
	for p in ka2 ka6 ka9; do
		eg_wait 30 seen "/json/$k-$p" '"inspect":"response:redact"' || true
		[ "$(eg_count "\"path\":\"/json/$k-$p\"" '"inspect":"response:redact"')" = 1 ] &&
			[ "$(grep -c "^GET /json/$k-$p\$" src.log)" = 1 ] && g=$((g + 1))
	done
	check "$k: keep-alive GETs of JSON audited once each as response:redact, at the source once ($g of 3)" test "$g" = 3
}

run plain "http://localhost:$P_D"
run icpt "https://localhost:$P_T"

# 38 calls and the 11 CONNECTs of the intercepted ones. Not every call's event was waited for
# above (the GET of /json/KIND-get in each run was not), and an event comes once its answer
# went out: wait for all 49 before counting them.
eg_wait 30 eg_at_least 49 '"egress.request' || true
n_all=$(eg_count '"egress.request'); n_allow=$(eg_count '"egress.request' '"decision":"allow"')
n_bad=$(eg_events | grep -cE '"status":(403|502|503)')
check "no call refused or failed: $n_allow of $n_all events allow (49 expected), $n_bad with 403/502/503" \
	bash -c "[ $n_all = 49 ] && [ $n_allow = $n_all ] && [ $n_bad = 0 ]"
if [ "$HOOKS" = 1 ]; then
	# custos' count of bytes held for inspection (every connection) as each call ended: 0
	# after every one, the bodyless calls and the inspected GETs alike (the forward loop's
	# client buffer, grown for an inspected body, is given back before the call's event, also
	# on a keep-alive connection that goes on)
	held=$(grep -o 'test hook: [^ ]* ended: [0-9]* bytes held' up.log)
	n=$(grep -c . <<<"$held")
	nz=$(grep -vc 'ended: 0 bytes' <<<"$held")
	grep -v 'ended: 0 bytes' <<<"$held" | head -3
	check "test hook: nothing held for inspection as any call ended ($n logged, $nz not 0)" \
		bash -c "[ $n -ge 38 ] && [ $nz = 0 ]"
	check "test hook: nothing held at the end ($(tail -1 <<<"$held"))" grep -q 'ended: 0 bytes held' <<<"$(tail -1 <<<"$held")"
fi
eg_stop
eg_done
