#!/usr/bin/env bash
# The egress proxy at its edges, through custos up with raw sources and raw clients. Inside an
# intercepted tunnel the Host field must name the CONNECT authority, and a wrong or missing SNI
# is refused with an unrecognized_name alert during the handshake, as in a plain tunnel.
# On both forward paths (the loops and CUSTOS_EGRESS_FORWARD=threads) and inside an
# intercepted tunnel: HEAD keeps the source's Content-Length; a 101, a bare LF, an obs-fold, no
# status line, two Content-Length fields, Content-Length with chunked, "chunked, chunked" and an
# unknown coding are refused with their own reason (in the answer and the audit event); a 103
# is skipped and bytes past a Content-Length body never answer the next request; a response over max_response is audited as "error" whether its
# Content-Length shows it or it is cut while streamed.
# ';' in a path (path parameters) is refused, on both paths and inside a tunnel.
set -u
. "${CUSTOS_SRC:?}/tests/integration/egress_lib.bash"
eg_init egedge curl openssl python3 timeout
P_SRC=$(port); P_ICPT=$(port); P_DIRECT=$(port); P_IN=$(port); P_EG=$(port)
cd "$W"
PEER="$SRC/tests/integration/egress_edges_peer.py"

eg_upstream_pki

python3 "$PEER" server "$P_SRC" "$W/src.log" & PIDS+=($!)
python3 "$PEER" server "$P_ICPT" "$W/icpt.log" srv.crt srv.key & PIDS+=($!)
python3 "$PEER" server "$P_DIRECT" "$W/direct.log" srv.crt srv.key & PIDS+=($!)

cat >custos.yaml <<EOY
version: 1
log: { level: info, format: json }
listeners:
  - { id: local, address: "127.0.0.1:$P_IN" }
models:
  - { id: m1, upstream: { url: "http://127.0.0.1:9" } }
data_sources:
  - { id: web, url: "http://127.0.0.1:$P_SRC/", classification: internal, allow_private_addresses: true }
  - { id: cap, url: "http://127.0.0.1:$P_SRC/cap/", classification: internal, allow_private_addresses: true, max_response: 1KiB }
  - { id: icpt, url: "https://localhost:$P_ICPT/", classification: internal, allow_private_addresses: true, intercept: true, ca_file: "$W/upca.crt" }
  - { id: icptip, url: "https://127.0.0.1:$P_ICPT/", classification: internal, allow_private_addresses: true, intercept: true, ca_file: "$W/upca.crt" }
  - { id: icap, url: "https://localhost:$P_ICPT/cap/", classification: internal, allow_private_addresses: true, intercept: true, ca_file: "$W/upca.crt", max_response: 1KiB }
  - { id: direct, url: "https://localhost:$P_DIRECT/", classification: internal, allow_private_addresses: true }
egress:
  port: $P_EG
  ca_dir: "$W/ca"
  timeouts: { connect: 2s, read: 5s, idle: 5s }
audit: { dir: "$W/audit" }
policy: { file: "$W/policy.yaml" }
EOY
eg_m1_policy <<EOY
  web: { url: "http://127.0.0.1:$P_SRC/", classification: internal }
  cap: { url: "http://127.0.0.1:$P_SRC/cap/", classification: internal }
  icpt: { url: "https://localhost:$P_ICPT/", classification: internal }
  icptip: { url: "https://127.0.0.1:$P_ICPT/", classification: internal }
  icap: { url: "https://localhost:$P_ICPT/cap/", classification: internal }
  direct: { url: "https://localhost:$P_DIRECT/", classification: internal }
rules:
  - id: all
    effect: allow
    when: { direction: egress, data: [web, cap, icpt, icptip, icap, direct] }
EOY
chmod 600 custos.yaml policy.yaml

events() { cat "$W"/audit/* 2>/dev/null | grep '"egress.request"' | sed 's/\\"/"/g'; }
# audited TEXT...: an egress.request event holding every TEXT, waited for (30 s: the writer
# batches)
audited_now() {
	local ev t
	ev=$(events)
	for t in "$@"; do ev=$(grep -F -- "$t" <<<"$ev"); done
	[ -n "$ev" ]
}
audited() { eg_wait 30 audited_now "$@"; }
# answer URL [curl args]: "STATUS|X-Custos-Reason" of the (last) answer
answer() {
	local u=$1
	shift
	curl -s -o /dev/null -D - --max-time 10 "$@" "$u" | tr -d '\r' |
		awk '/^HTTP\//{s=$2; r=""} tolower($1)=="x-custos-reason:"{sub(/^[^:]*: /,""); r=$0} END{print s "|" r}'
}

start_up() {
	"$BIN" up -c custos.yaml >"up-$1.log" 2>&1 &
	UP=$!
	PIDS+=($UP)
	eg_up $UP "up-$1.log" "$P_EG" "$P_SRC"
}
stop_up() {
	kill $UP
	wait $UP
	local rc=$?
	PIDS=("${PIDS[@]/$UP}")
	check "$1: custos up stops cleanly (exit $rc, no sanitizer report)" \
		bash -c "[ $rc = 0 ] && ! grep -q -e 'ERROR: AddressSanitizer' -e 'ERROR: LeakSanitizer' -e 'runtime error' $W/up-$1.log"
	rm -rf "$W/audit"
}

# Inside an intercepted tunnel: the Host field against the CONNECT authority; the SNI rule.
PX="127.0.0.1:$P_EG"
T() { timeout 20 python3 "$PEER" tunnel "$PX" "$P_ICPT" "$W/ca/ca.crt" "$1"; }
# sclient HOST PORT CA PATH [S_CLIENT ARGS]: GET PATH with openssl s_client through a tunnel
# to HOST:PORT (the SNI is HOST unless ARGS say otherwise); prints what s_client says.
sclient() {
	local h=$1 p=$2 ca=$3 path=$4
	shift 4
	printf 'GET %s HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\n\r\n' "$path" "$h" "$p" |
		timeout 20 openssl s_client -proxy "$PX" -connect "$h:$p" -CAfile "$ca" \
			-verify_return_error -ign_eof "$@" 2>&1
}
host_checks() {
	local a h
	a=$(T "GET /echo HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
	check "intercepted: Host evil.example refused ($a)" test "$a" = "HTTP/1.1 400 Bad Request | Host differs from the CONNECT authority"
	check "intercepted: ... audited with the CONNECT host and the reason" \
		audited '"kind":"intercepted"' '"host":"localhost"' '"reason":"Host differs from the CONNECT authority"'
	for h in "localhost:1" "localhost" "127.0.0.1:$P_ICPT" "other.localhost:$P_ICPT"; do
		a=$(T "GET /echo HTTP/1.1\r\nHost: $h\r\nConnection: close\r\n\r\n")
		check "intercepted: Host $h refused ($a)" test "$a" = "HTTP/1.1 400 Bad Request | Host differs from the CONNECT authority"
	done
	for h in "localhost:$P_ICPT:1" "a@localhost:$P_ICPT"; do # the parser's own refusal
		a=$(T "GET /echo HTTP/1.1\r\nHost: $h\r\nConnection: close\r\n\r\n")
		check "intercepted: Host $h refused ($a)" bash -c "[[ '$a' == 'HTTP/1.1 400 Bad Request | '?* ]]"
	done
	check "intercepted: no refused Host reached the source" \
		bash -c "! grep -q -i -e 'host: evil' -e 'host: other' -e 'host: 127' -e 'host: localhost:1 ' -e 'host: localhost |' $W/icpt.log"
	for h in "localhost:$P_ICPT" "LOCALHOST:$P_ICPT" "localhost.:$P_ICPT"; do
		a=$(T "GET /echo HTTP/1.1\r\nHost: $h\r\nConnection: close\r\n\r\n")
		check "intercepted: Host $h accepted ($a)" test "$a" = "HTTP/1.1 200 OK | "
	done
	a=$(T "GET /echo HTTP/1.0\r\n\r\n")
	check "intercepted: HTTP/1.0 without Host accepted ($a)" test "$a" = "HTTP/1.1 200 OK | "
	check "intercepted: ... the source got Host from the CONNECT authority" grep -qE "^GET /echo HTTP/1.1 \| Host: localhost:$P_ICPT( \||$)" "$W/icpt.log"
	check "curl through the intercepted tunnel still works" \
		test "$(curl -s --max-time 10 --cacert "$W/ca/ca.crt" -x "http://$PX" "https://localhost:$P_ICPT/hi")" = "ok /hi"

	# The SNI rule, with openssl s_client through the proxy (CONNECT localhost:PORT): a wrong
	# or missing SNI is refused during the handshake with a fatal unrecognized_name alert (the
	# client sees no certificate), by a plain and an intercepted tunnel alike, and audited with
	# the SNI seen; the right one goes through.
	local kind port ca sni out
	for kind in tunnel intercepted; do
		if [ $kind = tunnel ]; then port=$P_DIRECT ca=$W/upca.crt; else port=$P_ICPT ca=$W/ca/ca.crt; fi
		for sni in -servername=wrong.example -noservername; do
			out=$(sclient localhost "$port" "$ca" /sni-refused ${sni/=/ })
			check "$kind: $sni refused with an unrecognized_name alert ($(grep -o 'SSL alert number [0-9]*' <<<"$out"))" \
				grep -q 'tlsv1 unrecognized name.*SSL alert number 112' <<<"$out"
			check "$kind: ... before any certificate" grep -q '^no peer certificate available' <<<"$out"
			check "$kind: ... and no answer" bash -c '! grep -q "^HTTP/" <<<"$1"' _ "$out"
		done
		out=$(sclient localhost "$port" "$ca" /sni-right)
		check "$kind: the right SNI goes through ($(grep -m1 '^HTTP/' <<<"$out"))" grep -q '^HTTP/1.1 200 OK' <<<"$out"
		check "$kind: ... verified" grep -q '^Verify return code: 0 (ok)' <<<"$out"
	done
	local wrong="TLS SNI 'wrong.example' does not match CONNECT host 'localhost'"
	local none="TLS SNI '(none)' does not match CONNECT host 'localhost'"
	check "tunnel: the wrong SNI audited" audited '"kind":"connect"' '"sni":"wrong.example"' '"decision":"deny"' "$wrong"
	check "tunnel: no SNI audited" audited '"kind":"connect"' '"decision":"deny"' "$none"
	check "intercepted: the wrong SNI audited the same way" audited '"kind":"intercept-tunnel"' '"sni":"wrong.example"' '"decision":"deny"' "$wrong"
	check "intercepted: no SNI audited the same way" audited '"kind":"intercept-tunnel"' '"decision":"deny"' "$none"
	# An address takes no SNI (RFC 6066 has none for addresses), or its own spelling.
	out=$(sclient 127.0.0.1 "$P_ICPT" "$W/ca/ca.crt" /sni-right-ip -noservername)
	check "intercepted 127.0.0.1: no SNI goes through ($(grep -m1 '^HTTP/' <<<"$out"))" grep -q '^HTTP/1.1 200 OK' <<<"$out"
	out=$(sclient 127.0.0.1 "$P_ICPT" "$W/ca/ca.crt" /sni-refused -servername wrong.example)
	check "intercepted 127.0.0.1: a name as SNI refused with the alert" \
		grep -q 'tlsv1 unrecognized name.*SSL alert number 112' <<<"$out"
	check "... audited" audited '"kind":"intercept-tunnel"' '"host":"127.0.0.1"' "TLS SNI 'wrong.example' does not match CONNECT host '127.0.0.1'"
	check "... no refused request reached the sources" bash -c "! grep -q '^GET /sni-refused' $W/icpt.log $W/direct.log"
	check "... the right ones did" bash -c "grep -q '^GET /sni-right ' $W/icpt.log && grep -q '^GET /sni-right-ip ' $W/icpt.log && grep -q '^GET /sni-right ' $W/direct.log"
}

# What a forward path (named by MODE) passes back and names when it refuses a response.
response_checks() {
	local m=$1 PX="http://127.0.0.1:$P_EG" a b h p
	h=$(curl -sI --max-time 10 -x "$PX" "http://127.0.0.1:$P_SRC/size" | tr -d '\r')
	check "$m: HEAD keeps the source's Content-Length (RFC 9110 8.6)" grep -qi '^Content-Length: 1234$' <<<"$h"
	check "$m: HEAD answered 200" grep -q '^HTTP/1.1 200' <<<"$h"
	check "$m: GET after HEAD on the same path still whole" \
		test "$(curl -s --max-time 10 -x "$PX" "http://127.0.0.1:$P_SRC/size" | wc -c)" = 1234
	h=$(curl -s --max-time 10 -x "$PX" -I "http://127.0.0.1:$P_SRC/size" --next -s -i -x "$PX" "http://127.0.0.1:$P_SRC/size" | tr -d '\r')
	check "$m: HEAD then GET on one connection" \
		bash -c "[ \"\$(grep -c '^Content-Length: 1234$' <<<'$h')\" = 2 ] && grep -q 'a\{1234\}' <<<'$h'"

	a=$(answer "http://127.0.0.1:$P_SRC/upgrade" -x "$PX" -H 'Connection: Upgrade' -H 'Upgrade: websocket')
	check "$m: a 101 is refused as an upgrade ($a)" test "$a" = "502|protocol upgrade refused: the source answered 101 Switching Protocols"
	check "$m: the 101 audited with that reason" audited '"path":"/upgrade"' '"decision":"error","reason":"protocol upgrade refused'
	for p in bare-lf fold no-status two-cl cl-te te-te xchunked; do
		a=$(answer "http://127.0.0.1:$P_SRC/$p" -x "$PX")
		check "$m: /$p refused as a malformed head ($a)" bash -c "[[ '$a' == '502|malformed response head: '* ]]"
		check "$m: /$p audited as a malformed head" audited "\"path\":\"/$p\"" '"reason":"malformed response head: '
	done

	# a 103 before the answer is skipped; a response the source sends between two requests
	# (smuggled behind a Content-Length body) never answers the next request on the same
	# client connection: the kept upstream connection is dropped
	check "$m: a 103 before the answer is skipped" \
		test "$(curl -s --max-time 10 -x "$PX" "http://127.0.0.1:$P_SRC/early")" = "ok early"
	b=$(timeout 60 python3 "$PEER" smuggle "127.0.0.1:$P_EG" "$P_SRC" "$W/src.log")
	check "$m: bytes a source sends between requests are not the next answer ($b)" \
		test "$b" = "ok ok /after-smuggle"

	a=$(answer "http://127.0.0.1:$P_SRC/cap/len" -x "$PX")
	check "$m: Content-Length over max_response -> 502 ($a)" test "$a" = "502|response of 5000 bytes exceeds max_response 1024"
	check "$m: ... audited as error" audited '"path":"/cap/len"' '"decision":"error","reason":"response of 5000 bytes exceeds max_response 1024"'
	for p in close chunk; do
		curl -s -o /dev/null --max-time 10 -x "$PX" "http://127.0.0.1:$P_SRC/cap/$p"
		check "$m: /cap/$p streamed past max_response: cut (curl exit $?)" test $? -ne 0
		check "$m: ... audited as error, as when the length shows it" \
			audited "\"path\":\"/cap/$p\"" '"decision":"error","reason":"response exceeded max_response 1024; cut off"'
	done
}

# The same inside an intercepted tunnel (always on a connection thread).
icpt_response_checks() {
	local a h C=(--cacert "$W/ca/ca.crt" -x "http://$PX")
	h=$(curl -sI --max-time 10 "${C[@]}" "https://localhost:$P_ICPT/size" | tr -d '\r')
	check "intercepted: HEAD keeps the source's Content-Length" grep -qi '^Content-Length: 1234$' <<<"$h"
	a=$(answer "https://localhost:$P_ICPT/bare-lf" "${C[@]}")
	check "intercepted: a bare LF named ($a)" bash -c "[[ '$a' == '502|malformed response head: '* ]]"
	a=$(answer "https://localhost:$P_ICPT/upgrade" "${C[@]}")
	check "intercepted: a 101 named ($a)" test "$a" = "502|protocol upgrade refused: the source answered 101 Switching Protocols"
	a=$(timeout 60 python3 "$PEER" smuggle "$PX" "$P_ICPT" "$W/icpt.log" "$W/ca/ca.crt")
	check "intercepted: bytes a source sends between requests are not the next answer ($a)" \
		test "$a" = "ok ok /after-smuggle"
	curl -s -o /dev/null --max-time 10 "${C[@]}" "https://localhost:$P_ICPT/cap/chunk"
	check "intercepted: streamed past max_response: cut (curl exit $?)" test $? -ne 0
	check "intercepted: ... audited as error" audited '"kind":"intercepted"' '"path":"/cap/chunk"' '"decision":"error","reason":"response exceeded max_response 1024; cut off"'
}

# ';' in a path (path parameters), on a forward path named by MODE.
param_checks() {
	local m=$1 PX="http://127.0.0.1:$P_EG" a p
	for p in '/x/..;/y' '/x;a=b' '/x/%3Bjsessionid' '/x/..%3b/y'; do
		a=$(answer "http://127.0.0.1:$P_SRC$p" -x "$PX" --path-as-is)
		check "$m: ';' in $p refused ($a)" bash -c "[[ '$a' == \"400|';' in the request path\"* ]]"
	done
	check "$m: ... audited as deny" audited '"path":"/x/..;/y"' "\"decision\":\"deny\",\"reason\":\"';' in the request path"
	check "$m: ... none of them reached the source" bash -c "! grep -q -e '^GET [^ ?]*;' -e '^GET [^ ?]*%3[Bb]' $W/src.log"
	check "$m: ';' in the query is fine" test "$(curl -s --max-time 10 -x "$PX" "http://127.0.0.1:$P_SRC/q?a=1;b=2")" = "ok /q?a=1;b=2"
}
icpt_param_checks() {
	local a
	a=$(answer "https://localhost:$P_ICPT/x/..;/y" --cacert "$W/ca/ca.crt" -x "http://$PX" --path-as-is)
	check "intercepted: ';' in the path refused ($a)" bash -c "[[ '$a' == \"400|';' in the request path\"* ]]"
	check "intercepted: ... nothing reached the source" bash -c "! grep -q '^GET /x/\.\.;' $W/icpt.log"
}

start_up loops
host_checks
response_checks loops
icpt_response_checks
param_checks loops
icpt_param_checks
stop_up loops

export CUSTOS_EGRESS_FORWARD=threads
start_up threads
response_checks threads
param_checks threads
stop_up threads

if [ $FAILS -ne 0 ]; then
	for f in up-loops.log up-threads.log; do
		[ -f "$f" ] && { echo "--- $f (tail)"; grep -v '"egress.request' "$f" | tail -30 | cut -c1-400; }
	done
	echo "$FAILS check(s) failed"
	exit 1
fi
echo "all egress edge checks passed"
