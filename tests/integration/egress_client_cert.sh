#!/usr/bin/env bash
# Egress: a client certificate custos presents to an intercepted https data source's origin
# (data_sources[].cert/key). Two origins, `openssl s_server -WWW -Verify 1
# -verify_return_error`, that require a client certificate from their own client CA:
#   - ra (localhost:A) with the client CA's certificate: 200; rb (127.0.0.1:A) with none: 502;
#     rc (localhost:B) with a certificate from another CA: 502; each audited with the origin's
#     refusal, the TLS 1.3 alert custos reads after its side of the handshake ("upstream
#     refused the client certificate (TLS alert unknown_ca)", "upstream requires a client
#     certificate, none is configured (TLS alert certificate_required)"), not as a closed
#     connection;
#   - config check refuses cert/key on a source without intercept: true, at its line:col, and
#     --host a key readable by others;
#   - a SIGHUP reload reads renewed files in place: ra now presents the rogue certificate (502:
#     no origin session made under the old one is resumed), rc the good one (200);
#   - a reload whose key does not load is refused, saying why; the certificates in force stay.
set -u
. "${CUSTOS_SRC:?}/tests/integration/egress_lib.bash"
eg_init egress-ccert curl openssl

P_D=$(port) P_IN=$(port) P_EG=$(port) P_A=$(port) P_B=$(port)
cd "$W" || exit 1
eg_upstream_pki
(
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
		-subj /CN=client-ca -keyout clica.key -out clica.crt \
		-addext basicConstraints=critical,CA:TRUE &&
		printf 'extendedKeyUsage=clientAuth\n' >cli.ext &&
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=custos-egress \
			-keyout good.key -out good.csr &&
		openssl x509 -req -in good.csr -CA clica.crt -CAkey clica.key -CAcreateserial -days 2 \
			-extfile cli.ext -out good.crt &&
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
			-subj /CN=rogue -keyout rogue.key -out rogue.crt
) >/dev/null 2>&1 || { bad "openssl could not make the client certificates"; exit 1; }
mkdir -p www
# The client certificates live outside every other directory custos reads ($C), so the proxy
# reads them (after it confined itself) only through their own entries in its Landlock view.
C=$(mktemp -d /tmp/custos-egcert.XXXXXX) && chmod 700 "$C" || { bad "mktemp"; exit 1; }
[ -n "${EGRESS_KEEP:-}" ] || trap 'eg_cleanup; rm -rf "$C"' EXIT
for n in 1 2 3 4 5 6 7 8; do printf 'origin file %s\n' "$n" >"www/x$n"; done
install -m 644 good.crt "$C/a.crt" && install -m 600 good.key "$C/a.key"
install -m 644 rogue.crt "$C/c.crt" && install -m 600 rogue.key "$C/c.key"
for p in "$P_A" "$P_B"; do
	(cd www && exec openssl s_server -quiet -accept "127.0.0.1:$p" -cert ../srv.crt \
		-key ../srv.key -CAfile ../clica.crt -Verify 1 -verify_return_error -WWW) \
		>>s_server.log 2>&1 &
	PIDS+=($!)
done
eg_wait 60 eg_listening "$P_A" "$P_B" || { echo "SKIPPED: openssl s_server did not start: $(head -3 s_server.log)"; exit 77; }

SRCS="$(eg_source_yaml ra "https://localhost:$P_A/" public "intercept: true, ca_file: \"$W/upca.crt\", cert: \"$C/a.crt\", key: \"$C/a.key\"")
$(eg_source_yaml rb "https://127.0.0.1:$P_A/" public "intercept: true, ca_file: \"$W/upca.crt\"")
$(eg_source_yaml rc "https://localhost:$P_B/" public "intercept: true, ca_file: \"$W/upca.crt\", cert: \"$C/c.crt\", key: \"$C/c.key\"")"

# Without interception custos cannot present a certificate: refused at the key's line:col.
eg_m1_conf info "$(eg_source_yaml ra "https://localhost:$P_A/" public "ca_file: \"$W/upca.crt\", cert: \"$C/a.crt\", key: \"$C/a.key\"")" "  ca_dir: \"$W/ca\""
"$BIN" config check custos.yaml >nointercept.out 2>&1
check "config check: cert without intercept refused" test $? = 1
check "the error is at the cert key's line:col and says why" \
	grep -q "custos.yaml:10:[0-9]*: error: data source 'ra': cert and key need intercept: true" nointercept.out

eg_m1_conf info "$SRCS" "  ca_dir: \"$W/ca\"
$EG_TIMEOUTS"
eg_m1_policy <<EOY
  ra: { url: "https://localhost:$P_A/", classification: public }
  rb: { url: "https://127.0.0.1:$P_A/", classification: public }
  rc: { url: "https://localhost:$P_B/", classification: public }
rules:
  - id: read
    effect: allow
    when: { direction: egress, data: [ra, rb, rc], method: GET }
EOY
chmod 644 "$C/a.key"
"$BIN" config check --host custos.yaml >check.out 2>&1
check "config check --host: a key readable by others refused" test $? = 1
check "the error names data_sources[0] (ra).key" grep -q 'data_sources\[0\] (ra).key' check.out
chmod 600 "$C/a.key"
"$BIN" config check --host custos.yaml >check.out 2>&1 ||
	{ cat check.out; bad "config check --host"; }
eg_start

get() { curl -s -o out -w '%{http_code}' --max-time 20 --cacert "$W/ca/ca.crt" -x "$PX" "https://$1/x$2"; }
check "ra, the client CA's certificate: 200" test "$(get "localhost:$P_A" 1)" = 200
check "the origin's answer" grep -qx 'origin file 1' out
check "rb, no client certificate: 502" test "$(get "127.0.0.1:$P_A" 2)" = 502
check "rc, a certificate from another CA: 502" test "$(get "localhost:$P_B" 3)" = 502
check "ra again: 200" test "$(get "localhost:$P_A" 4)" = 200
check "the 502s audited" eg_wait 30 eg_at_least 2 '"decision":"error"' '"status":502' '"path":"/x'
check "rb's 502 audited as the origin requiring a certificate" eg_wait 30 eg_at_least 1 \
	'"path":"/x2"' '"reason":"upstream requires a client certificate, none is configured (TLS alert certificate_required)"'
check "rc's 502 audited as the origin refusing the certificate" eg_wait 30 eg_at_least 1 \
	'"path":"/x3"' '"reason":"upstream refused the client certificate (TLS alert unknown_ca)"'

# Renewed in place: ra now holds the rogue certificate, rc the client CA's.
install -m 644 rogue.crt "$C/a.crt" && install -m 600 rogue.key "$C/a.key"
install -m 644 good.crt "$C/c.crt" && install -m 600 good.key "$C/c.key"
kill -HUP "$UP"
check "SIGHUP reload applied" eg_wait 60 grep -q "client certificate $C/c.crt read again" up.log
check "after the reload, ra's rogue certificate: 502 (no session of the old one resumed)" \
	test "$(get "localhost:$P_A" 5)" = 502
check "after the reload, rc's new certificate: 200" test "$(get "localhost:$P_B" 6)" = 200

# A key that does not load: the reload is refused, saying why; the certificates in force stay.
printf 'not a key\n' >"$C/c.key.new" && chmod 600 "$C/c.key.new" && mv "$C/c.key.new" "$C/c.key"
kill -HUP "$UP"
check "the refused reload names the key file" eg_wait 60 grep -q "reload failed.*$C/c.key" up.log
check "after the refused reload, rc keeps its certificate: 200" test "$(get "localhost:$P_B" 7)" = 200
check "and ra its own: 502" test "$(get "localhost:$P_A" 8)" = 502
for n in 5 8; do
	check "ra's 502 after the reload (/x$n) audited as refused" eg_wait 30 eg_at_least 1 \
		'"reason":"upstream refused the client certificate (TLS alert unknown_ca)"' "\"path\":\"/x$n\""
done
eg_stop
eg_done
