#!/usr/bin/env bash
# The sandbox as an unprivileged user (setpriv to nobody when run as root): user-namespace
# id mapping of the caller's own ids, the same isolation layers, exit status passthrough,
# sockets inside the netns through the userns-joining helper (via the escape fixture's
# loopback control) and the escape suite minus the resource bombs (without a delegated cgroup
# only rlimits apply: memory and CPU are not limited, as docs/SANDBOX.md says).
set -euo pipefail
: "${CUSTOS_BIN:?}" "${CUSTOS_FIXTURES:?}"
ESCAPE="$CUSTOS_FIXTURES/escape/escape"
if [ "$(id -u)" -eq 0 ]; then
	command -v setpriv >/dev/null || { echo "SKIPPED: setpriv missing"; exit 77; }
	AS=(setpriv --reuid=65534 --regid=65534 --clear-groups --)
else
	AS=()
fi
export ASAN_OPTIONS=detect_leaks=0
if ! out=$("${AS[@]}" "$CUSTOS_BIN" sandbox exec -- /bin/true 2>&1); then
	echo "SKIPPED: unprivileged user namespaces unavailable here: $out"
	exit 77
fi
T=$(mktemp -d /tmp/custos-unpriv.XXXXXX)
trap 'rm -rf "$T"' EXIT
chmod 777 "$T"
fail=0
check() {
	if [ "$2" != "$3" ]; then echo "FAIL: $1: want '$2', got '$3'"; fail=1; else echo "ok: $1"; fi
}
run() { "${AS[@]}" "$CUSTOS_BIN" sandbox exec "$@"; }
status() { set +e; run "$@" >/dev/null 2>&1; echo $?; set -e; }

check "caller is unprivileged" "65534" "$("${AS[@]}" id -u)"
check "uid inside" "1000" "$(run -- /usr/bin/id -u 2>/dev/null)"
check "uid_map" "1000 65534 1" "$(run -- /bin/sh -c 'cat /proc/self/uid_map' 2>/dev/null | tr -s ' ' | sed 's/^ //')"
check "CapEff" "0000000000000000" "$(run -- /bin/sh -c 'grep CapEff /proc/self/status | cut -f2' 2>/dev/null)"
check "Seccomp" "2" "$(run -- /bin/sh -c 'grep "^Seccomp:" /proc/self/status | cut -f2' 2>/dev/null)"
check "exit 7" 7 "$(status -- /bin/sh -c 'exit 7')"
check "signal" 137 "$(status -- /bin/sh -c 'kill -9 $$')"
check "no cgroup required" 1 "$(status --cgroup required -- /bin/true)"
check "pids fallback (RLIMIT_NPROC)" "256" "$(run -- /bin/sh -c "grep 'Max processes' /proc/self/limits | tr -s ' ' | cut -d' ' -f3" 2>/dev/null)"

set +e
run --events "$T/events.json" --ro-bind "$ESCAPE:/opt/escape" -- /opt/escape --skip-resources \
	--argv-marker "custos-argv-$$" \
	>"$T/out.json" 2>"$T/err.txt"
rc=$?
set -e
check "escape suite exit" 0 "$rc"
n=$(jq -r 'select(.vector) | .vector' "$T/out.json" | wc -l)
[ "$n" -ge 30 ] || { echo "FAIL: only $n vectors"; fail=1; }
if jq -e -s 'any(.[]; (.vector and .result != "BLOCKED") or (.control and .ok != true))' \
	"$T/out.json" >/dev/null; then
	echo "FAIL: escaped or broken:"; jq -c 'select((.vector and .result != "BLOCKED") or .control)' "$T/out.json"; fail=1
fi
for sc in $(jq -r 'select(.vector and .audit != null) | .audit' "$T/out.json" | sort -u); do
	jq -e -s --arg s "$sc" 'any(.[]; .event == "violation" and .syscall == $s)' "$T/events.json" >/dev/null ||
		{ echo "FAIL: no violation event for $sc"; fail=1; }
done
jq -e -s 'any(.[]; .event == "start" and (.detail | test("no writable cgroup")))' "$T/events.json" >/dev/null ||
	{ echo "FAIL: START does not say that limits fell back to rlimits"; fail=1; }
if [ "$fail" -ne 0 ]; then cat "$T/err.txt" | tail -5; exit 1; fi
echo "PASS: unprivileged, $n vectors blocked"
