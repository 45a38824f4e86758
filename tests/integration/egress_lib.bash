# Shared preamble of the egress integration tests (sourced, not a test: CTest collects *.sh).
#   . "$CUSTOS_SRC/tests/integration/egress_lib.bash"; eg_init NAME TOOL...
# sets BIN and SRC, skips (exit 77) when a TOOL is missing, makes the work directory $W (removed
# at exit unless EGRESS_KEEP is set), stops every pid in PIDS at exit, and defines ok, bad,
# check (counting failures in FAILS), port (a free loopback TCP port), the waits below
# (eg_wait, eg_listening, eg_port_file, eg_up), eg_upstream_pki, eg_record_source,
# eg_source_yaml, eg_policy_data, for the tests with sandboxed models eg_sandbox_init,
# eg_data_sources, eg_model_yaml, eg_sandbox_conf, eg_hr_pub_policy, eg_sandbox_up, eg_chat and
# eg_reload, and for those with one plain model eg_m1_conf (with EG_TIMEOUTS), eg_m1_policy,
# eg_start, eg_events, eg_event_now, eg_event, eg_count, eg_at_least, eg_stop and eg_done.
eg_init() {
	local name=$1 t
	shift
	BIN=${CUSTOS_BIN:?}
	SRC=${CUSTOS_SRC:?}
	for t in "$@"; do
		command -v "$t" >/dev/null || { echo "SKIPPED: $t not installed"; exit 77; }
	done
	W=$(mktemp -d "/tmp/custos-$name-XXXXXX")
	PIDS=()
	FAILS=0
	[ -n "${EGRESS_KEEP:-}" ] || trap eg_cleanup EXIT
}
eg_cleanup() {
	local rc=$? p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
	# The trail of a test that passed against docs/AUDIT.md section 2.3 (audit_schema.py, as in
	# proxy_lib.bash's cleanup).
	if [ "$rc" -eq 0 ] && [ -d "$W/audit" ] && command -v python3 >/dev/null &&
		! python3 "$SRC/tests/integration/audit_schema.py" "$SRC/docs/AUDIT.md" trail --strict "$W/audit"; then
		echo "FAIL - the audit trail does not match docs/AUDIT.md section 2.3 (above)"
		rc=1
	fi
	port_release "$W"
	rm -rf "$W"
	[ "$rc" -eq 0 ] || exit "$rc"
}
ok() { echo "ok   - $*"; }
bad() { echo "FAIL - $*"; FAILS=$((FAILS + 1)); }
check() { # check DESC COND...
	local d=$1
	shift
	if "$@"; then ok "$d"; else bad "$d"; fi
}
# A free port, never one this test was given before (ports.bash: below the kernel's ephemeral
# range, reserved against the other tests running beside this one until its exit).
. "$(dirname "${BASH_SOURCE[0]}")/ports.bash"
port() { port_reserve "$W"; }
# eg_wait SECS CMD...: runs CMD until it succeeds (0) or SECS seconds pass (1). Waits are for
# real conditions, bounded generously: under ASan on a loaded two-core machine, starting custos
# up alone has taken 7 s.
eg_wait() {
	local end=$((SECONDS + $1))
	shift
	until "$@"; do
		[ "$SECONDS" -lt "$end" ] || return 1
		sleep 0.1
	done
}
# eg_listening PORT...: every PORT on 127.0.0.1 accepts a TCP connection now.
eg_listening() {
	local p
	for p in "$@"; do
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || return 1
	done
}
# eg_port_file FILE: waits for a peer to write the port it bound into FILE; prints it.
eg_port_file() {
	eg_wait 60 test -s "$1" || { echo "FAIL - no port in $1: the peer did not start" >&2; return 1; }
	cat "$1"
}
# eg_up PID LOG PORT...: waits until custos up (PID, its log in LOG) and every peer accept on
# their PORTs; ends the test (exit 1, with the log) when custos exits or 120 s pass first.
eg_up() {
	local pid=$1 log=$2
	shift 2
	local end=$((SECONDS + 120))
	until eg_listening "$@"; do
		if ! kill -0 "$pid" 2>/dev/null || [ "$SECONDS" -ge "$end" ]; then
			cat "$log"
			echo "FAIL - custos up (pid $pid) or a peer did not come up on ports $*"
			exit 1
		fi
		sleep 0.1
	done
}

# eg_upstream_pki: in $W, a data source's PKI (upca.key/upca.crt, a CA; srv.key/srv.crt for
# localhost and 127.0.0.1, signed by it) and custos' interception CA in $W/ca. Exits the test
# when custos cannot make its CA.
eg_upstream_pki() {
	(
		cd "$W" || exit 1
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
			-subj /CN=upstream-ca -keyout upca.key -out upca.crt \
			-addext basicConstraints=critical,CA:TRUE
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
			-keyout srv.key -out srv.csr
		printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >srv.ext
		openssl x509 -req -in srv.csr -CA upca.crt -CAkey upca.key -CAcreateserial -days 2 \
			-extfile srv.ext -out srv.crt
	) 2>/dev/null
	"$BIN" ca init "$W/ca" >/dev/null || { bad "custos ca init"; exit 1; }
}

# eg_record_source: starts the recording data source (egress_record_source.py: HTTP and HTTPS,
# with eg_upstream_pki's srv.crt; every target it receives appended to $W/targets.txt, and as
# its request line carried it to $W/lines.txt, and answered "target TARGET") and sets P_D and
# P_T, its HTTP and HTTPS ports, once it listens.
eg_record_source() {
	python3 "$SRC/tests/integration/egress_record_source.py" "$W" &
	PIDS+=($!)
	P_D=$(eg_port_file "$W/src.port") || exit 1
	P_T=$(eg_port_file "$W/tls.port") || exit 1
}

# eg_data_sources PORT NAME...: copies the egress_upstream.py fixture to $W/fx (readable by a
# sandbox's user: the tests' profile `fx` binds it at /opt/fx) and starts one data source per
# PORT NAME pair, each listening before this returns (60 s at most: under load python3's
# start-up can outlast custos', and a model's first read then got 502).
eg_data_sources() {
	local p end ports=()
	mkdir -p "$W/fx" && cp "$SRC/tests/integration/egress_upstream.py" "$W/fx/" &&
		chmod -R a+rX "$W/fx" || { bad "fixture not copied to $W/fx"; exit 1; }
	while [ $# -ge 2 ]; do
		python3 "$W/fx/egress_upstream.py" data "$1" "$2" &
		PIDS+=($!)
		ports+=("$1")
		shift 2
	done
	for p in "${ports[@]}"; do
		end=$((SECONDS + 60))
		until (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do
			[ "$SECONDS" -lt "$end" ] || { bad "data source on port $p not listening"; exit 1; }
			sleep 0.1
		done
	done
}

# eg_model_yaml ID URL: a models: entry (indented two spaces) for a sandboxed model server (the
# fixture in model mode, profile fx) that reads URL, or what its prompt names, through the
# egress listener on port $P_EG.
eg_model_yaml() {
	cat <<M
  - id: $1
    sandbox:
      type: process
      profile: fx
      command: [/usr/bin/python3, /opt/fx/egress_upstream.py, model, "8000", "http://127.0.0.1:$P_EG", "$2"]
      port: 8000
      health: { start_timeout: 20s }
M
}

# eg_sandbox_init: for the tests with a process-sandboxed model: skips (exit 77) without root,
# user and network namespaces or /usr/bin/python3 (what the sandboxed model runs), makes $W
# readable by the sandbox's user, and sets KEY (alice's API key) and KEYSHA (its SHA-256).
eg_sandbox_init() {
	[ "$(id -u)" -eq 0 ] || { echo "SKIPPED: needs root for the process sandbox"; exit 77; }
	unshare -Urn true 2>/dev/null || { echo "SKIPPED: user/network namespaces not available"; exit 77; }
	[ -x /usr/bin/python3 ] || { echo "SKIPPED: no /usr/bin/python3 for the sandboxed model"; exit 77; }
	chmod 755 "$W"
	KEY=test-key-alice
	KEYSHA=$(printf %s "$KEY" | sha256sum | cut -d' ' -f1)
}

# eg_source_yaml ID URL CLASS [MORE]: a data_sources: entry (indented two spaces) on a private
# (loopback) address; MORE: more keys, e.g. "intercept: true".
eg_source_yaml() {
	printf '  - { id: %s, url: "%s", classification: %s, allow_private_addresses: true%s }\n' \
		"$1" "$2" "$3" "${4:+, $4}"
}

# eg_policy_data ID URL CLASS: a data: entry of a policy (indented two spaces).
eg_policy_data() { printf '  %s: { url: "%s", classification: %s }\n' "$1" "$2" "$3"; }

# eg_sandbox_conf LOG MODELS SOURCES [TOP]: writes custos.yaml in the current directory (mode
# 0600, by a rename, so a reload never reads half a file) for the tests with sandboxed models:
# the log: line LOG (none when empty), the listener 127.0.0.1:$P_IN, alice's key $KEYSHA, the
# models MODELS (eg_model_yaml), the profile fx, the data sources SOURCES (eg_source_yaml), egress
# on port $P_EG, TOP (more top-level sections, e.g. limits:), the audit dir $W/audit, the admin
# socket $W/admin.sock and the policy $W/policy.yaml.
eg_sandbox_conf() {
	{
		echo "version: 1"
		[ -z "$1" ] || echo "$1"
		cat <<EOY
listeners:
  - { id: local, address: "127.0.0.1:$P_IN" }
auth:
  api_keys:
    - { id: alice, sha256: "$KEYSHA" }
models:
$2
sandbox_profiles:
  fx:
    binds:
      - { src: $W/fx, dst: /opt/fx }
    limits: { memory: 1GiB, pids: 64 }
data_sources:
$3
egress:
  port: $P_EG
EOY
		[ -z "${4-}" ] || echo "$4"
		cat <<EOY
audit: { dir: "$W/audit" }
admin: { socket: "$W/admin.sock" }
policy: { file: "$W/policy.yaml" }
EOY
	} >custos.yaml.new
	chmod 600 custos.yaml.new
	mv custos.yaml.new custos.yaml
}

# eg_hr_pub_policy [MODELS [RULES]]: writes policy.yaml (mode 0600) for the tests with the
# sandboxed models m1 and m2 and the sources hr (confidential, $P_HR) and pub (internal,
# $P_PUB): alice (key $KEYSHA) in group hr may chat; m1 may GET hr for group hr, m2 may GET
# pub, each only in a process sandbox (isolation at least process). MODELS: more models:
# entries, RULES: more rules (after those), each indented two spaces.
eg_hr_pub_policy() {
	{
		cat <<EOY
version: 1
mode: enforce
principals:
  alice: { match: { api_key_sha256: "$KEYSHA" }, groups: [hr] }
models:
  m1: { isolation: process }
  m2: { isolation: process }
EOY
		[ -z "${1-}" ] || echo "$1"
		cat <<EOY
data:
  hr: { url: "http://localhost:$P_HR/", classification: confidential }
  pub: { url: "http://localhost:$P_PUB/", classification: internal }
rules:
  - id: chat
    effect: allow
    when: { direction: ingress, principal: alice }
  - id: hr-for-m1
    effect: allow
    when: { direction: egress, data: hr, method: GET, model: m1, principal.groups: hr, model.isolation: { at_least: process } }
  - id: pub-for-m2
    effect: allow
    when: { direction: egress, data: pub, method: GET, model: m2, model.isolation: { at_least: process } }
EOY
		[ -z "${2-}" ] || echo "$2"
	} >policy.yaml
	chmod 600 policy.yaml
}

# eg_sandbox_up PATTERN: custos config check of custos.yaml (the test ends with its errors),
# then custos up (pid UP, its log up.log); waits, up to 120 s as eg_up (starting the sandboxes
# under ASan on a loaded two-core machine is slow), until up.log has a line matching PATTERN and
# the listener on $P_IN accepts. Ends the test (exit 1) when custos up exits first.
eg_sandbox_up() {
	"$BIN" config check custos.yaml >/dev/null 2>&1 || { "$BIN" config check custos.yaml; echo "FAIL - config"; exit 1; }
	"$BIN" up -c custos.yaml >up.log 2>&1 &
	UP=$!
	PIDS+=("$UP")
	local end=$((SECONDS + 120))
	while [ "$SECONDS" -lt "$end" ]; do
		grep -q "$1" up.log 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$P_IN") 2>/dev/null && break
		kill -0 "$UP" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$UP" 2>/dev/null || { tail -20 up.log; echo "FAIL - custos up did not start"; exit 1; }
}

# eg_chat MODEL PROMPT: alice's chat request to MODEL through the listener on $P_IN: the reply
# (for the fixture's model, what it read through egress) and " http=CODE".
eg_chat() {
	curl -s --max-time 30 -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
		-d '{"model":"'"$1"'","messages":[{"role":"user","content":"'"$2"'"}]}' \
		-w ' http=%{http_code}' "http://127.0.0.1:$P_IN/v1/chat/completions"
}
# eg_reload: a reload through the admin API on $W/admin.sock: its answer and " http=CODE".
eg_reload() { curl -s --max-time 90 --unix-socket "$W/admin.sock" -X POST -w ' http=%{http_code}' http://localhost/v1/policy; }

# EG_TIMEOUTS: the egress timeouts of most tests (a key of egress:, indented two spaces).
EG_TIMEOUTS='  timeouts: { connect: 2s, read: 10s, idle: 10s }'
# eg_m1_conf LEVEL SOURCES EGRESS [AUDIT]: writes custos.yaml in the current directory for the
# tests of the egress listener with one plain model (m1, upstream 127.0.0.1:$P_D, never called):
# the log level LEVEL (format json), the listener 127.0.0.1:$P_IN, the data sources SOURCES
# (eg_source_yaml), egress on port $P_EG with the keys EGRESS (indented two spaces), the audit
# dir $W/audit with the keys AUDIT and the policy $W/policy.yaml. The line numbers are fixed up
# to the egress keys (a test names one by its line:col).
eg_m1_conf() {
	{
		cat <<EOY
version: 1
log: { level: $1, format: json }
listeners:
  - id: local
    address: "127.0.0.1:$P_IN"
models:
  - id: m1
    upstream: { url: "http://127.0.0.1:$P_D" }
data_sources:
$2
egress:
  port: $P_EG
$3
audit:
  dir: "$W/audit"
EOY
		[ -z "${4-}" ] || echo "$4"
		cat <<EOY
policy:
  file: "$W/policy.yaml"
EOY
	} >custos.yaml
}

# eg_m1_policy: writes policy.yaml in the current directory for the tests with one plain model:
# version 1, mode enforce, the model m1 (isolation process) and "data:", then its standard input
# (the data: entries, "rules:" and the rules).
eg_m1_policy() {
	{
		printf '%s\n' 'version: 1' 'mode: enforce' 'models:' '  m1: { isolation: process }' 'data:'
		cat
	} >policy.yaml
}

# eg_start PORT...: custos up -c custos.yaml (pid UP, its log up.log), waited for as eg_up with
# the peers' PORTs; sets PX, the egress proxy's URL.
eg_start() {
	"$BIN" up -c custos.yaml >up.log 2>&1 &
	UP=$!
	PIDS+=("$UP")
	eg_up "$UP" up.log "$P_EG" "$@"
	PX="http://127.0.0.1:$P_EG"
}

# eg_events: the egress.request events so far, from the audit writer's files and, where the
# audit module logs them instead, from up.log; JSON's \" unescaped.
eg_events() { { cat "$W"/audit/* 2>/dev/null; grep -h '"egress.request' up.log | sed 's/.*audit: //'; } | grep 'egress.request' | sed 's/\\"/"/g'; }
# eg_event_now MARK: the last egress.request event whose path starts with MARK.
eg_event_now() { eg_events | grep -F "\"path\":\"$1" | tail -1 | grep .; }
# eg_event MARK: eg_event_now, waiting (30 s) for the audit writer's batch; fails without one.
eg_event() {
	eg_wait 30 eg_event_now "$1" >/dev/null || { echo "FAIL - no audit event for $1 within 30 s" >&2; return 1; }
	eg_event_now "$1"
}

# eg_count TEXT...: how many events (eg_events) hold every TEXT (fixed strings).
eg_count() {
	local ev t
	ev=$(eg_events)
	for t in "$@"; do ev=$(grep -F -- "$t" <<<"$ev"); done
	if [ -n "$ev" ]; then wc -l <<<"$ev"; else echo 0; fi
}
# eg_at_least N TEXT...: N or more events hold every TEXT (for eg_wait: the audit writer batches).
eg_at_least() { [ "$(eg_count "${@:2}")" -ge "$1" ]; }

# eg_stop [HOW]: stops custos up (SIGTERM) and checks that it exits 0 without a sanitizer
# report in up.log (no line naming a Sanitizer, no UBSan "runtime error") (the check says "stops cleanly HOW"); prints the report when there is one.
eg_stop() {
	local rc
	kill "$UP"
	wait "$UP"
	rc=$?
	PIDS=("${PIDS[@]/$UP}")
	check "custos up stops cleanly${1:+ $1} (exit $rc, no sanitizer report)" \
		bash -c "[ $rc = 0 ] && ! grep -q -e 'Sanitizer' -e 'runtime error' $W/up.log"
	grep -A12 -e 'Sanitizer' -e 'runtime error' up.log | head -40
}

# eg_done: ends a test: with failures (FAILS), the tail of up.log, "N failed" and exit 1; else
# "all passed".
eg_done() {
	if [ "$FAILS" -gt 0 ]; then
		echo "--- custos log (tail)"
		tail -n 30 up.log
		echo "$FAILS failed"
		exit 1
	fi
	echo "all passed"
}
