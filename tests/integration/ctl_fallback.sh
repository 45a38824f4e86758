#!/usr/bin/env bash
# `custos ctl --url` with a name of two addresses tries them in the resolver's order and uses the
# first that accepts (cli/cmd_ctl.c, ctl_connect): custos-fallback.test resolves to ::1 first,
# where nothing listens on the port, then to 127.0.0.1, where `custos up`'s admin listener is;
# ctl gets its answer from there. Around it: a name with ::1 only is refused (so the first
# address really is a dead end), and with custos stopped the fallback name fails naming both
# addresses. ctl runs in a mount namespace of its own (unshare -m, as root) in which /etc/hosts
# is this test's file: a bind mount only that process sees; the system's file is not touched.
. "$(dirname "$0")/proxy_lib.bash"

for t in unshare getent python3; do
	command -v "$t" >/dev/null || skip "$t not installed"
done
[ "$(id -u)" = 0 ] || skip "not root: a private /etc/hosts needs a mount namespace (unshare -m)"
unshare -m true 2>/dev/null || skip "cannot create a mount namespace (unshare -m)"
python3 -c 'import socket; socket.socket(socket.AF_INET6).bind(("::1", 0))' 2>/dev/null ||
	skip "::1 is not available here (no IPv6 loopback): the name's first address needs it"

admin_tcp_setup
start_admin_custos

printf '::1 custos-fallback.test custos-v6only.test\n127.0.0.1 custos-fallback.test\n' >"$work/hosts"
# in_ns CMD...: CMD with this test's hosts file as /etc/hosts
in_ns() { unshare -m bash -c 'mount --bind "$1" /etc/hosts && shift && exec "$@"' _ "$work/hosts" "$@"; }
order=$(in_ns getent ahosts custos-fallback.test | awk '$2 == "STREAM" {print $1}' | tr '\n' ' ')
[ "$order" = "::1 127.0.0.1 " ] ||
	skip "the resolver orders custos-fallback.test as '$order' (gai.conf?), not ::1 then 127.0.0.1"
python3 - "$APORT" <<'PY' || fail "something listens on [::1]:$APORT: the first address is not a dead end"
import socket, sys
try:
    socket.create_connection(("::1", int(sys.argv[1])), timeout=30).close()
    sys.exit(1)
except ConnectionRefusedError:
    pass
PY

# ctln NAME: ctl health against http://NAME:APORT in the namespace; prints "rc|stdout|stderr".
ctln() {
	local out rc
	out=$(in_ns "$bin" ctl --url "http://$1:$APORT" --token-file "$work/token" health 2>"$work/ctl.err")
	rc=$?
	echo "$rc|$out|$(cat "$work/ctl.err")"
}
check "::1 only: refused, nothing listens there" "$(ctln custos-v6only.test)" \
	"1||custos ctl: connect custos-v6only.test:$APORT: Connection refused"
check "::1 then 127.0.0.1: ctl falls back to 127.0.0.1 and is answered" \
	"$(ctln custos-fallback.test)" '0|{"status":"ok"}|'

kill -TERM "$CU_PID"
wait "$CU_PID" 2>/dev/null
check "both addresses refuse: one failure naming both" "$(ctln custos-fallback.test)" \
	"1||custos ctl: connect custos-fallback.test:$APORT (each of its 2 addresses): Connection refused"
grep -E 'Sanitizer|runtime error' "$work/custos.log" && fail "sanitizer report in the log" || ok "no sanitizer report"
[ "$fails" -eq 0 ] || exit 1
echo "all ctl fallback checks passed"
