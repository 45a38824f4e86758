#!/usr/bin/env bash
# Egress: a reload reads the ca_file of an intercepted https data source again, also for a
# source with neither a client certificate nor a crl_file (no client verification here), with
# `openssl s_server -WWW` as the origin (its certificate from the upstream CA):
#   - started with a ca_file that holds another CA: the origin is not trusted (502, audited
#     with the verification failure);
#   - the file replaced in place with the upstream CA, SIGHUP: 200;
#   - a ca_file that does not load: the reload is refused, naming the source and the file, and
#     the context in force still trusts the origin (200);
#   - the other CA put back, SIGHUP: 502 again, so the new context's origin session cache
#     starts empty (a session made under the old CA would resume without any verification).
set -u
. "${CUSTOS_SRC:?}/tests/integration/egress_lib.bash"
eg_init egress-reload-ca curl openssl

P_D=$(port) P_IN=$(port) P_EG=$(port) P_A=$(port)
cd "$W" || exit 1
eg_upstream_pki
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
	-subj /CN=other-ca -keyout otherca.key -out otherca.crt \
	-addext basicConstraints=critical,CA:TRUE >/dev/null 2>&1 ||
	{ bad "openssl could not make the other CA"; exit 1; }
mkdir -p www
for n in 1 2 3 4; do printf 'origin file %s\n' "$n" >"www/x$n"; done
# The CA file lives outside every other directory custos reads ($C): the confined proxy reads
# it again only through its own entry in its Landlock view. Replaced in place (same inode).
C=$(mktemp -d /tmp/custos-egca.XXXXXX) && chmod 755 "$C" || { bad "mktemp"; exit 1; }
[ -n "${EGRESS_KEEP:-}" ] || trap 'eg_cleanup; rm -rf "$C"' EXIT
cp otherca.crt "$C/ca.pem" && chmod 644 "$C/ca.pem"
(cd www && exec openssl s_server -quiet -accept "127.0.0.1:$P_A" -cert ../srv.crt \
	-key ../srv.key -WWW) >>s_server.log 2>&1 &
PIDS+=($!)
eg_wait 60 eg_listening "$P_A" || { echo "SKIPPED: openssl s_server did not start: $(head -3 s_server.log)"; exit 77; }

eg_m1_conf info "$(eg_source_yaml ra "https://localhost:$P_A/" public "intercept: true, ca_file: \"$C/ca.pem\"")" \
	"  ca_dir: \"$W/ca\"
$EG_TIMEOUTS"
eg_m1_policy <<EOY
  ra: { url: "https://localhost:$P_A/", classification: public }
rules:
  - id: read
    effect: allow
    when: { direction: egress, data: [ra], method: GET }
EOY
"$BIN" config check --host custos.yaml >check.out 2>&1 || { cat check.out; bad "config check --host"; }
eg_start

get() { curl -s -o out -w '%{http_code}' --max-time 20 --cacert "$W/ca/ca.crt" -x "$PX" "https://localhost:$P_A/x$1"; }
# "proxy: reloaded" is logged once the reload's end (reload_settle: the egress contexts put in
# force) has run.
applied() { [ "$(grep -c 'proxy: reloaded (generation' up.log)" -ge "$1" ]; }
reloads() { grep -c "data source ra: CA $C/ca.pem read again" up.log; }
check "a ca_file without the origin's CA: 502" test "$(get 1)" = 502
check "audited as a verification failure" eg_wait 30 eg_at_least 1 '"path":"/x1"' '"status":502' \
	'"reason":"upstream certificate verification failed'

# The file replaced in place with the right CA: a reload reads it.
cat upca.crt >"$C/ca.pem"
kill -HUP "$UP"
check "SIGHUP reload applied" eg_wait 60 applied 1
check "the CA file read again (logged)" test "$(reloads)" = 1
check "after the reload, the origin is trusted: 200" test "$(get 2)" = 200
check "the origin's answer" grep -qx 'origin file 2' out

# A CA file that does not load: the reload is refused, saying why; the context in force stays.
printf 'not a certificate\n' >"$C/ca.pem"
kill -HUP "$UP"
check "the refused reload names the source and the file" \
	eg_wait 60 grep -q "reload failed.*data source ra: cannot load CA $C/ca.pem" up.log
check "after the refused reload, the origin is still trusted: 200" test "$(get 3)" = 200
check "no CA read again by the refused reload" test "$(reloads)" = 1

# The other CA back: the new context trusts it alone and resumes no session made before.
cat otherca.crt >"$C/ca.pem"
kill -HUP "$UP"
check "SIGHUP reload applied again" eg_wait 60 applied 2
check "the CA file read again (logged)" test "$(reloads)" = 2
check "after the reload, the origin is not trusted again: 502 (no session resumed)" test "$(get 4)" = 502
eg_stop
eg_done
