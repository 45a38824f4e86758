# Shared preamble of the egress integration tests (sourced, not a test: CTest collects *.sh).
#   . "$CUSTOS_SRC/tests/integration/egress_lib.bash"; eg_init NAME TOOL...
# sets BIN and SRC, skips (exit 77) when a TOOL is missing, makes the work directory $W (removed
# at exit unless EGRESS_KEEP is set), stops every pid in PIDS at exit, and defines ok, bad,
# check (counting failures in FAILS) and port (a free loopback TCP port).
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
	rm -rf "$W"
}
ok() { echo "ok   - $*"; }
bad() { echo "FAIL - $*"; FAILS=$((FAILS + 1)); }
check() { # check DESC COND...
	local d=$1
	shift
	if "$@"; then ok "$d"; else bad "$d"; fi
}
# A free port: ask the kernel, keep it (small race, acceptable on a test machine).
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
