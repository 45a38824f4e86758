#!/usr/bin/env bash
# TLS on the admin TCP listener (admin.tls, OpenSSL; docs/ADMIN.md "TLS"), with real curl,
# openssl s_client and `custos ctl --url https://`:
# - an https GET with the token is answered (curl, s_client, ctl by IP address and by name);
#   without the token it is 401; plain HTTP to the TLS port gets no HTTP answer and is audited
#   as tls.reject (listener "admin"); ctl refuses a server its --cacert did not sign; ctl still
#   refuses http:// to a non-loopback address;
# - an answer whole by its framing (Content-Length, chunked) needs no TLS close_notify in ctl;
#   one cut short before it, or one with no length that ends without a close_notify, is an
#   error (ctl_tls_fixture.py's server); custos' gate sends a close_notify after each answer;
# - at --log-level debug, libmicrohttpd's three TCP socket-option lines per answer on the gate's
#   socketpairs are not logged (noted once), and its other messages are (a Content-Length no
#   integer holds, refused with 413 by libmicrohttpd);
# - admin.request of a POST with a query string carries it as audit.query "names" keeps it
#   (`?api_key=…&page=…&…`), the value never;
# - a flood of connections that never finish their handshake (more than the 64 slots) does not
#   keep ctl or curl out: the oldest unfinished handshake is shed, and audited;
# - with admin.tls.client_ca, a client without a certificate, or with one of another CA, is
#   refused (audited as tls.reject); with one signed by it, curl and ctl (--cert/--key) get in;
#   custos_admin_tls_handshakes_total counts the good handshake and the refused one (and
#   custos_tls_handshakes_total, the proxy listeners', neither);
#   a SIGHUP reload serves admin.tls's new certificate; one whose files do not load, or that
#   turns admin.tls off, is refused and the certificate in force serves on;
# - `custos config check` accepts a non-loopback admin address with admin.tls and no force,
#   and refuses it without admin.tls at file:line:col; with --host it reports admin.tls files
#   `up` could not use (missing, a key others may read).
# The test hook CUSTOS_TEST_ADMIN_TIMEOUT_S gives handshakes 300 s, so that the flood outlasts
# the clients' timeouts whatever the machine's speed.
. "$(dirname "$0")/proxy_lib.bash"

[ "${CUSTOS_TEST_HOOKS:-0}" = 1 ] ||
	skip "custos is built without test hooks (CUSTOS_TEST_HOOKS, on in Debug builds)"
command -v python3 >/dev/null || skip "python3 not installed"

make_pki
start_fixture model --tokens 4
write_policy "$work/policy.yaml"
TOKEN=admin-token-$RANDOM$RANDOM
printf '%s\n' "$TOKEN" >"$work/token"
chmod 600 "$work/token"
APORT=$(free_port)
T=$work/tls
# admin_config FILE [EXTRA TLS LINES]: write_config's file with the admin API on the Unix socket
# and on 127.0.0.1:APORT with admin.tls.
admin_config() {
	NO_DEFAULT_ADMIN=1 write_config "$1" "$FX_PORT"
	cat >>"$1" <<CFG
admin:
  socket: $work/admin.sock
  tls:
    cert: $T/srv.crt
    key: $T/srv.key
${2:-}
  tcp:
    address: "127.0.0.1:$APORT"
    token_sha256: "$(sha256hex "$TOKEN")"
CFG
}
stop_custos() {
	kill -TERM "$CU_PID"
	wait "$CU_PID" 2>/dev/null
}
# ctls ARGS...: ctl against https://127.0.0.1:APORT with the token; prints "rc|stdout|stderr".
ctls() {
	local out rc
	out=$("$bin" ctl --url "https://127.0.0.1:$APORT" --token-file "$work/token" "$@" 2>"$work/ctl.err")
	rc=$?
	echo "$rc|$out|$(cat "$work/ctl.err")"
}
code() { curl -sS --max-time 30 -o /dev/null -w '%{http_code}' "$@" 2>/dev/null; }

export CUSTOS_TEST_ADMIN_TIMEOUT_S=300
admin_config "$work/custos.yaml"
start_custos "$work/custos.yaml"
wait_until 60 test -S "$work/admin.sock" || { fail "no admin socket after 60 s"; exit 1; }
grep -q "admin: listening on unix:$work/admin.sock and tcp+tls:127.0.0.1:$APORT" "$work/custos.log" &&
	ok "the admin TCP listener serves TLS" || fail "no tcp+tls listener in the log"

# --- https with the token
check "curl https GET /healthz with the token" \
	"$(curl -sS --max-time 30 --cacert "$T/ca.crt" -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$APORT/healthz")" '{"status":"ok"}'
check "curl https GET /readyz without the token" "$(code --cacert "$T/ca.crt" "https://127.0.0.1:$APORT/readyz")" 401
out=$(printf 'GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n' "$TOKEN" |
	timeout 30 openssl s_client -quiet -verify_return_error -CAfile "$T/ca.crt" -verify_ip 127.0.0.1 \
		-connect "127.0.0.1:$APORT" 2>/dev/null)
case "$out" in
*'HTTP/1.1 200'*'{"status":"ok"}'*) ok "openssl s_client: verified, GET answered 200" ;;
*) fail "openssl s_client: got '$out'" ;;
esac
out=$(timeout 30 openssl s_client -tls1_1 -connect "127.0.0.1:$APORT" </dev/null 2>&1)
case "$out" in
*'Cipher is (NONE)'* | *alert* | *'no protocols available'*) ok "TLS 1.1 is refused" ;;
*) fail "TLS 1.1: got '$(echo "$out" | tail -3)'" ;;
esac
check "ctl https health (IP address checked)" "$(ctls --cacert "$T/ca.crt" health)" '0|{"status":"ok"}|'
out=$("$bin" ctl --url "https://localhost:$APORT" --cacert "$T/ca.crt" --token-file "$work/token" health 2>&1)
check "ctl https health by name (localhost, DNS name checked)" "$?|$out" '0|{"status":"ok"}'
r=$(ctls --cacert "$T/rogue.crt" health)
case "$r" in
1\|\|*'certificate'*) ok "ctl: a server its --cacert did not sign is refused (${r##*|})" ;;
*) fail "ctl with the wrong CA: got '$r'" ;;
esac
out=$("$bin" ctl --url "http://192.0.2.1:9" --token-file "$work/token" health 2>&1)
rc=$?
case "$rc|$out" in
2\|*'not a loopback address'*) ok "ctl still refuses http:// to a non-loopback address" ;;
*) fail "ctl http:// non-loopback: got '$rc|$out'" ;;
esac
check "the Unix socket is as before" "$("$bin" ctl --socket "$work/admin.sock" health 2>&1)" '{"status":"ok"}'

# --- libmicrohttpd's log at --log-level debug (start_custos): its TCP socket-option messages
# (TCP_NODELAY, TCP_CORK, "Failed to push the data...": three a response on the gate's
# socketpairs, where there is no TCP) are dropped, noted once; its other messages still come
# (a Content-Length no integer holds, refused with 413 by libmicrohttpd itself).
out=$(printf 'POST /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 99999999999999999999999\r\nConnection: close\r\n\r\n' "$TOKEN" |
	timeout 30 openssl s_client -quiet -CAfile "$T/ca.crt" -connect "127.0.0.1:$APORT" 2>/dev/null)
check "a Content-Length no integer holds: libmicrohttpd answers 413" "$(head -1 <<<"$out" | tr -d '\r' | cut -d' ' -f2)" 413
wait_until 30 grep -q "debug: admin: libmicrohttpd: Too large value of 'Content-Length' header" "$work/custos.log" &&
	ok "libmicrohttpd's own message still logged ($(grep -o "libmicrohttpd: Too large value of 'Content-Length' header.*" "$work/custos.log" | head -1))" ||
	fail "no libmicrohttpd message for the Content-Length no integer holds"
check "no TCP socket-option lines after six answers through the gate" \
	"$(grep -cE 'libmicrohttpd: (Setting TCP_(NODELAY|CORK) option|Failed to push the data)' "$work/custos.log")" 0
check "the drop is noted once" \
	"$(grep -c "libmicrohttpd: its TCP socket-option messages on the TLS gate's socketpairs are not logged" "$work/custos.log")" 1

# --- how an answer ends. ctl_tls_fixture.py is a TLS server that closes the TCP connection
# without a close_notify (or with one, for the answer with no length): ctl takes an answer whole
# by its framing (Content-Length, chunked) without one, as curl does, and refuses one cut short
# before its framing's end, or with no length and no close_notify (a cut anyone on the path can
# make). custos' own gate ends each answer with a close_notify (the fixture's client reads it).
python3 "$(dirname "$0")/ctl_tls_fixture.py" server "$T/srv.crt" "$T/srv.key" "$work/fx.port" 2>"$work/fx.err" &
pids+=("$!")
wait_until 60 test -s "$work/fx.port" || fail "the TLS fixture did not start: $(cat "$work/fx.err")"
FXP=$(cat "$work/fx.port")
fxctl() { # ARGS...: ctl against the fixture; prints "rc|stdout|stderr"
	local out rc
	out=$("$bin" ctl --url "https://127.0.0.1:$FXP" --cacert "$T/ca.crt" --token-file "$work/token" "$@" 2>"$work/ctl.err")
	rc=$?
	echo "$rc|$out|$(cat "$work/ctl.err")"
}
check "ctl: Content-Length answer, no close_notify" "$(fxctl health)" '0|{"status":"ok"}|'
check "ctl: chunked answer, no close_notify" "$(fxctl metrics)" '0|{"status":"ok"}|'
check "ctl: answer to the connection's end, with close_notify" "$(fxctl policy)" '0|{"status":"ok"}|'
r=$(fxctl ready)
case "$r" in
1\|\|*'cut short'*Content-Length*) ok "ctl: a Content-Length body cut short is refused (${r##*|})" ;;
*) fail "ctl: Content-Length body cut short: got '$r'" ;;
esac
r=$(fxctl sandboxes)
case "$r" in
1\|\|*'cut short'*chunked*) ok "ctl: a chunked body without its last chunk is refused (${r##*|})" ;;
*) fail "ctl: chunked body cut short: got '$r'" ;;
esac
r=$(fxctl audit-status)
case "$r" in
1\|\|*'no length'*close_notify*) ok "ctl: an answer with no length and no close_notify is refused (${r##*|})" ;;
*) fail "ctl: no length, no close_notify: got '$r'" ;;
esac
for p in /healthz /metrics; do
	check "custos' gate ends the answer to GET $p with a close_notify" \
		"$(timeout 60 python3 "$(dirname "$0")/ctl_tls_fixture.py" client "$APORT" "$T/ca.crt" "$p" "$TOKEN" 2>&1 | tr '\n' '|')" \
		'HTTP/1.1 200 OK|close_notify|'
done

# --- plain HTTP to the TLS port
out=$(curl -sS --max-time 30 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$APORT/healthz" 2>/dev/null)
check "plain HTTP to the TLS port gets no HTTP answer" "$out" 000
wait_until 60 eval 'audit_grep "\"type\":\"tls.reject\"" | grep -q "\"listener\":\"admin\".*\"reason\":\"http request\""' &&
	ok "the plain-HTTP attempt is audited as tls.reject" || fail "no tls.reject for plain HTTP"

# --- admin.request audits the query string as audit.query (names) keeps it
check "POST /v1/policy with a query string" \
	"$(code --cacert "$T/ca.crt" -X POST -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$APORT/v1/policy?api_key=SeCrEt42&page=2&debug")" 200
want='"path":"/v1/policy?api_key=…&page=…&…"'
wait_until 60 eval "audit_grep '\"type\":\"admin.request\"' | grep -qF '$want'" &&
	ok "admin.request path keeps the query's names ($want)" ||
	fail "admin.request path: $(audit_grep '"type":"admin.request"' | tail -1)"
check "the query's value is not in the trail" "$(audit_grep SeCrEt42 | wc -l)" 0
check "a refused caller's query is filtered too" \
	"$(code --cacert "$T/ca.crt" "https://127.0.0.1:$APORT/metrics?token=SeCrEt43")" 401
wait_until 60 eval "audit_grep '\"result\":\"unauthenticated\"' | grep -qF '\"path\":\"/metrics?token=…\"'" &&
	ok "the refusal's path is /metrics?token=…" || fail "refusal: $(audit_grep '"result":"unauthenticated"' | tail -1)"

# --- a flood of unfinished handshakes
K=80 # > 64 slots; each connection sends one byte of a ClientHello and nothing more
python3 "$(dirname "$0")/admin_slots_flood.py" "tcp:127.0.0.1:$APORT" "$K" "$work/flood.status" 2>"$work/flood.err" &
flood_pid=$!
pids+=("$flood_pid")
wait_until 60 test -s "$work/flood.status" || fail "the flood did not open its $K connections: $(cat "$work/flood.err")"
closed_reach() { [ "$(awk '{print $2}' "$work/flood.status")" -ge "$1" ] 2>/dev/null; }
# A real client is answered during the flood. Its connection can still be shed when its
# ClientHello comes after dozens of the flood's reconnects (it is then the oldest unanswered
# handshake; docs/ADMIN.md): like any client of a server under a flood it may need to try
# again, so each gets three tries, and the tries it took are printed.
flood_try() { # flood_try WANT CMD...: CMD's output is WANT within three tries
	local want=$1 got="" t
	shift
	for t in 1 2 3; do
		got=$("$@")
		[ "$got" = "$want" ] && { echo "$want (try $t)"; return; }
	done
	echo "$got (3 tries)"
}
flood_check() { # flood_check NAME WANT CMD...
	local name=$1 want=$2 r
	shift 2
	r=$(flood_try "$want" "$@")
	case "$r" in
	"$want (try "[123]")") ok "$name: $r" ;;
	*) fail "$name: got '$r', want '$want'" ;;
	esac
}
flood_check "flood: ctl https health answered" '0|{"status":"ok"}|' \
	ctls --cacert "$T/ca.crt" --timeout 60 health
flood_check "flood: curl https answered" 200 \
	code --cacert "$T/ca.crt" -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$APORT/readyz"
wait_until 60 closed_reach 16 && ok "flood: unfinished handshakes are shed ($(awk '{print $2}' "$work/flood.status") closed)" ||
	fail "flood: fewer than 16 connections closed: $(cat "$work/flood.status")"
kill -TERM "$flood_pid"
wait "$flood_pid"
wait_until 60 eval 'audit_grep "\"result\":\"shed\"" | grep -q "\"listener\":\"tcp\""' &&
	ok "flood: shed connections are audited" || fail "flood: no shed admin.request event"
stop_custos

# --- client certificates required
admin_config "$work/custos.yaml" "    client_ca: $T/ca.crt"
start_custos "$work/custos.yaml"
wait_until 60 test -S "$work/admin.sock" || { fail "no admin socket after 60 s (mTLS)"; exit 1; }
# custos_admin_tls_handshakes_total, read over the Unix socket (no TLS handshake of its own): this
# custos has had no TCP connection yet, so after one good ctl call and one s_client without a
# client certificate the counts are exactly 1 and 1.
atls() {
	"$bin" ctl --socket "$work/admin.sock" metrics 2>/dev/null |
		awk -v s="custos_admin_tls_handshakes_total{result=\"$1\"}" '$1 == s {print $2}'
}
atls_are() { [ "$(atls ok)|$(atls failed)" = "$1" ]; }
check "metrics: no admin TLS handshake yet" "$(atls ok)|$(atls failed)" "0|0"
check "metrics: a ctl call with a client certificate" \
	"$(ctls --cacert "$T/ca.crt" --cert "$T/cli.crt" --key "$T/cli.key" health)" '0|{"status":"ok"}|'
# (the trail holds the first run's events too)
admin_rejects() { audit_grep '"type":"tls.reject"' | grep -c '"listener":"admin"'; }
rejects0=$(admin_rejects)
timeout 30 openssl s_client -connect "127.0.0.1:$APORT" </dev/null >/dev/null 2>&1
wait_until 60 atls_are "1|1" &&
	ok "metrics: custos_admin_tls_handshakes_total counts 1 ok and 1 failed (s_client without a certificate)" ||
	fail "metrics: admin TLS handshakes: ok|failed = $(atls ok)|$(atls failed), want 1|1"
grep -q '^custos_tls_handshakes_total{result="failed"} 0$' <("$bin" ctl --socket "$work/admin.sock" metrics 2>/dev/null) &&
	ok "metrics: the proxy listeners' custos_tls_handshakes_total does not count the admin listener's" ||
	fail "metrics: custos_tls_handshakes_total{result=\"failed\"} is not 0"
# The s_client handshake above failed: its tls.reject reaches the trail a moment later (the
# audit writer batches). Counted before it lands, it would pass the check below for curl's.
s_client_reject_audited() { [ "$(admin_rejects)" -gt "$rejects0" ]; }
wait_until 60 s_client_reject_audited || fail "mTLS: no tls.reject for the s_client handshake"
before=$(audit_grep '"type":"tls.reject"' | grep -c 'certificate')
check "mTLS: curl without a client certificate is refused" \
	"$(code --cacert "$T/ca.crt" -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$APORT/healthz")" 000
wait_until 60 eval '[ "$(audit_grep "\"type\":\"tls.reject\"" | grep -c certificate)" -gt "$before" ]' &&
	ok "mTLS: the refusal is audited ($(audit_grep '"type":"tls.reject"' | grep certificate | tail -1 | sed 's/.*"reason":"\([^"]*\)".*/\1/'))" ||
	fail "mTLS: no tls.reject for the missing certificate"
check "mTLS: curl with a certificate of another CA is refused" \
	"$(code --cacert "$T/ca.crt" --cert "$T/rogue.crt" --key "$T/rogue.key" -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$APORT/healthz")" 000
check "mTLS: curl with a client certificate gets in" \
	"$(code --cacert "$T/ca.crt" --cert "$T/cli.crt" --key "$T/cli.key" -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$APORT/healthz")" 200
check "mTLS: ctl --cert/--key gets in" "$(ctls --cacert "$T/ca.crt" --cert "$T/cli.crt" --key "$T/cli.key" health)" '0|{"status":"ok"}|'
r=$(ctls --cacert "$T/ca.crt" health)
case "$r" in 1\|\|*) ok "mTLS: ctl without --cert is refused (${r##*|})" ;; *) fail "mTLS: ctl without --cert: '$r'" ;; esac

# --- a reload swaps the admin certificate (SIGHUP here; the admin API's reload does the same);
# one whose admin.tls does not load is refused whole and the certificate in force stays
served_key() { # the public key size of the certificate the admin listener serves now
	timeout 30 openssl s_client -connect "127.0.0.1:$APORT" -cert "$T/cli.crt" -key "$T/cli.key" </dev/null 2>/dev/null |
		openssl x509 -noout -pubkey 2>/dev/null | openssl pkey -pubin -noout -text 2>/dev/null | head -1
}
case "$(served_key)" in *Public-Key*256*) ok "before the reload: the ECDSA certificate" ;; *) fail "before the reload: '$(served_key)'" ;; esac
sed -i -e "s|^    cert: $T/srv.crt|    cert: $T/srv-rsa.crt|" -e "s|^    key: $T/srv.key|    key: $T/srv-rsa.key|" "$work/custos.yaml"
kill -HUP "$CU_PID"
wait_log "admin: tls: the certificate of the reload is served from now on" 1
case "$(served_key)" in *Public-Key*2048*) ok "reload: the new (RSA) admin certificate is served" ;; *) fail "after the reload: '$(served_key)'" ;; esac
check "reload: ctl --cert/--key still gets in" "$(ctls --cacert "$T/ca.crt" --cert "$T/cli.crt" --key "$T/cli.key" health)" '0|{"status":"ok"}|'
sed -i -e "s|^    cert: $T/srv-rsa.crt|    cert: $work/missing.crt|" "$work/custos.yaml"
kill -HUP "$CU_PID"
wait_log "reload: admin.tls: .*missing.crt" 1
case "$(served_key)" in *Public-Key*2048*) ok "a reload with an admin.tls that does not load is refused; the RSA one serves on" ;; *) fail "after the refused reload: '$(served_key)'" ;; esac
# turning TLS off is refused (the listener is the TLS gate's from the start)
admin_config "$work/custos.yaml" "    client_ca: $T/ca.crt"
sed -i -e '/^  tls:/d' -e "\|^    cert: $T/srv.crt|d" -e "\|^    key: $T/srv.key|d" -e "\|^    client_ca: $T/ca.crt|d" "$work/custos.yaml"
kill -HUP "$CU_PID"
wait_log "reload: admin.tls changed: custos reads it at start only" 1 && ok "reload: turning admin.tls off is refused and named"
stop_custos

# --- config check: a non-loopback address with admin.tls needs no force
NO_DEFAULT_ADMIN=1 write_config "$work/check.yaml" "$FX_PORT"
cat >>"$work/check.yaml" <<CFG
admin:
  tls:
    cert: $T/srv.crt
    key: $T/srv.key
  tcp:
    address: "0.0.0.0:$APORT"
    token_sha256: "$(sha256hex "$TOKEN")"
CFG
out=$("$bin" config check "$work/check.yaml" 2>&1)
check "config check: a non-loopback admin address with admin.tls, no force" "$?" 0
grep -v -e '^  tls:' -e "^    cert: $T/srv.crt" -e "^    key: $T/srv.key" "$work/check.yaml" >"$work/check2.yaml"
line=$(grep -n '^    address: "0.0.0.0' "$work/check2.yaml" | cut -d: -f1)
out=$("$bin" config check "$work/check2.yaml" 2>&1)
rc=$?
case "$rc|$out" in
1\|*"check2.yaml:$line:"*"admin TCP address '0.0.0.0:$APORT' is not loopback"*admin.tls*) ok "config check: without admin.tls it is refused at file:line:col" ;;
*) fail "config check without admin.tls: got '$rc|$out'" ;;
esac

# --host reads the files as `up` would: a key others may read, a certificate that is missing
cp "$T/srv.key" "$work/open.key"
chmod 644 "$work/open.key"
sed -e "s|^    key: $T/srv.key|    key: $work/open.key|" -e "s|^    cert: $T/srv.crt|    cert: $work/missing.crt|" \
	"$work/check.yaml" >"$work/check3.yaml"
out=$("$bin" config check --host "$work/check3.yaml" 2>&1)
rc=$?
case "$rc|$out" in
1\|*admin.tls.cert*missing.crt*) ok "config check --host: a missing admin.tls.cert is reported" ;;
*) fail "config check --host, missing cert: got '$rc|$out'" ;;
esac
case "$out" in
*admin.tls.key*open.key*) ok "config check --host: an admin.tls.key others may read is reported" ;;
*) fail "config check --host, key mode: got '$out'" ;;
esac

[ "$fails" -eq 0 ] || exit 1
echo "all admin TLS checks passed"
