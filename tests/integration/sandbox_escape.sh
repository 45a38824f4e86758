#!/usr/bin/env bash
# ctest: serial (loads the machine, or is timing-sensitive under load)
# Escape suite: the hostile fixture runs inside `custos sandbox exec` and tries every vector it
# knows; each must be BLOCKED, each that reaches seccomp must be audited by the supervisor
# (a violation event naming the syscall), and the resource bombs must show up as OOM/limit
# events. A host service on 127.0.0.1, a host process and a host secret file are the targets.
set -euo pipefail
: "${CUSTOS_BIN:?}" "${CUSTOS_FIXTURES:?}"
ESCAPE="$CUSTOS_FIXTURES/escape/escape"

if [ "$(id -u)" -ne 0 ]; then
	echo "SKIPPED: the privileged escape suite needs root (sandbox_unprivileged covers the rest)"
	exit 77
fi
if ! "$CUSTOS_BIN" sandbox exec -- /bin/true 2>/dev/null; then
	echo "SKIPPED: namespaces unavailable here: $("$CUSTOS_BIN" sandbox exec -- /bin/true 2>&1 | tail -1)"
	exit 77
fi

. "$(dirname "$0")/ports.bash"
T=$(mktemp -d /tmp/custos-escape.XXXXXX)
chmod 755 "$T" # as root the sandbox maps to nobody, which must reach the binds
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	port_release "$T"
	rm -rf "$T"
}
trap cleanup EXIT

# Host targets: a TCP service, a process, a secret file, a setuid-root copy of the fixture.
LISTEN_PID=
for _try in 1 2 3 4 5; do
	PORT=$(port_reserve "$T") # ports.bash: below the ephemeral range, reserved
	"$ESCAPE" --listen "$PORT" >"$T/listen.out" 2>&1 &
	LISTEN_PID=$!
	pids+=("$LISTEN_PID")
	for _ in $(seq 100); do
		grep -q listening "$T/listen.out" && break
		kill -0 "$LISTEN_PID" 2>/dev/null || break
		sleep 0.1
	done
	grep -q listening "$T/listen.out" && break
done
grep -q listening "$T/listen.out" || { echo "FAIL: host service did not start: $(cat "$T/listen.out")"; exit 1; }
echo "host-secret-$$" >"$T/secret"
chmod 600 "$T/secret"
cp "$ESCAPE" "$T/escape-suid"
chmod 4755 "$T/escape-suid"

export ASAN_OPTIONS=detect_leaks=0 # custos itself is leak-checked by the unit tests
cg_before=$(find /sys/fs/cgroup -maxdepth 4 -name "custos-default-*" 2>/dev/null | sort)
set +e
"$CUSTOS_BIN" sandbox exec --memory 128M --pids 64 --cpu 50 --nofile 256 \
	--ro-bind "$ESCAPE:/opt/escape" --ro-bind "$T/escape-suid:/opt/escape-suid" \
	--events "$T/events.json" -- \
	/opt/escape --host-port "$PORT" --host-pid "$LISTEN_PID" --host-file "$T/secret" \
	--setuid /opt/escape-suid --argv-marker "custos-argv-$$" >"$T/out.json" 2>"$T/err.txt"
rc=$?
set -e
fail=0
vectors=$(jq -r 'select(.vector) | .vector' "$T/out.json" | wc -l)
echo "vectors tried: $vectors"
if [ "$vectors" -lt 30 ]; then
	echo "FAIL: only $vectors vectors ran (need >= 30)"; fail=1
fi
if jq -e -s '[.[] | select(.vector and .result != "BLOCKED")] | length > 0' "$T/out.json" >/dev/null; then
	echo "FAIL: escaped:"; jq -c 'select(.vector and .result != "BLOCKED")' "$T/out.json"; fail=1
fi
if jq -e -s '[.[] | select(.control and .ok != true)] | length > 0' "$T/out.json" >/dev/null; then
	echo "FAIL: a control check failed (the fixture is broken):"
	jq -c 'select(.control)' "$T/out.json"; fail=1
fi
jq -e -s 'any(.[]; .summary and .escaped == 0)' "$T/out.json" >/dev/null || { echo "FAIL: no clean summary"; fail=1; }
[ "$rc" -eq 0 ] || { echo "FAIL: fixture exit status $rc (want 0: exit status passes through)"; fail=1; }

# Audited: every vector that reached seccomp has a violation event with its syscall name.
for sc in $(jq -r 'select(.vector and .audit != null) | .audit' "$T/out.json" | sort -u); do
	if ! jq -e -s --arg s "$sc" 'any(.[]; .event == "violation" and .syscall == $s)' \
		"$T/events.json" >/dev/null; then
		echo "FAIL: no violation event for $sc"; fail=1
	fi
done
n_audited=$(jq -r 'select(.vector and .audit != null) | .vector' "$T/out.json" | wc -l)
echo "vectors audited by name: $n_audited"
# Every event carries the profile hash; resource bombs were seen by the supervisor.
jq -e -s 'all(.[]; (.profile_sha256 | test("^[0-9a-f]{64}$")))' "$T/events.json" >/dev/null ||
	{ echo "FAIL: an event lacks the profile hash"; fail=1; }
for want in '.event=="oom"' '.event=="limit" and .limit=="pids"' \
	'.event=="limit" and .limit=="cpu"' '.event=="start"' '.event=="exit" and .exit_code==0'; do
	jq -e -s "any(.[]; $want)" "$T/events.json" >/dev/null || { echo "FAIL: no event: $want"; fail=1; }
done
# The host is untouched.
kill -0 "$LISTEN_PID" || { echo "FAIL: host process was killed"; fail=1; }
grep -q "host-secret-$$" "$T/secret" || { echo "FAIL: host secret changed"; fail=1; }
# No cgroup left behind by our run (others may run custos on this machine meanwhile: only
# new directories whose custos process has exited count).
left=""
for d in $(comm -13 <(echo "$cg_before") <(find /sys/fs/cgroup -maxdepth 4 -name "custos-default-*" 2>/dev/null | sort)); do
	owner=$(basename "$d" | awk -F- '{print $(NF-1)}')
	kill -0 "$owner" 2>/dev/null || left="$left $d"
done
[ -z "$left" ] || { echo "FAIL: cgroups left behind:$left"; fail=1; }
if [ "$fail" -ne 0 ]; then
	echo "--- fixture output"; cat "$T/out.json"; echo "--- stderr"; tail -20 "$T/err.txt"
	exit 1
fi
echo "PASS: $vectors vectors blocked, $n_audited audited by syscall name"
