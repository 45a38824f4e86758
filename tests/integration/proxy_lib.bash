# Shared helpers for the proxy integration tests (sourced, not a test itself: CTest runs *.sh).
# Makes a throwaway PKI, starts the model-server TEST FIXTURE and `custos up` on loopback, and
# stops everything it started by PID on exit.
set -u
bin=${CUSTOS_BIN:?CUSTOS_BIN not set}
src=${CUSTOS_SRC:?CUSTOS_SRC not set}
fixtures=${CUSTOS_FIXTURES:?CUSTOS_FIXTURES not set}
fixture="$fixtures/model-server/model-server"

skip() {
	echo "SKIPPED: $*"
	exit 77
}
for t in curl openssl perl; do
	command -v "$t" >/dev/null || skip "$t not installed"
done
[ -x "$fixture" ] || skip "model-server fixture not built ($fixture)"

work=$(mktemp -d /tmp/custos-proxy-test.XXXXXX)
chmod 700 "$work"
pids=()
fails=0
cleanup() {
	local rc=$? p
	for p in "${pids[@]}"; do
		kill -TERM "$p" 2>/dev/null
	done
	for p in "${pids[@]}"; do
		wait "$p" 2>/dev/null
	done
	# A test that passed holds its trail to docs/AUDIT.md section 2.3 (audit_schema.py): an
	# event type or member written but not documented there, a JSON type other than its row's
	# or an `always` member missing fails the test that wrote it, naming type and member.
	if [ "$rc" -eq 0 ] && [ -d "$work/audit" ] && command -v python3 >/dev/null &&
		! python3 "$src/tests/integration/audit_schema.py" "$src/docs/AUDIT.md" trail --strict "$work/audit"; then
		echo "FAIL the audit trail does not match docs/AUDIT.md section 2.3 (above)"
		rc=1
	fi
	if [ "$fails" -ne 0 ] && [ -f "$work/custos.log" ]; then
		echo "---- custos log (tail)"
		tail -40 "$work/custos.log"
	fi
	port_release "$work"
	[ -n "${KEEP_WORK:-}" ] || rm -rf "$work"
	[ "$rc" -eq 0 ] || exit "$rc"
}
trap cleanup EXIT

# wait_until SECS CMD...: runs CMD until it succeeds (0) or SECS seconds pass (1). For waiting on
# a real condition (a log line, an audit event, a file) with a bound that holds under ASan on a
# loaded two-core machine, where starting custos alone has taken 7 s.
wait_until() {
	local end=$((SECONDS + $1))
	shift
	until "$@"; do
		[ "$SECONDS" -lt "$end" ] || return 1
		sleep 0.05
	done
}

# log_lines_reach TEXT N: custos.log has at least N lines matching TEXT (grep).
log_lines_reach() { [ "$(grep -c -- "$1" "$work/custos.log")" -ge "$2" ]; }
# wait_log TEXT N: waits (60 s) until custos.log has N lines matching TEXT; a FAIL naming them
# when it does not.
wait_log() { wait_until 60 log_lines_reach "$1" "$2" || fail "custos.log: fewer than $2 line(s) '$1' after 60 s"; }

ok() { echo "ok   $*"; }
fail() {
	echo "FAIL $*"
	fails=$((fails + 1))
}
# check NAME GOT WANT
check() {
	if [ "$2" = "$3" ]; then ok "$1 ($2)"; else fail "$1: got '$2', want '$3'"; fi
}

# free_port: a loopback TCP port for a listener custos binds later, never one this test was
# given before (ports.bash: below the ephemeral range, reserved against the other tests).
. "$(dirname "${BASH_SOURCE[0]}")/ports.bash"
free_port() { port_reserve "$work"; }

sha256hex() { printf '%s' "$1" | openssl dgst -sha256 -r | cut -d' ' -f1; }
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

# PKI: CA, server certificate for localhost (ECDSA), a client certificate with a SPIFFE SAN.
make_pki() {
	local d="$work/tls"
	mkdir -p "$d"
	(
		cd "$d" || exit 1
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
			-subj "/CN=test CA" -keyout ca.key -out ca.crt
		printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >srv.ext
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
			-subj /CN=localhost -keyout srv.key -out srv.csr
		openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
			-extfile srv.ext -out srv.crt
		printf 'subjectAltName=URI:spiffe://test/team/analytics/job1\nextendedKeyUsage=clientAuth\n' >cli.ext
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
			-subj /CN=analytics-job -keyout cli.key -out cli.csr
		openssl x509 -req -in cli.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
			-extfile cli.ext -out cli.crt
		openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout srv-rsa.key \
			-out srv-rsa.csr
		openssl x509 -req -in srv-rsa.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
			-extfile srv.ext -out srv-rsa.crt
		# A client certificate from a CA custos does not trust.
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
			-subj "/CN=rogue" -keyout rogue.key -out rogue.crt
		chmod 600 ./*.key
	) >/dev/null 2>&1 || skip "openssl could not make test certificates"
}

# make_short_cert NAME CN EXTFILE SECONDS [START]: $work/tls/NAME.crt and NAME.key (ECDSA P-256)
# from the test CA (make_pki first), subject CN, the extensions in $work/tls/EXTFILE, valid from
# a minute ago until SECONDS from now, or with START (a date, as `date -d` reads it, e.g.
# "2020-01-01 UTC") from START until SECONDS after it (`openssl ca`: x509 -req cannot set the
# dates). Sets SHORT_CERT_END to its notAfter in seconds since the epoch (whole seconds, as the
# certificate says). SKIPs the test when openssl cannot make it.
make_short_cert() {
	local name=$1 cn=$2 ext=$3 secs=$4 start end from until
	if [ -n "${5:-}" ]; then
		start=$(date -u -d "$5" +%s) || skip "make_short_cert: '$5' is not a date"
		from=$(date -u -d "@$start" +%Y%m%d%H%M%SZ)
		until=$(date -u -d "@$((start + secs))" +%Y%m%d%H%M%SZ)
	else
		from=$(date -u -d '-1 min' +%y%m%d%H%M%SZ)
		until=$(date -u -d "+$secs sec" +%y%m%d%H%M%SZ)
	fi
	(
		cd "$work/tls" || exit 1
		if [ ! -d cadb ]; then
			mkdir cadb && : >cadb/index.txt && echo 01 >cadb/serial || exit 1
			# shellcheck disable=SC2016 # $dir is openssl's, not the shell's
			printf '[ca]\ndefault_ca=c\n[c]\ndir=./cadb\ndatabase=$dir/index.txt\nserial=$dir/serial\nnew_certs_dir=$dir\ndefault_md=sha256\nunique_subject=no\npolicy=p\n[p]\ncommonName=supplied\n' >ca.cnf || exit 1
		fi
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$cn" \
			-keyout "$name.key" -out "$name.csr" &&
			openssl ca -batch -config ca.cnf -cert ca.crt -keyfile ca.key -in "$name.csr" \
				-out "$name.crt" -notext -extfile "$ext" \
				-startdate "$from" -enddate "$until" &&
			chmod 600 "$name.key"
	) >/dev/null 2>&1 || skip "openssl ca could not make the short-lived certificate $name.crt"
	end=$(openssl x509 -noout -enddate -in "$work/tls/$name.crt" 2>/dev/null | cut -d= -f2)
	[ -n "$end" ] && SHORT_CERT_END=$(date -d "$end" +%s) ||
		skip "could not read the notAfter date of $name.crt"
}

# crl NAME [ARGS...]: $work/tls/NAME.pem, a CRL of the test CA listing what its cadb says is
# revoked (make_short_cert made the cadb; ARGS go to `openssl ca -gencrl`, e.g. -crldays 1).
crl() {
	local name=$1
	shift
	(cd "$work/tls" && openssl ca -config ca.cnf -cert ca.crt -keyfile ca.key -gencrl "$@" \
		-out "$name.pem") >/dev/null 2>&1 || skip "openssl ca could not make the CRL $name.pem"
}
# revoke NAME: records $work/tls/NAME.crt as revoked in the test CA's cadb (crl to publish it).
revoke() {
	(cd "$work/tls" && openssl ca -config ca.cnf -cert ca.crt -keyfile ca.key -revoke "$1.crt") \
		>/dev/null 2>&1 || skip "openssl ca could not revoke $1.crt"
}

# start_fixture NAME ARGS...: starts a model server; sets FX_PORT.
start_fixture() {
	local name=$1
	shift
	"$fixture" --listen 127.0.0.1:0 --port-file "$work/$name.port" --model-id test-model "$@" \
		>"$work/$name.log" 2>&1 &
	pids+=($!)
	wait_until 60 test -s "$work/$name.port"
	FX_PORT=$(cat "$work/$name.port" 2>/dev/null)
	[ -n "$FX_PORT" ] || { cat "$work/$name.log"; skip "model-server fixture did not start"; }
}

# start_raw_upstream: starts raw_upstream.py (a TEST FIXTURE answering what X-Raw picks), its
# requests in $work/raw.log; sets RAW_PORT. Skips the test when python3 is missing or it fails.
start_raw_upstream() {
	command -v python3 >/dev/null || skip "python3 not installed"
	python3 "$(dirname "${BASH_SOURCE[0]}")/raw_upstream.py" "$work/raw.port" "$work/raw.log" \
		2>"$work/raw.err" &
	pids+=($!)
	wait_until 60 test -s "$work/raw.port"
	[ -s "$work/raw.port" ] || skip "raw upstream did not start: $(cat "$work/raw.err")"
	RAW_PORT=$(cat "$work/raw.port")
}

# start_custos CONFIG: starts custos up (logs as LOG_FORMAT, default text, in $work/custos.log);
# sets CU_PID and PORT (listener 1), PORT2 (listener 2).
start_custos() {
	chmod 600 "$1"
	"$bin" --log-format "${LOG_FORMAT:-text}" --log-level debug up -c "$1" <"${CUSTOS_STDIN:-/dev/null}" 2>"$work/custos.log" &
	CU_PID=$!
	pids+=("$CU_PID")
	PORT="" PORT2=""
	local end=$((SECONDS + 120))
	while [ "$SECONDS" -lt "$end" ]; do
		PORT=$(sed -n 's/.*listener 1 on port \([0-9]*\).*/\1/p' "$work/custos.log" | head -1)
		PORT2=$(sed -n 's/.*listener 2 on port \([0-9]*\).*/\1/p' "$work/custos.log" | head -1)
		[ -n "$PORT" ] && grep -q 'worker(s) serving' "$work/custos.log" && return 0
		kill -0 "$CU_PID" 2>/dev/null || break
		sleep 0.05
	done
	cat "$work/custos.log"
	echo "FAIL custos did not start"
	exit 1
}

# raw_http PORT FILE: sends FILE's bytes on a plain connection, prints what comes back (until
# custos closes it; 30 s only bounds a hang, with room for a slow answer under ASan on a loaded
# two-core machine).
raw_http() {
	local port=$1 file=$2
	(
		exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
		cat "$file" >&3
		timeout 30 cat <&3
	) 2>/dev/null
}

# audit_grep PATTERN: lines of the audit trail (any file under $work/audit) matching PATTERN.
audit_grep() {
	cat "$work"/audit/*.jsonl 2>/dev/null | grep -E -- "$1"
}

ALICE=sk-test-alice
BOB=sk-test-bob

# write_policy FILE: alice (API key) may chat with test-model (64 KiB bodies, 100 tokens an
# hour); bob is known but has no rule; analytics (mTLS SPIFFE ID) and sso (JWT) may chat too.
write_policy() {
	cat >"$1" <<POL
version: 1
mode: ${POLICY_MODE:-enforce}
principals:
  alice: { match: { api_key_sha256: "$(sha256hex $ALICE)" }, groups: [test] }
  bob: { match: { api_key_sha256: "$(sha256hex $BOB)" }, groups: [test] }
  analytics: { match: { cert_san_uri: "spiffe://test/team/analytics/*" }, groups: [test] }
  sso: { match: { jwt_iss: "https://issuer.test" }, groups: [test] }
models:
  test-model: { isolation: none }
  down-model: { isolation: none }
  slow-model: { isolation: none }
rules:
  - id: chat
    effect: allow
    when:
      direction: ingress
      principal: [alice, analytics, sso]
      route: "POST /v1/chat/completions"
      model: [test-model, down-model, slow-model]
    limits: { requests_per_minute: 6000, tokens_per_hour: ${TOKENS_PER_HOUR:-100000}, max_body: 64KiB, max_tokens: 1000 }
  - id: list-models
    effect: allow
    when: { direction: ingress, route: "GET /v1/models", principal.groups: test }
POL
	chmod 644 "$1"
}

# write_config FILE MODEL_PORT [EXTRA_LISTENER_TLS_YAML]: a TLS listener (mTLS optional) and a
# plain loopback listener in front of one model server. AUDIT_YAML: more keys of audit: (indented
# two spaces), e.g. sinks.
write_config() {
	local file=$1 mport=$2
	cat >"$file" <<CFG
version: 1
workers: ${WORKERS:-2}
limits:
  body_max: 1MiB
${EXTRA_LIMITS:-}  timeouts:
    upstream_connect: 2s
    upstream_read: ${UPSTREAM_READ:-10s}
    client_header: ${HEADER_TIMEOUT:-10s}
    shutdown: ${SHUTDOWN:-5s}
listeners:
  - id: tls
    address: "127.0.0.1:$(free_port)"
    tls:
      cert: $work/tls/srv.crt
      key: $work/tls/srv.key
${EXTRA_CERTS:-}
      client_ca: $work/tls/ca.crt
      client_auth: ${CLIENT_AUTH:-optional}
      min_version: "${TLS_MIN:-1.2}"
  - id: plain
    address: "127.0.0.1:$(free_port)"
${AUTH_YAML:-}
models:
  - id: test-model
    upstream:
      url: "http://127.0.0.1:$mport/"
${EXTRA_MODELS:-}
audit:
  dir: $work/audit
${AUDIT_YAML:-}
$([ -n "${NO_DEFAULT_ADMIN:-}" ] || printf 'admin:\n  socket: %s/admin.sock\n' "$work")
policy:
  file: $work/policy.yaml
CFG
}

# sandbox_conf_template SHUTDOWN: $work/custos.yaml.tmpl for the tests that reload sandboxed
# models: write_config's file with the shutdown timeout SHUTDOWN and `__MODELS__` where its
# models go, the admin socket $work/admin.sock and the profile `fx` (the model-server fixture's
# directory bound at /opt/fx). conf_models TEXT then makes custos.yaml from it.
sandbox_conf_template() {
	SHUTDOWN=$1 NO_DEFAULT_ADMIN=1 write_config "$work/custos.yaml.tmpl" 1
	perl -0777 -i -pe 's/models:\n  - id: test-model\n    upstream:\n      url: "http:\/\/127.0.0.1:1\/"\n/models:\n__MODELS__\n/' "$work/custos.yaml.tmpl"
	cat >>"$work/custos.yaml.tmpl" <<CFG
admin:
  socket: $work/admin.sock
sandbox_profiles:
  fx:
    binds:
      - { src: $(dirname "$fixture"), dst: /opt/fx }
    limits: { memory: 1GiB, pids: 64 }
CFG
}

# conf_models TEXT: $work/custos.yaml from the template with TEXT as its models (mode 0600,
# replaced by a rename, so a reload never reads half a file).
conf_models() {
	M="$1" perl -0777 -pe 's/__MODELS__\n/$ENV{M}\n/' "$work/custos.yaml.tmpl" >"$work/custos.yaml.new"
	chmod 600 "$work/custos.yaml.new"
	mv "$work/custos.yaml.new" "$work/custos.yaml"
}

# admin_tcp_setup [LINE...]: the start of the tests of the admin API over TCP: the PKI, the
# model-server fixture (--tokens 4), $work/policy.yaml and $work/custos.yaml (write_config)
# with an admin: section of the Unix socket $work/admin.sock, each LINE (a key of admin:,
# indented two spaces) and a TCP listener on 127.0.0.1:$APORT whose token, $TOKEN, is in
# $work/token (mode 0600).
admin_tcp_setup() {
	make_pki
	start_fixture model --tokens 4
	write_policy "$work/policy.yaml"
	NO_DEFAULT_ADMIN=1 write_config "$work/custos.yaml" "$FX_PORT"
	TOKEN=admin-token-$RANDOM$RANDOM
	printf '%s\n' "$TOKEN" >"$work/token"
	chmod 600 "$work/token"
	APORT=$(free_port)
	{
		printf 'admin:\n  socket: %s/admin.sock\n' "$work"
		[ $# -eq 0 ] || printf '%s\n' "$@"
		cat <<CFG
  tcp:
    address: "127.0.0.1:$APORT"
    token_sha256: "$(sha256hex "$TOKEN")"
CFG
	} >>"$work/custos.yaml"
}

# start_admin_custos: start_custos of $work/custos.yaml, then waits (60 s) for the admin
# socket; ends the test (exit 1) without it.
start_admin_custos() {
	start_custos "$work/custos.yaml"
	wait_until 60 test -S "$work/admin.sock" || { fail "no admin socket after 60 s"; exit 1; }
}
