# Shared preamble of the egress integration tests (sourced, not a test: CTest collects *.sh).
#   . "$CUSTOS_SRC/tests/integration/egress_lib.bash"; eg_init NAME TOOL...
# sets BIN and SRC, skips (exit 77) when a TOOL is missing, makes the work directory $W (removed
# at exit unless EGRESS_KEEP is set), stops every pid in PIDS at exit, and defines ok, bad,
# check (counting failures in FAILS), port (a free loopback TCP port), the waits below
# (eg_wait, eg_listening, eg_port_file, eg_up), eg_upstream_pki, and for the tests with
# sandboxed models eg_data_sources and eg_model_yaml.
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
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
	port_release "$W"
	rm -rf "$W"
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
